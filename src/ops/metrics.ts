import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ConfigSnapshot } from '../config/types.js';
import { DELIVERY_KINDS, ERROR_KINDS, SMTP_TIME_KINDS } from '../errors/kinds.js';

/** The limit label of sendas_client_limits_total (listener/session-limits.ts LimitName, checked in guard.ts). */
export const CLIENT_LIMITS = ['connections', 'connections_per_address', 'idle_timeout', 'command_timeout', 'data_timeout', 'errors_per_session', 'recipients_per_message', 'auth_lockout'] as const;
export const LOCKOUT_SCOPES = ['address', 'login'] as const;
/** The server label of a message refused before its identity (so its server) was known. */
export const NO_SERVER = 'none';

/**
 * The relay's Prometheus metrics. Reasons are the same error kinds as in the SMTP reply and the
 * log line. One registry per relay, so several relays in one process (tests) don't collide.
 */
export class RelayMetrics {
  readonly registry = new Registry();

  readonly received = new Counter({
    name: 'sendas_messages_received_total',
    help: 'Messages accepted from clients (queued, or relayed in passthrough), by server',
    labelNames: ['server'] as const,
    registers: [this.registry],
  });
  readonly relayed = new Counter({
    name: 'sendas_messages_relayed_total',
    help: 'Upstream transactions that delivered a message (to at least one recipient), by server',
    labelNames: ['server'] as const,
    registers: [this.registry],
  });
  readonly refused = new Counter({
    name: 'sendas_messages_refused_total',
    help: 'Messages refused to the client at SMTP time, by reason and server',
    labelNames: ['reason', 'server'] as const,
    registers: [this.registry],
  });
  readonly failed = new Counter({
    name: 'sendas_messages_failed_total',
    help: 'Failed delivery attempts by reason, server and outcome (deferred: will be retried; failed: for good)',
    labelNames: ['reason', 'server', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly deliveryLatency = new Histogram({
    name: 'sendas_delivery_latency_seconds',
    help: 'Time from acceptance to delivery upstream, by server',
    labelNames: ['server'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400],
    registers: [this.registry],
  });
  readonly authFailures = new Counter({
    name: 'sendas_auth_failures_total',
    help: 'Failed client logins (wrong password or unknown login)',
    registers: [this.registry],
  });
  readonly authLockouts = new Counter({
    name: 'sendas_auth_lockouts_total',
    help: 'Lockouts started after too many failed logins, by scope (address, login)',
    labelNames: ['scope'] as const,
    registers: [this.registry],
  });
  readonly clientLimits = new Counter({
    name: 'sendas_client_limits_total',
    help: 'Clients refused or cut off by a listener limit, by limit (connections, connections_per_address, idle_timeout, command_timeout, data_timeout, errors_per_session, recipients_per_message, auth_lockout)',
    labelNames: ['limit'] as const,
    registers: [this.registry],
  });
  readonly reloads = new Counter({
    name: 'sendas_config_reloads_total',
    help: 'Configuration reloads, by result (ok, failed)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  /** What an alert on a broken config file reads: the counter alone can't tell "failed, then fixed" from "still failing". */
  readonly reloadFailing = new Gauge({
    name: 'sendas_config_reload_failing',
    help: 'Whether the last reload of the config file failed (1: the relay serves an older version than the file; 0: the file is the one loaded)',
    registers: [this.registry],
  });
  readonly historyDropped = new Counter({
    name: 'sendas_history_events_dropped_total',
    help: 'Trace events the delivery history did not keep (its writer full, failing or stopped); mail is not affected',
    registers: [this.registry],
  });
  readonly configInfo = new Gauge({
    name: 'sendas_config_info',
    help: 'The loaded configuration version (1 for the current one)',
    labelNames: ['version'] as const,
    registers: [this.registry],
  });

  constructor(sources: {
    queueStats: () => { depth: number; oldestAgeSeconds: number };
    upstreamConnections: () => number;
    /** Each account's use of each of its daily budgets. */
    accountBudgets?: () => { account: string; budget: string; used: number; limit: number }[];
    /** Each server's hosts, the one in use marked (see serverRoutes in status.ts). */
    serverRoutes?: () => { server: string; host: string; role: 'primary' | 'alternate'; inUse: boolean }[];
  }) {
    new Gauge({
      name: 'sendas_account_budget_used',
      help: "Use of an account's budget over the rolling 24 h window (recipients or messages), by account and budget",
      labelNames: ['account', 'budget'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const b of sources.accountBudgets?.() ?? []) this.set({ account: b.account, budget: b.budget }, b.used);
      },
    });
    new Gauge({
      name: 'sendas_account_budget_limit',
      help: "An account's budget per rolling 24 h (daily: on its server), by account and budget",
      labelNames: ['account', 'budget'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const b of sources.accountBudgets?.() ?? []) this.set({ account: b.account, budget: b.budget }, b.limit);
      },
    });
    new Gauge({
      name: 'sendas_server_route',
      help: 'The host each server sends through: 1 for the one in use (primary, or alternate after a failover), 0 for the other',
      labelNames: ['server', 'host', 'role'] as const,
      registers: [this.registry],
      collect() {
        // a reload can drop a server or move a host: only the current rows are shown
        this.reset();
        for (const r of sources.serverRoutes?.() ?? []) this.set({ server: r.server, host: r.host, role: r.role }, r.inUse ? 1 : 0);
      },
    });
    new Gauge({
      name: 'sendas_queue_depth',
      help: 'Messages waiting in the queue',
      registers: [this.registry],
      collect() {
        this.set(sources.queueStats().depth);
      },
    });
    new Gauge({
      name: 'sendas_queue_oldest_age_seconds',
      help: 'Age of the oldest message in the queue (0 when empty)',
      registers: [this.registry],
      collect() {
        this.set(sources.queueStats().oldestAgeSeconds);
      },
    });
    new Gauge({
      name: 'sendas_upstream_connections_open',
      help: 'Open connections to upstream servers, all pools',
      registers: [this.registry],
      collect() {
        this.set(sources.upstreamConnections());
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'sendas_' });
  }

  /**
   * Zero series for every label set the config makes possible, so a rate or an alert on them
   * works before the first event (a series that appears only at the first failure has no rate
   * and no `absent()`-free alert). Called at start and after each reload that applied, for
   * servers added since; a removed server's series stay until restart (counters never go back).
   * Kept to what the config names: servers × kinds × outcome, never addresses or accounts.
   */
  private readonly latencySeeded = new Set<string>();

  seed(snapshot: Pick<ConfigSnapshot, 'servers' | 'delivery'>): void {
    const servers = snapshot.servers.map((s) => s.name);
    // passthrough hands the upstream's refusal to the client: every kind can be a refusal then
    const refusedKinds = snapshot.delivery === 'passthrough' ? ERROR_KINDS : SMTP_TIME_KINDS;
    for (const server of servers) {
      this.received.inc({ server }, 0);
      this.relayed.inc({ server }, 0);
      // zero() would wipe a histogram's counts: only for a server not seen before
      if (!this.latencySeeded.has(server)) this.deliveryLatency.zero({ server });
      this.latencySeeded.add(server);
      if (snapshot.delivery === 'queue') {
        for (const reason of DELIVERY_KINDS) for (const outcome of ['deferred', 'failed']) this.failed.inc({ reason, server, outcome }, 0);
      }
    }
    for (const server of [...servers, NO_SERVER]) for (const reason of refusedKinds) this.refused.inc({ reason, server }, 0);
    for (const scope of LOCKOUT_SCOPES) this.authLockouts.inc({ scope }, 0);
    for (const limit of CLIENT_LIMITS) this.clientLimits.inc({ limit }, 0);
    for (const result of ['ok', 'failed']) this.reloads.inc({ result }, 0);
  }

  setConfigVersion(version: string): void {
    this.configInfo.reset();
    this.configInfo.set({ version }, 1);
  }
}
