import { parentPort } from 'node:worker_threads';
import { PostBatch } from './post-batch.js';
import type { ErrorData, FromWorker, Protocol, Reply, ReplyOf, Request, ToWorker } from './protocol.js';

export interface ThreadServerHandlers<P, S> {
  /** Each batch of requests as it arrives (requests made in one turn of the main thread's loop). */
  readonly receive: (requests: Request<P>[]) => void;
  /** The client asked the thread to finish: let go of what keeps it alive (replies sent after this are lost). */
  readonly close?: () => void;
  /** Sent with every batch of replies (the client's `status`). */
  readonly status?: () => S;
}

/**
 * The worker's half of a thread (the main thread's is client.ts): requests arrive in batches,
 * replies go back batched, one postMessage per turn of the worker's loop, or at once with flush()
 * (a worker that answers a whole batch at the end of its work). Call once, at the end of the
 * worker module: it tells the client the module has loaded.
 */
export class ThreadServer<P extends Protocol<P>, S = undefined> {
  private readonly port = parentPort!;
  private readonly replies: PostBatch<Reply>;

  constructor(private readonly handlers: ThreadServerHandlers<P, S>) {
    this.replies = new PostBatch<Reply>((replies) => this.port.postMessage({ replies, status: this.handlers.status?.() as S } satisfies FromWorker<S>));
    this.port.on('message', (batch: ToWorker<P>[]) => {
      const requests: Request<P>[] = [];
      for (const message of batch) {
        if ('close' in message) {
          this.handlers.receive(requests.splice(0));
          this.close();
          return;
        }
        requests.push(message);
      }
      this.handlers.receive(requests);
    });
    this.port.postMessage('ready' satisfies FromWorker<S>);
  }

  reply<R extends Request<P>>(request: R, value: ReplyOf<P, R['op']>): void {
    if (request.id !== 0) this.replies.push({ id: request.id, value });
  }

  fail(request: Request<P>, error: ErrorData): void {
    if (request.id !== 0) this.replies.push({ id: request.id, error });
  }

  /** Posts the replies gathered so far now. */
  flush(): void {
    this.replies.flush();
  }

  private close(): void {
    this.handlers.close?.();
    this.flush();
    this.port.close();
  }
}

/** A system error as plain data: what the main thread's callers read (code, syscall) kept. */
export function systemError(err: unknown): ErrorData & { readonly code?: string; readonly syscall?: string } {
  const e = err as NodeJS.ErrnoException;
  return { message: e?.message ?? String(err), ...(e?.code ? { code: e.code } : {}), ...(e?.syscall ? { syscall: e.syscall } : {}) };
}
