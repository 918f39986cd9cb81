import { Worker } from 'node:worker_threads';
import { PostBatch } from './post-batch.js';
import type { FromWorker, Op, Protocol, Reply, ReplyOf, Request, RequestOf, ToWorker } from './protocol.js';
import { ThreadExitedError } from './thread-exited.js';
import type { WorkerModule } from './module.js';

export interface ThreadClientOptions {
  /** The thread's name, in ThreadExitedError and in the process's thread list. */
  readonly name: string;
  /** Where the worker's module is (workerModule()). */
  readonly module: WorkerModule;
  /** After the thread stopped (crashed, closed, terminated) and its waiters were failed. */
  readonly onExit?: () => void;
}

/** One running thread: its waiters belong to it, so a thread that exits late fails only its own. */
interface Running<P, S> {
  readonly worker: Worker;
  readonly waiting: Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>;
  readonly outbox: PostBatch<ToWorker<P>>;
  readonly loaded: Promise<void>;
  status: S | undefined;
  /** Requests outstanding, the start-up included: the thread keeps the process alive only while > 0. */
  holds: number;
  exited: boolean;
}

/**
 * The main thread's half of a worker thread (the worker's is server.ts), generic over its
 * protocol: request ids, requests and replies batched (one postMessage per event-loop turn each
 * way, PostBatch), the worker kept referenced only while something is asked (a CLI exits when
 * done), every waiter failed with ThreadExitedError when the thread stops, a new thread started
 * by the next request.
 */
export class ThreadClient<P extends Protocol<P>, S = undefined> {
  private thread: Running<P, S> | undefined;
  private nextId = 0;

  constructor(private readonly options: ThreadClientOptions) {}

  /** Whether a thread is running (requests made now go to it, not to a new one). */
  get running(): boolean {
    return this.thread !== undefined;
  }

  /** What the worker reported with its last batch of replies; undefined while no thread runs. */
  get status(): S | undefined {
    return this.thread?.status;
  }

  request<K extends Op<P>>(op: K, body: RequestOf<P, K>): Promise<ReplyOf<P, K>> {
    const thread = this.start();
    const id = ++this.nextId;
    return new Promise<ReplyOf<P, K>>((resolve, reject) => {
      thread.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
      hold(thread, 1);
      thread.outbox.push({ id, op, body } as Request<P>);
    });
  }

  /** A request nobody waits for, to a running thread only (nothing to tell a thread that is not there). */
  notify<K extends Op<P>>(op: K, body: RequestOf<P, K>): void {
    this.thread?.outbox.push({ id: 0, op, body } as Request<P>);
  }

  /** Starts the thread and resolves once its module has loaded (a start-up that must not pay for it later). */
  ready(): Promise<void> {
    return this.start().loaded;
  }

  /**
   * Asks the thread to finish and exit, after what was asked before; terminates it if it has not
   * exited within `timeoutMs`. A request made meanwhile starts a new thread.
   */
  async close(timeoutMs = 5_000): Promise<void> {
    const thread = this.thread;
    if (!thread) return;
    this.thread = undefined;
    // the caller waits for the exit (a relay stopping): the thread keeps the process alive until then
    thread.worker.ref();
    const exited = new Promise((resolve) => thread.worker.once('exit', resolve));
    thread.outbox.push({ close: true });
    thread.outbox.flush();
    const timer = setTimeout(() => void thread.worker.terminate(), timeoutMs);
    await exited;
    clearTimeout(timer);
  }

  /** Stops the thread at once (tests: a thread that dies). */
  async terminate(): Promise<void> {
    await this.thread?.worker.terminate();
  }

  private start(): Running<P, S> {
    if (this.thread) return this.thread;
    const { name, module } = this.options;
    const worker = new Worker(module.url, { name, ...(module.execArgv ? { execArgv: module.execArgv } : {}) });
    worker.unref();
    let started!: { resolve: () => void; reject: (err: Error) => void };
    const thread: Running<P, S> = {
      worker,
      waiting: new Map(),
      outbox: new PostBatch<ToWorker<P>>((batch) => worker.postMessage(batch)),
      loaded: new Promise<void>((resolve, reject) => (started = { resolve, reject })),
      status: undefined,
      holds: 0,
      exited: false,
    };
    // a failed start-up is ready()'s caller's to hear about, if there is one
    thread.loaded.catch(() => undefined);
    // loading counts as a request: a process waiting only for ready() must not exit meanwhile
    hold(thread, 1);
    worker.on('message', (message: FromWorker<S>) => {
      if (message === 'ready') {
        started.resolve();
        hold(thread, -1);
        return;
      }
      thread.status = message.status;
      for (const reply of message.replies) this.settle(thread, reply);
    });
    const stop = (why: string) => {
      if (thread.exited) return;
      thread.exited = true;
      if (this.thread === thread) this.thread = undefined;
      thread.outbox.clear();
      // what the thread was doing is unknown: each waiter fails, and errors/ says what that means for it
      const error = new ThreadExitedError(name, why);
      started.reject(error);
      for (const waiter of thread.waiting.values()) waiter.reject(error);
      thread.waiting.clear();
      this.options.onExit?.();
    };
    worker.on('error', (err) => stop(err.message));
    worker.on('exit', (code) => stop(`exit code ${code}`));
    this.thread = thread;
    return thread;
  }

  private settle(thread: Running<P, S>, reply: Reply): void {
    const waiter = thread.waiting.get(reply.id);
    if (!waiter) return;
    thread.waiting.delete(reply.id);
    hold(thread, -1);
    if ('error' in reply) waiter.reject(Object.assign(new Error(reply.error.message), reply.error));
    else waiter.resolve(reply.value);
  }
}

function hold(thread: { holds: number; readonly worker: Worker }, change: 1 | -1): void {
  thread.holds += change;
  if (thread.holds === 1 && change === 1) thread.worker.ref();
  else if (thread.holds === 0) thread.worker.unref();
}
