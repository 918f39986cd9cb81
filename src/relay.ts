import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { ConfigHolder, type ConfigChange, type ConfigEvent } from './config/holder.js';
import { logConfigEvent } from './config/reload-log.js';
import type { ConfigSnapshot } from './config/types.js';
import { accountFor, serverAccount } from './config/account.js';
import { AccountBook } from './delivery/accounts.js';
import { isRelayError } from './errors/relay-error.js';
import { QueueStage } from './delivery/queue-stage.js';
import { ListenerGuard } from './listener/guard.js';
import { Listener } from './listener/server.js';
import type { Logger } from './log.js';
import { RelayMetrics } from './ops/metrics.js';
import { registerClusterMetrics } from './ops/cluster-metrics.js';
import { accountStatus, relayStatus, serverRoutes, type AccountStatus, type RelayStatus } from './ops/status.js';
import { Reception } from './reception/reception.js';
import { Transport } from './transport/transport.js';
import { DeliverabilityMonitor } from './deliverability/monitor.js';
import { Redactor, redactKey, redactingLogger } from './history/redact.js';
import { Trace } from './history/trace.js';
import type { TraceLookup } from './history/types.js';
import { HistoryWriter } from './history/writer.js';
import { Cluster } from './cluster/cluster.js';

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
  /** One per entry of `listen:`, in the file's order. */
  private readonly listeners: readonly Listener[];
  /** Every upstream account's budgets, hold and health: the queue's lanes and passthrough share it. */
  private readonly accounts: AccountBook;
  private readonly startedAt = new Date();
  /** The From domains' SPF, DKIM and DMARC, checked in the background for /status and the log. */
  private readonly deliverability: DeliverabilityMonitor;
  /** The delivery history's writer; undefined with `history: false`. */
  private readonly history: HistoryWriter | undefined;
  /** With log.redact: how addresses are hashed in the log and the history. */
  private readonly redactor: Redactor | undefined;
  /** `cluster:`: the replicas' shared limits, leases, tokens and registry in Redis; undefined for one relay. */
  readonly cluster: Cluster | undefined;

  constructor(opts: RelayOptions) {
    this.config = new ConfigHolder(opts.snapshot);
    // log.redact: every line of every stage passes through the one redacting logger (history/redact.ts)
    this.redactor = opts.snapshot.log.redact ? new Redactor(redactKey(opts.snapshot.stateDir)!) : undefined;
    this.logger = this.redactor ? redactingLogger(opts.logger, this.redactor) : opts.logger;
    this.graceMs = opts.shutdownGraceMs ?? 5_000;
    const name = opts.hostname ?? hostname();
    const snapshot = () => this.config.current;
    const first = this.config.current;
    if (first.cluster) {
      this.cluster = new Cluster({ config: first.cluster, logger: this.logger, configVersion: () => snapshot().version, queueDepth: () => this.queue?.runner.size ?? 0, startedAt: this.startedAt });
    }
    this.transport = new Transport({ helo: name, logger: this.logger, stateDir: () => snapshot().stateDir, secretKey: () => snapshot().secretKey, loginHint: `sendas oauth login --config ${first.file}`, cluster: this.cluster });
    this.accounts = new AccountBook(this.logger, undefined, this.cluster);
    this.metrics = new RelayMetrics({
      queueStats: () => this.queue?.runner.stats() ?? { depth: 0, oldestAgeSeconds: 0 },
      upstreamConnections: () => this.transport.openConnections(),
      accountBudgets: () => this.accountStatus().flatMap((a) => a.budgets.map((b) => ({ account: a.account, budget: b.budget, used: b.used, limit: b.limit }))),
      serverRoutes: () => {
        const routes = this.queue?.runner.routes() ?? {};
        return this.config.current.servers.flatMap((server) => serverRoutes(server, routes[server.name]).map((r) => ({ server: server.name, ...r })));
      },
    });
    if (this.cluster) registerClusterMetrics(this.metrics.registry, this.cluster);
    this.metrics.setConfigVersion(first.version);
    this.metrics.seed(first);
    if (first.history) {
      const keep = first.history.keepMs;
      this.history = new HistoryWriter({
        stateDir: first.stateDir,
        keepMs: () => (snapshot().history || { keepMs: keep }).keepMs,
        logger: this.logger,
        onDropped: (n) => this.metrics.historyDropped.inc(n),
      });
    }
    const trace = new Trace(this.logger, this.history, this.redactor);
    if (first.delivery === 'queue') {
      this.queue = new QueueStage({ dir: first.queue.dir, getSnapshot: snapshot, transport: this.transport, logger: this.logger, metrics: this.metrics, hostname: name, accounts: this.accounts, trace });
    }
    const reception = new Reception({ hostname: name, logger: this.logger, metrics: this.metrics, queue: this.queue?.intake, transport: this.transport, trace, ...(this.queue ? {} : { accounts: this.accounts }) });
    // one guard for every listener, so the per-address counts and lockouts add up across them
    const guard = new ListenerGuard({ logger: this.logger, metrics: this.metrics, cluster: this.cluster });
    this.listeners = first.listeners.map((_, index) => new Listener({ getSnapshot: snapshot, index, handleMessage: (m) => reception.handle(m), logger: this.logger, hostname: name, guard }));
    this.deliverability = new DeliverabilityMonitor({ getSnapshot: snapshot, logger: this.logger });
    this.config.subscribe((event) => this.configChanged(event));
  }

  /**
   * Binds every listener's address (or the given override for all of them, e.g. port 0 in tests:
   * each gets its own free port). Returns the first listener's address; all: `addresses`.
   */
  async start(bind?: { host?: string; port?: number }): Promise<AddressInfo> {
    const snapshot = this.config.current;
    // before anything counts: a Redis that is down is no error (the local shares apply)
    await this.cluster?.start();
    // the budgets counted before a restart still count: read before the first message
    await this.accounts.load(snapshot.stateDir, Date.now());
    await this.history?.start();
    if (this.queue) {
      const pending = await this.queue.start();
      this.logger.info({ dir: this.queue.store.dir, pending }, pending ? `picked up ${pending} queued message${pending === 1 ? '' : 's'}` : 'queue is empty');
    }
    await this.transport.ready();
    const addresses: AddressInfo[] = [];
    for (const listener of this.listeners) {
      const { host, port, tls, path } = listener.config;
      const address = await listener.listen(bind?.host ?? host, bind?.port ?? port);
      addresses.push(address);
      this.logger.info({ host: address.address, port: address.port, tls, listener: path, config: snapshot.file, version: snapshot.version }, 'sendas listening');
    }
    this.bound = addresses;
    for (const w of snapshot.warnings) this.logger.warn({ path: w.path }, w.message);
    this.deliverability.check();
    return addresses[0]!;
  }

  private bound: readonly AddressInfo[] = [];

  /** Where each listener is bound, in the order of `listen:` (after start). */
  get addresses(): readonly AddressInfo[] {
    return this.bound;
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
  reloadFromFile(reason: string): Promise<ConfigChange | undefined> {
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
      for (const listener of this.listeners) listener.applyLimits(event.snapshot);
      closedPools = this.transport.retainFor(event.snapshot);
      this.metrics.setConfigVersion(event.snapshot.version);
      this.metrics.seed(event.snapshot);
      this.deliverability.check();
    }
    this.metrics.reloads.inc({ result: event.type === 'failed' ? 'failed' : 'ok' });
    this.metrics.reloadFailing.set(event.type === 'failed' ? 1 : 0);
    logConfigEvent(this.logger, event, closedPools);
  }

  /** /readyz: listener bound, config loaded, queue writable. */
  async ready(): Promise<{ ready: boolean; problems: string[] }> {
    const problems = this.listeners.filter((l) => !l.listening).map((l) => `the SMTP listener ${l.config.path} (${l.config.host}:${l.config.port}) is not bound`);
    if (this.queue) problems.push(...(await this.queue.problems()));
    return { ready: problems.length === 0, problems };
  }

  /** /status: what ops want to see at a glance. */
  status(): RelayStatus {
    const { current, loadedAt, lastReloadError } = this.config;
    return relayStatus({
      snapshot: current,
      loadedAt,
      lastReloadError,
      queue: this.queue?.runner.stats(),
      ...(this.queue ? { queueDetail: this.queue.runner.detail(), failures: this.queue.runner.recentFailures() } : {}),
      accounts: this.accountStatus(),
      startedAt: this.startedAt,
      routes: this.queue?.runner.routes(),
      deliverability: this.deliverability.status(),
      cluster: this.cluster?.status(),
    });
  }

  /** Every account the config can send with (and any other with use kept in state_dir), with its limits as configured now. */
  private accountStatus(): AccountStatus[] {
    const snapshot = this.config.current;
    for (const identity of [undefined, ...snapshot.identities]) {
      const account = accountFor(snapshot, identity);
      if (!isRelayError(account) && account.address) this.accounts.of(account.key).see(account);
    }
    for (const server of snapshot.servers) if (server.address) this.accounts.of(serverAccount(server).key).see(serverAccount(server));
    return accountStatus(this.accounts.all(), Date.now());
  }

  /** New sessions get 421; running deliveries get `shutdownGraceMs` to finish; whatever is left stays queued. */
  async stop(): Promise<void> {
    this.deliverability.stop();
    for (const listener of this.listeners) listener.drain();
    await this.queue?.stop(this.graceMs);
    await Promise.all(this.listeners.map((l) => l.close()));
    await this.queue?.close();
    await this.transport.close();
    await this.accounts.close();
    // after the last delivery: its events are in the history before the file closes
    await this.history?.close();
    // the last: leases and the registry entry go when nothing of this replica needs them
    await this.cluster?.stop();
  }

  /**
   * The history's search (`GET /trace`, the status page): an address, a Message-ID or a queue id;
   * under log.redact an address is hashed as the history keeps it. Empty with `history: false`.
   */
  readonly trace: TraceLookup = async (query, limit) => {
    if (!this.history) return [];
    return this.history.find(this.redactor ? this.redactor.text(query) : query, limit);
  };
}
