import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { ConfigHolder, type ConfigChange, type ConfigEvent } from './config/holder.js';
import { logConfigEvent } from './config/reload-log.js';
import type { ConfigSnapshot } from './config/types.js';
import { QueueStage } from './delivery/queue-stage.js';
import { Listener } from './listener/server.js';
import type { Logger } from './log.js';
import { RelayMetrics } from './ops/metrics.js';
import { relayStatus, serverRoutes, type RelayStatus } from './ops/status.js';
import { Reception } from './reception/reception.js';
import { Transport } from './transport/transport.js';

export interface RelayOptions {
  readonly snapshot: ConfigSnapshot;
  readonly logger: Logger;
  /** Name used in the greeting, EHLO upstream and Received headers; defaults to the host name. */
  readonly hostname?: string;
  /** On stop, how long running deliveries may take before the rest is left queued. */
  readonly shutdownGraceMs?: number;
}

/**
 * The stages wired together (ARCHITECTURE.md): listener → reception → queue → delivery →
 * transport, and the config holder whose snapshot each reads. A session keeps the snapshot it
 * started with; a queued message is delivered under the one current at each attempt.
 */
export class Relay {
  readonly metrics: RelayMetrics;
  private readonly config: ConfigHolder;
  private readonly logger: Logger;
  private readonly graceMs: number;
  private readonly transport: Transport;
  /** delivery: queue only; passthrough has no queue. */
  private readonly queue: QueueStage | undefined;
  private readonly listener: Listener;
  private readonly startedAt = new Date();

  constructor(opts: RelayOptions) {
    this.config = new ConfigHolder(opts.snapshot);
    this.logger = opts.logger;
    this.graceMs = opts.shutdownGraceMs ?? 5_000;
    const name = opts.hostname ?? hostname();
    const snapshot = () => this.config.current;
    const first = this.config.current;
    this.transport = new Transport({ helo: name, logger: this.logger, stateDir: () => snapshot().stateDir, loginHint: `sendas oauth login --config ${first.file}` });
    this.metrics = new RelayMetrics({
      queueStats: () => this.queue?.runner.stats() ?? { depth: 0, oldestAgeSeconds: 0 },
      upstreamConnections: () => this.transport.openConnections(),
      serverRoutes: () => {
        const routes = this.queue?.runner.routes() ?? {};
        return this.config.current.servers.flatMap((server) => serverRoutes(server, routes[server.name]).map((r) => ({ server: server.name, ...r })));
      },
    });
    this.metrics.setConfigVersion(first.version);
    if (first.delivery === 'queue') {
      this.queue = new QueueStage({ dir: first.queue.dir, getSnapshot: snapshot, transport: this.transport, logger: this.logger, metrics: this.metrics, hostname: name });
    }
    const reception = new Reception({ hostname: name, logger: this.logger, metrics: this.metrics, queue: this.queue?.intake, transport: this.transport });
    this.listener = new Listener({ getSnapshot: snapshot, handleMessage: (m) => reception.handle(m), logger: this.logger, hostname: name });
    this.config.subscribe((event) => this.configChanged(event));
  }

  /** Binds the configured address (or the given override, e.g. port 0 in tests). */
  async start(bind?: { host?: string; port?: number }): Promise<AddressInfo> {
    const snapshot = this.config.current;
    if (this.queue) {
      const pending = await this.queue.start();
      this.logger.info({ dir: this.queue.store.dir, pending }, pending ? `picked up ${pending} queued message${pending === 1 ? '' : 's'}` : 'queue is empty');
    }
    await this.transport.ready();
    const address = await this.listener.listen(bind?.host ?? snapshot.listen.host, bind?.port ?? snapshot.listen.port);
    this.logger.info({ host: address.address, port: address.port, config: snapshot.file, version: snapshot.version }, 'sendas listening');
    for (const w of snapshot.warnings) this.logger.warn({ path: w.path }, w.message);
    return address;
  }

  get currentSnapshot(): ConfigSnapshot {
    return this.config.current;
  }

  /** The config file and the secret files it references: what the watcher watches. */
  get configFiles(): readonly string[] {
    return this.config.files;
  }

  /**
   * Re-reads the config file. Valid: the new snapshot replaces the old one at once and pools of
   * accounts that changed or disappeared are closed. Invalid: the relay keeps serving with the
   * last good config, and the errors are logged and shown in /status until a valid file arrives.
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
      this.logger.level = event.snapshot.log.level;
      this.listener.applyLimits(event.snapshot);
      closedPools = this.transport.retainFor(event.snapshot);
      this.metrics.setConfigVersion(event.snapshot.version);
    }
    this.metrics.reloads.inc({ result: event.type === 'failed' ? 'failed' : 'ok' });
    logConfigEvent(this.logger, event, closedPools);
  }

  /** /readyz: listener bound, config loaded, queue writable. */
  async ready(): Promise<{ ready: boolean; problems: string[] }> {
    const problems = this.listener.listening ? [] : ['the SMTP listener is not bound'];
    if (this.queue) problems.push(...(await this.queue.problems()));
    return { ready: problems.length === 0, problems };
  }

  /** /status: what ops want to see at a glance. */
  status(): RelayStatus {
    const { current, loadedAt, lastReloadError } = this.config;
    return relayStatus({ snapshot: current, loadedAt, lastReloadError, queue: this.queue?.runner.stats(), startedAt: this.startedAt, routes: this.queue?.runner.routes() });
  }

  /** New sessions get 421; running deliveries get `shutdownGraceMs` to finish; whatever is left stays queued. */
  async stop(): Promise<void> {
    this.listener.drain();
    await this.queue?.stop(this.graceMs);
    await this.listener.close();
    await this.queue?.close();
    await this.transport.close();
  }
}
