/** The worker of test/unit/thread-client.test.ts: a small protocol over the real ThreadServer. */
import { threadId } from 'node:worker_threads';
import { ThreadServer } from '../../src/threads/server.js';

export type TestProtocol = {
  /** Answers with the request's value, how many requests came in its batch, and the thread's id. */
  echo: { request: { value: string }; reply: { value: string; batch: number; threadId: number } };
  fail: { request: { code: string }; reply: void };
  exit: { request: { code: number }; reply: void };
  /** Never answered. */
  hang: { request: Record<string, never>; reply: void };
  /** Sent with notify(): counted in the status. */
  count: { request: Record<string, never>; reply: void };
};

let counted = 0;
const server = new ThreadServer<TestProtocol, number>({
  receive(requests) {
    for (const req of requests) {
      switch (req.op) {
        case 'echo':
          server.reply(req, { value: req.body.value, batch: requests.length, threadId });
          break;
        case 'fail':
          server.fail(req, Object.assign({ message: `failed with ${req.body.code}` }, { code: req.body.code }));
          break;
        case 'exit':
          process.exit(req.body.code);
          break;
        case 'count':
          counted++;
          break;
        case 'hang':
          break;
      }
    }
  },
  status: () => counted,
});
