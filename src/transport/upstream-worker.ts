/**
 * The upstream side of small messages' delivery, in a worker thread (see upstream-thread.ts):
 * nodemailer pools keyed and fingerprinted by the main thread, messages handed over in memory or
 * read from the queue file, results sent back as plain data for the main thread to classify.
 */
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { ThreadServer } from '../threads/server.js';
import { createPool, retireAndWait, sendRaw } from '../mail/nodemailer-adapter.js';
import { PoolSet } from './pools.js';
import { plainUpstreamError, type MessageSource, type PlainUpstreamError, type UpstreamProtocol } from './upstream-protocol.js';

const pools = new PoolSet();
const OPTIONS_MISSING: PlainUpstreamError = { message: 'upstream worker: pool options missing', code: 'EPOOL' };

const server = new ThreadServer<UpstreamProtocol, number>({
  receive(requests) {
    for (const req of requests) {
      if (req.op === 'retain') {
        pools.retain((key) => req.body.wanted[key]);
        continue;
      }
      if (req.op === 'retire') {
        pools.retire(req.body.keys);
        continue;
      }
      if (req.op === 'close') {
        const closing = req.body.keys.map((key) => pools.take(key)).flatMap((pool) => (pool ? [retireAndWait(pool)] : []));
        Promise.all(closing).then(
          () => server.reply(req, undefined),
          (err: unknown) => server.fail(req, plainUpstreamError(err)),
        );
        continue;
      }
      const { key, fingerprint, options, envelope, message } = req.body;
      if (!options && !pools.has(key, fingerprint)) {
        // the main thread sends the options with the first message of a pool it has not seen: it believes this one exists
        server.fail(req, OPTIONS_MISSING);
        continue;
      }
      const pool = pools.get(key, fingerprint, () => createPool(options!));
      sendRaw(pool, envelope, readable(message)).then(
        (info) =>
          server.reply(req, {
            accepted: (info.accepted ?? []).map(String),
            rejectedErrors: ((info as { rejectedErrors?: unknown[] }).rejectedErrors ?? []).map(plainUpstreamError),
            response: info.response ?? '',
          }),
        (err: unknown) => server.fail(req, plainUpstreamError(err)),
      );
    }
  },
  // messages being sent finish first; their replies are lost and their waiters fail with ThreadExitedError
  close: () => pools.closeAll(),
  status: () => pools.openConnections(),
});

function readable(message: MessageSource): Readable {
  if ('bytes' in message) return Readable.from([Buffer.from(message.bytes.buffer, message.bytes.byteOffset, message.bytes.byteLength)], { objectMode: false });
  if (message.size === 0) return Readable.from([], { objectMode: false });
  return createReadStream(message.path, { start: 0, end: message.size - 1 });
}
