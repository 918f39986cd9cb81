import type { Account } from '../config/account.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import { ThreadClient } from '../threads/client.js';
import { workerModule } from '../threads/module.js';
import { poolOptions, type TransportTuning } from './options.js';
import type { TransportPools } from './pools.js';
import type { SentInfo, UpstreamProtocol } from './upstream-protocol.js';

export type { SentInfo } from './upstream-protocol.js';

/**
 * Upstream SMTP conversations of small messages in a worker thread (upstream-worker.ts). The
 * relay's main thread runs every client session; profiles of the benchmark (one connection per
 * message) had it busy ~90% of the time, a quarter of it in nodemailer and the upstream sockets.
 * Here a message costs the main thread a share of one postMessage each way (ThreadClient).
 *
 * It carries messages held whole in memory — a queued message's first attempt (up to 64 KiB,
 * the usual case), a passthrough message of up to 64 KiB once the client has sent it all — for
 * accounts that sign in with a password or not at all. The rest — large messages (streamed, so
 * memory stays flat), retries read back from disk, XOAUTH2 accounts (their tokens are fetched and
 * cached on the main thread) and Graph — goes through the main thread's pools. Pool keys and
 * fingerprints are the main thread's (TransportPools.identify), so a reload retires the same
 * pools in both places. The thread costs about 28 MB of RSS (an isolate and nodemailer). A thread
 * that stops fails its sends with ThreadExitedError (errors/ classifies it); the next starts another.
 */
export class UpstreamThread {
  /** Pool key → the fingerprint the worker has a pool for. */
  private readonly given = new Map<string, string>();
  private readonly thread = new ThreadClient<UpstreamProtocol, number>({
    name: 'sendas upstream',
    module: workerModule(import.meta.url, 'upstream-worker'),
    // a new thread has no pools: the options go again with each pool's first message
    onExit: () => this.given.clear(),
  });

  constructor(
    private readonly pools: TransportPools,
    private readonly tuning: TransportTuning,
  ) {}

  handles(account: Account): boolean {
    return account.server.type !== 'graph' && account.method !== 'xoauth2';
  }

  send(account: Account, route: { host: string; port: number } | undefined, envelope: UpstreamEnvelope, bytes: Buffer): Promise<SentInfo> {
    // a thread being closed may still be exiting: the one this starts has no pools yet
    if (!this.thread.running) this.given.clear();
    const [key, fingerprint] = this.pools.cachedIdentity(account, route);
    const options = this.given.get(key) === fingerprint ? undefined : poolOptions(account, this.tuning, route);
    this.given.set(key, fingerprint);
    return this.thread.request('send', { key, fingerprint, ...(options ? { options } : {}), envelope: { from: envelope.from, to: [...envelope.to], eightBit: envelope.eightBit }, message: { bytes } });
  }

  /**
   * Starts the thread and resolves once it has loaded (the relay's start waits for it, so the
   * first message does not pay for loading nodemailer in the thread).
   */
  ready(): Promise<void> {
    return this.thread.ready();
  }

  /** After a reload: the worker closes the pools of accounts that changed or went away. */
  retain(wanted: ReadonlyMap<string, string>): void {
    for (const [key, fingerprint] of this.given) if (wanted.get(key) !== fingerprint) this.given.delete(key);
    this.thread.notify('retain', { wanted: Object.fromEntries(wanted) });
  }

  /** After a failover: the worker's pools of these keys take no more messages and close once idle. */
  retire(keys: readonly string[]): void {
    if (keys.length === 0) return;
    for (const key of keys) this.given.delete(key);
    this.thread.notify('retire', { keys });
  }

  /** `cluster:`: closes these pools now; resolves once their connections are closed (the upstream saw the sessions end). */
  async closePools(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    for (const key of keys) this.given.delete(key);
    if (!this.thread.running) return; // an exited thread's connections went with it
    await this.thread.request('close', { keys });
  }

  /** Open upstream connections of the worker's pools, as of its last answer. */
  openConnections(): number {
    return this.thread.status ?? 0;
  }

  /**
   * Closes the pools and ends the thread, ended by force after `timeoutMs`: by then the relay's
   * stop has given running deliveries their grace period, and a connection still hanging (an
   * upstream that never greets) must not hold the stop up any longer; its message stays queued.
   */
  close(timeoutMs: number): Promise<void> {
    return this.thread.close(timeoutMs);
  }
}
