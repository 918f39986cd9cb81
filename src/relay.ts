import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import type { ConfigSnapshot } from './config/types.js';
import { QueueRunner } from './delivery/queue-runner.js';
import { createNoticeWriter } from './notify/notice-writer.js';
import { QueueStore } from './queue/store.js';
import { QueueControl } from './queue/control.js';
import type { Logger } from './log.js';
import { Listener } from './listener/server.js';
import { Reception } from './reception/reception.js';
import { isRelayError } from './errors/relay-error.js';
import { TransportPools } from './transport/pools.js';
import { UpstreamThread } from './transport/upstream-thread.js';
import { DEFAULT_TUNING } from './transport/options.js';
import { ConfigHolder, type ConfigChange, type ConfigEvent } from './config/holder.js';
import { logConfigEvent } from './config/reload-log.js';
import { accountFor } from './config/account.js';
import { RelayMetrics } from './ops/metrics.js';
import { TokenProvider } from './oauth/tokens.js';
import { relayStatus, type RelayStatus } from './ops/status.js';
import { access, constants } from 'node:fs/promises';

export interface RelayOptions {
  readonly snapshot: ConfigSnapshot;
  readonly logger: Logger;
  /** Name used in the greeting, EHLO upstream and Received headers; defaults to the host name. */
  readonly hostname?: string;
  /** On stop, how long running deliveries may take before the rest is left queued. */
  readonly shutdownGraceMs?: number;
}

/**
 * The relay: listener → identity resolution → header policy → delivery → upstream transport,
 * wired together. It holds the current config snapshot; everything downstream reads the
 * snapshot a message was accepted under.
 */
export class Relay {
  /** The current snapshot, reload, last reload error (config/holder.ts). */
  private readonly config: ConfigHolder;
  private readonly logger: Logger;
  private readonly listener: Listener;
  private readonly pools: TransportPools;
  private readonly hostname: string;
  private readonly queue: { store: QueueStore; runner: QueueRunner; control: QueueControl } | undefined;
  /** Upstream SMTP for small messages of password and no-auth accounts, off the main thread (upstream-thread.ts). */
  private readonly upstreamThread: UpstreamThread;
  private readonly graceMs: number;
  readonly metrics: RelayMetrics;
  private readonly tokens: TokenProvider;

  constructor(opts: RelayOptions) {
    this.config = new ConfigHolder(opts.snapshot);
    this.logger = opts.logger;
    this.hostname = opts.hostname ?? hostname();
    this.graceMs = opts.shutdownGraceMs ?? 5_000;
    this.tokens = new TokenProvider({ stateDir: () => this.snapshot.stateDir, logger: this.logger, loginHint: `sendas oauth login --config ${this.snapshot.file}` });
    this.pools = new TransportPools({ ...DEFAULT_TUNING, helo: this.hostname }, this.tokens);
    this.metrics = new RelayMetrics({
      queueStats: () => this.queue?.runner.stats() ?? { depth: 0, oldestAgeSeconds: 0 },
      upstreamConnections: () => this.pools.openConnections() + this.upstreamThread.openConnections(),
    });
    this.metrics.setConfigVersion(this.snapshot.version);
    const upstreamThread = (this.upstreamThread = new UpstreamThread(this.pools, { ...DEFAULT_TUNING, helo: this.hostname }));
    if (this.snapshot.delivery === 'queue') {
      const store = new QueueStore(this.snapshot.queue.dir);
      const getSnapshot = () => this.snapshot;
      let runner: QueueRunner | undefined;
      const writeNotice = createNoticeWriter({ store, getSnapshot, enqueue: (m) => runner?.enqueue(m), logger: this.logger, hostname: this.hostname });
      runner = new QueueRunner({ store, getSnapshot, pools: this.pools, logger: this.logger, maxPerAccount: DEFAULT_TUNING.maxConnections, writeNotice, metrics: this.metrics, upstreamThread });
      this.queue = { store, runner, control: new QueueControl(store, runner, this.logger) };
    }
    const reception = new Reception({
      hostname: this.hostname,
      logger: this.logger,
      metrics: this.metrics,
      queue: this.queue && { store: this.queue.store, enqueue: (meta) => this.queue!.runner.enqueue(meta) },
      transport: { pools: this.pools, upstreamThread },
    });
    this.listener = new Listener({
      getSnapshot: () => this.snapshot,
      handleMessage: (m) => reception.handle(m),
      logger: this.logger,
      hostname: this.hostname,
    });
    this.config.subscribe((event) => this.configChanged(event));
  }

