import { Worker } from 'node:worker_threads';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import type { Account } from '../config/account.js';
import { PostBatch } from '../threads/post-batch.js';
import { poolOptions, type TransportTuning } from './options.js';
import type { TransportPools } from './pools.js';
import type { PlainUpstreamError, UpstreamReply, UpstreamRequest } from './upstream-protocol.js';

/** What the upstream accepted, as deliverNow reads it from nodemailer. */
export interface SentInfo {
  readonly accepted: string[];
  readonly rejectedErrors: PlainUpstreamError[];
  readonly response: string;
}

/**
 * Upstream SMTP conversations of small messages in a worker thread. The relay's main thread runs
 * every client session; profiles of the benchmark (one connection per message) had it busy ~90%
 * of the time, a quarter of it in nodemailer and the upstream sockets. Here a message costs the
 * main thread a share of one postMessage each way (PostBatch).
 *
 * It carries messages held whole in memory — a queued message's first attempt (up to 64 KiB,
 * the usual case), a passthrough message of up to 64 KiB once the client has sent it all — for
 * accounts that sign in with a password or not at all. The rest — large messages (streamed, so
 * memory stays flat), retries read back from disk, XOAUTH2 accounts (their tokens are fetched and
 * cached on the main thread) and Graph — goes through the main thread's pools. Pool keys and
 * fingerprints are the main thread's (TransportPools.identify), so a reload retires the same
 * pools in both places. The thread costs about 28 MB of RSS (an isolate and nodemailer).
 */
export class UpstreamThread {
  private worker: Worker | undefined;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: (info: SentInfo) => void; reject: (err: Error) => void }>();
  /** Pool key → the fingerprint the worker has a pool for. */
  private readonly given = new Map<string, string>();
  private open = 0;
  private loaded: Promise<void> | undefined;
  private readonly outbox = new PostBatch<UpstreamRequest>((batch) => this.worker?.postMessage(batch));

  constructor(
    private readonly pools: TransportPools,
    private readonly tuning: TransportTuning,
  ) {}

  handles(account: Account): boolean {
    return account.server.type !== 'graph' && account.method !== 'xoauth2';
  }

  send(account: Account, route: { host: string; port: number } | undefined, envelope: UpstreamEnvelope, bytes: Buffer): Promise<SentInfo> {
    this.start();
    const [key, fingerprint] = this.pools.cachedIdentity(account, route);
    const options = this.given.get(key) === fingerprint ? undefined : poolOptions(account, this.tuning, route);
    this.given.set(key, fingerprint);
    const seq = ++this.seq;
    const request: UpstreamRequest = { op: 'send', seq, key, fingerprint, ...(options ? { options } : {}), envelope: { from: envelope.from, to: [...envelope.to], eightBit: envelope.eightBit }, message: { bytes } };
    return new Promise<SentInfo>((resolve, reject) => {
      this.waiting.set(seq, { resolve, reject });
      this.outbox.push(request);
    });
  }

  /**
   * Starts the thread and resolves once it has loaded (the relay's start waits for it, so the
   * first message does not pay for loading nodemailer in the thread).
   */
  ready(): Promise<void> {
    this.start();
    return this.loaded!;
  }

  /** After a reload: the worker closes the pools of accounts that changed or went away. */
  retain(wanted: ReadonlyMap<string, string>): void {
    for (const [key, fingerprint] of this.given) if (wanted.get(key) !== fingerprint) this.given.delete(key);
    if (this.worker) this.outbox.push({ op: 'retain', wanted: Object.fromEntries(wanted) });
  }

  /** Open upstream connections of the worker's pools, as of its last answer. */
  openConnections(): number {
    return this.worker ? this.open : 0;
  }

  /** Closes the pools (messages being sent finish first) and ends the thread. */
  async close(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    // what was asked before the close goes first
    this.outbox.push({ op: 'close' });
    this.outbox.flush();
    this.worker = undefined;
    const timer = setTimeout(() => void worker.terminate(), 5_000);
    await exited;
    clearTimeout(timer);
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    // compiled: the worker's .js beside this file; from the TypeScript sources (the tests): loaded through tsx's loader
    const worker = import.meta.url.endsWith('.ts')
      ? new Worker(`import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(new URL('./upstream-worker.ts', import.meta.url).href)}); })`, { eval: true, name: 'sendas upstream' })
      : new Worker(new URL('./upstream-worker.js', import.meta.url), { name: 'sendas upstream' });
    this.loaded = new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the upstream worker thread exited (code ${code}) while starting`)));
    });
    this.loaded.catch(() => undefined);
    worker.on('message', (replies: UpstreamReply[] | 'ready') => {
      if (replies === 'ready') return;
      for (const reply of replies) {
        this.open = reply.open;
        const waiter = this.waiting.get(reply.seq);
        if (!waiter) continue;
        this.waiting.delete(reply.seq);
        if (reply.info) waiter.resolve(reply.info);
        else waiter.reject(Object.assign(new Error(reply.error?.message ?? 'upstream worker failed'), reply.error));
      }
    });
    const fail = (err: Error) => {
      if (this.worker === worker) this.worker = undefined;
      this.given.clear();
      this.open = 0;
      this.outbox.clear();
      // what the worker was sending is unknown: each attempt fails as a network problem and is retried
      for (const [seq, waiter] of this.waiting) {
        this.waiting.delete(seq);
        waiter.reject(Object.assign(new Error(`the upstream worker thread stopped: ${err.message}`), { code: 'ECONNECTION' }));
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
    this.worker = worker;
    return worker;
  }
}