  /** Binds the configured address (or the given override, e.g. port 0 in tests). */
  async start(bind?: { host?: string; port?: number }): Promise<AddressInfo> {
    if (this.queue) {
      // claim the queue directory first: two relays on one queue would deliver messages twice
      await this.queue.store.init();
      await this.queue.control.start();
      const pending = await this.queue.runner.start();
      this.logger.info({ dir: this.queue.store.dir, pending }, pending ? `picked up ${pending} queued message${pending === 1 ? '' : 's'}` : 'queue is empty');
    }
    // the first message must not pay for loading nodemailer in the thread
    await this.upstreamThread.ready();
    const host = bind?.host ?? this.snapshot.listen.host;
    const port = bind?.port ?? this.snapshot.listen.port;
    const address = await this.listener.listen(host, port);
    this.logger.info({ host: address.address, port: address.port, config: this.snapshot.file, version: this.snapshot.version }, 'sendas listening');
    for (const w of this.snapshot.warnings) this.logger.warn({ path: w.path }, w.message);
    return address;
  }

  get currentSnapshot(): ConfigSnapshot {
    return this.config.current;
  }

  private get snapshot(): ConfigSnapshot {
    return this.config.current;
  }

  /** The config file and the secret files it references: what the watcher watches. */
  get configFiles(): readonly string[] {
    return this.config.files;
  }

  /**
   * Re-reads the config file. Valid: the new snapshot replaces the old one at once (sessions in
   * progress keep theirs; queued messages use it at their next attempt) and pools of accounts
   * that changed or disappeared are closed. Invalid: the relay keeps serving with the last good
   * config, and the errors are logged and shown in /status until a valid file arrives.
   */
  reloadFromFile(reason: string): ConfigChange | undefined {
    return this.config.reload(reason);
  }

  /** Swaps in a validated snapshot. */
  apply(next: ConfigSnapshot, reason = 'api'): ConfigChange {
    return this.config.apply(next, reason);
  }

  /** What a new snapshot changes in the running stages; every reload's one log line and its metrics. */
  private configChanged(event: ConfigEvent): void {
    let closedPools: readonly string[] | undefined;
    if (event.type === 'applied') {
      const next = event.snapshot;
      this.logger.level = next.log.level;
      this.listener.applyLimits(next);
      const wanted = this.wantedPools(next);
      closedPools = this.pools.retain(wanted);
      this.upstreamThread.retain(wanted);
    }
    this.metrics.reloads.inc({ result: event.type === 'failed' ? 'failed' : 'ok' });
    if (event.type === 'applied') this.metrics.setConfigVersion(event.snapshot.version);
    logConfigEvent(this.logger, event, closedPools);
  }

  /** Every pool the new config can use, with its settings fingerprint: the rest are closed. */
  private wantedPools(snapshot: ConfigSnapshot): Map<string, string> {
    const wanted = new Map<string, string>();
    const add = (identity: Parameters<typeof accountFor>[1]) => {
      const account = accountFor(snapshot, identity);
      if (isRelayError(account)) return;
      const [key, fingerprint] = this.pools.identify(account);
      wanted.set(key, fingerprint);
      const alt = account.server.alternate;
      if (alt) {
        const [altKey, altFingerprint] = this.pools.identify(account, { host: alt.host, port: alt.port });
        wanted.set(altKey, altFingerprint);
      }
    };
    add(undefined);
    for (const identity of snapshot.identities) add(identity);
    return wanted;
  }

  /** /readyz: listener bound, config loaded, queue writable. */
  async ready(): Promise<{ ready: boolean; problems: string[] }> {
    const problems: string[] = [];
    if (!this.listener.listening) problems.push('the SMTP listener is not bound');
    if (this.queue) {
      try {
        for (const area of ['tmp', 'journal'] as const) await access(this.queue.store.areaDir(area), constants.W_OK);
      } catch {
        problems.push(`the queue directory ${this.queue.store.dir} is not writable`);
      }
    }
    return { ready: problems.length === 0, problems };
  }

  /** /status: what ops want to see at a glance. */
  status(): RelayStatus {
    return relayStatus({
      snapshot: this.config.current,
      loadedAt: this.config.loadedAt,
      lastReloadError: this.config.lastReloadError,
      queue: this.queue?.runner.stats(),
    });
  }

  /**
   * New sessions get 421; running deliveries get `shutdownGraceMs` to finish; whatever is left
   * stays in the queue for the next start.
   */
  async stop(): Promise<void> {
    this.listener.drain();
    if (this.queue) {
      await this.queue.runner.stop(this.graceMs);
      await this.queue.control.stop();
    }
    await this.listener.close();
    await this.queue?.store.close();
    await this.upstreamThread.close();
    this.pools.closeAll();
  }
}
