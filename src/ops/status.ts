import type { ConfigIssue } from '../config/load.js';
import type { ConfigSnapshot } from '../config/types.js';
import { usedBy } from '../config/used-by.js';
import { accountFor } from '../config/account.js';
import { isRelayError } from '../errors/relay-error.js';
import type { ClusterStatus } from '../cluster/cluster.js';

/** The host a server's messages go to now (delivery's failover state, as plain values). */
export interface ServerRoute {
  readonly host: string;
  readonly port: number;
  readonly role: 'primary' | 'alternate';
  /** ms since epoch of the last move between primary and alternate; undefined: never moved. */
  readonly since: number | undefined;
}

export interface RelayStatus {
  config: {
    file: string;
    version: string;
    loadedAt: string;
    delivery: string;
    /** Present while the file on disk is invalid: the relay serves with `version`. */
    lastReloadError?: { at: string; issues: readonly ConfigIssue[] };
  };
  servers: {
    name: string;
    default: boolean;
    host: string;
    port: number;
    security: string;
    account: string;
    alternate?: string;
    /** The host in use: the primary unless failed over; `since` is the move to it, or the relay's start. */
    route: { host: string; role: 'primary' | 'alternate'; since: string };
    usedBy: { channels: string[]; agents: string[] };
    queue: { queued: number; oldestAgeSeconds: number };
  }[];
  queue?: { depth: number; oldestAgeSeconds: number } & Partial<QueueDetail>;
  /** Each upstream account seen since the start (or with budget use kept in state_dir). */
  accounts: AccountStatus[];
  /** Every channel and agent with the server and account it sends as now. */
  identities?: IdentityStatus[];
  /** The last failed or deferred attempts since the start, newest first (delivery: queue). */
  failures?: FailureStatus[];
  /** The background `sendas check --dns` (src/deliverability/monitor.ts); absent where no check runs (tests of this module). */
  deliverability?: DeliverabilityStatus;
  /** `cluster:`: Redis up or down and the replicas in the node registry; absent for one relay. */
  cluster?: ClusterStatus;
}

/** What waits and what gave up: entries deferred by the reason of their last attempt, and the failed area's size. */
export interface QueueDetail {
  /** By classification (errors/ ErrorKind): entries waiting for another attempt after a failed one, or for their account's quota. */
  deferred: Record<string, number>;
  /** Entries in the failed area (kept for `sendas queue`; `retry` puts one back). */
  failed: number;
}

/** A channel or agent as admin consoles list it: the mailbox, the server and the account it sends as. */
export interface IdentityStatus {
  kind: 'channel' | 'agent';
  name: string;
  address: string;
  displayName?: string;
  server: string;
  /** `override`: its own login; `server`: the server's account. */
  via: 'override' | 'server';
  /** The account's key (as in `accounts[]`) and the mailbox it sends as; absent when it can't send. */
  account?: string;
  sendsAs?: string;
  /** Why it can't send now (an override without a password): the sentence for ops. */
  problem?: string;
}

/** One failed or deferred attempt, with the classification's fix. */
export interface FailureStatus {
  at: string;
  queueId: string;
  result: 'deferred' | 'failed';
  recipients: string[];
  /** `channel:NAME`, `agent:NAME` or `(default account)` */
  identity: string;
  server: string;
  account?: string;
  host?: string;
  kind: string;
  code: number;
  enhanced: string;
  reason: string;
  upstreamReply?: string;
  fix?: string;
}

/** Whether each From domain's mail would pass DMARC at the receiver, by server, as last checked. */
export interface DeliverabilityStatus {
  /** off: `deliverability.check: false`; pending: the first check has not finished; failed: the check itself broke. */
  state: 'off' | 'pending' | 'checked' | 'failed';
  checkedAt?: string;
  /** fail: some domain would fail DMARC; unknown: none fails, but some could not be looked up. */
  result?: 'pass' | 'fail' | 'unknown';
  domains?: readonly {
    readonly domain: string;
    readonly server: string;
    readonly addresses: readonly string[];
    readonly result: 'pass' | 'fail' | 'unknown';
    readonly spf: { readonly result: string; readonly aligned: boolean; readonly detail: string };
    readonly dkim: { readonly result: string; readonly aligned: boolean; readonly detail: string };
    readonly dmarc: { readonly policy: string | undefined; readonly detail: string };
    readonly problems: readonly string[];
    readonly fixes: readonly { readonly record: string; readonly why: string }[];
    readonly notes: readonly string[];
  }[];
  error?: string;
}

/** One account as ops see it: its budgets' use, its connections, its hold or backoff, its last outcomes. */
export interface AccountStatus {
  account: string;
  server: string;
  address: string;
  budgets: { budget: string; used: number; limit: number; window: '24h' }[];
  connections: { inUse: number; limit: number };
  backoff?: { until: string; connections: number };
  heldUntil?: string;
  lastSuccess?: { at: string };
  lastFailure?: { at: string; kind?: string; code?: number; enhanced?: string; reason?: string; upstreamReply?: string };
}

/** What /status reads of an account's state (delivery/accounts.ts AccountState). */
export interface AccountView {
  readonly key: string;
  readonly server: string;
  readonly address: string;
  readonly connections: number;
  readonly inUse: number;
  readonly heldUntil: number;
  readonly backoff: { readonly until: number; readonly limit: number } | undefined;
  readonly lastSuccess: { readonly at: string } | undefined;
  readonly lastFailure: AccountStatus['lastFailure'];
  use(now: number): { budget: string; used: number; limit: number }[];
}

/** The accounts part of /status. Pure; secrets can't appear (names, counts, classified reasons). */
export function accountStatus(states: readonly AccountView[], now: number): AccountStatus[] {
  return states
    .map((s) => ({
      account: s.key,
      server: s.server,
      address: s.address,
      budgets: s.use(now).map((b) => ({ ...b, window: '24h' as const })),
      connections: { inUse: s.inUse, limit: s.connections },
      ...(s.backoff && s.backoff.until > now ? { backoff: { until: new Date(s.backoff.until).toISOString(), connections: s.backoff.limit } } : {}),
      ...(s.heldUntil > now ? { heldUntil: new Date(s.heldUntil).toISOString() } : {}),
      ...(s.lastSuccess ? { lastSuccess: s.lastSuccess } : {}),
      ...(s.lastFailure ? { lastFailure: s.lastFailure } : {}),
    }))
    .sort((a, b) => a.account.localeCompare(b.account));
}

/** The /status document. Pure: no secrets can appear (only names, hosts and addresses are read). */
export function relayStatus(input: {
  snapshot: ConfigSnapshot;
  loadedAt: Date;
  lastReloadError: { at: Date; issues: readonly ConfigIssue[] } | undefined;
  queue: { depth: number; oldestAgeSeconds: number; byServer: Record<string, { queued: number; oldestAgeSeconds: number }> } | undefined;
  /** delivery: queue: deferred by reason and the failed area's size. */
  queueDetail?: QueueDetail;
  failures?: FailureStatus[];
  accounts?: AccountStatus[];
  /** The relay's start: a server that never moved has used its primary since then. */
  startedAt?: Date;
  /** By server name; a server missing here uses its primary (passthrough has no failover). */
  routes?: Readonly<Record<string, ServerRoute>>;
  deliverability?: DeliverabilityStatus;
  cluster?: ClusterStatus;
}): RelayStatus {
  const { snapshot } = input;
  return {
    config: {
      file: snapshot.file,
      version: snapshot.version,
      loadedAt: input.loadedAt.toISOString(),
      delivery: snapshot.delivery,
      ...(input.lastReloadError ? { lastReloadError: { at: input.lastReloadError.at.toISOString(), issues: input.lastReloadError.issues } } : {}),
    },
    servers: snapshot.servers.map((server) => {
      const users = usedBy(snapshot, server);
      return {
        name: server.name,
        default: server.isDefault,
        host: server.host,
        port: server.port,
        security: server.security,
        account: server.address,
        ...(server.alternate ? { alternate: `${server.alternate.host}:${server.alternate.port}` } : {}),
        route: routeOf(server, input.routes?.[server.name], input.startedAt ?? input.loadedAt),
        usedBy: { channels: users.channels.map((i) => i.name), agents: users.agents.map((i) => i.name) },
        queue: input.queue?.byServer[server.name] ?? { queued: 0, oldestAgeSeconds: 0 },
      };
    }),
    ...(input.queue ? { queue: { depth: input.queue.depth, oldestAgeSeconds: input.queue.oldestAgeSeconds, ...input.queueDetail } } : {}),
    accounts: input.accounts ?? [],
    identities: identityStatus(snapshot),
    ...(input.failures ? { failures: input.failures } : {}),
    ...(input.deliverability ? { deliverability: input.deliverability } : {}),
    ...(input.cluster ? { cluster: input.cluster } : {}),
  };
}

/** The channels and agents with what each sends as under this snapshot. Pure; names and addresses only. */
export function identityStatus(snapshot: ConfigSnapshot): IdentityStatus[] {
  return snapshot.identities.map((identity) => {
    const account = accountFor(snapshot, identity);
    const server = isRelayError(account) ? (identity.serverName ?? snapshot.defaultServer.name) : account.server.name;
    return {
      kind: identity.kind,
      name: identity.name,
      address: identity.address,
      ...(identity.displayName ? { displayName: identity.displayName } : {}),
      server,
      via: identity.override ? 'override' : 'server',
      ...(isRelayError(account) ? { problem: account.message } : { account: account.key, sendsAs: account.address }),
    };
  });
}

/** The route rows of a server (the primary, and the alternate if configured) with the one in use marked, for /status and the metric. */
export function serverRoutes(server: ConfigSnapshot['servers'][number], route: ServerRoute | undefined): { host: string; role: 'primary' | 'alternate'; inUse: boolean }[] {
  const onAlternate = route?.role === 'alternate';
  // a Graph server has no SMTP host: its endpoint is the one in use
  const primary = server.type === 'graph' ? new URL(server.graphUrl).host : `${server.host}:${server.port}`;
  const rows: { host: string; role: 'primary' | 'alternate'; inUse: boolean }[] = [{ host: primary, role: 'primary', inUse: !onAlternate || !server.alternate }];
  if (server.alternate) rows.push({ host: `${server.alternate.host}:${server.alternate.port}`, role: 'alternate', inUse: onAlternate });
  return rows;
}

function routeOf(server: ConfigSnapshot['servers'][number], route: ServerRoute | undefined, startedAt: Date): { host: string; role: 'primary' | 'alternate'; since: string } {
  const inUse = serverRoutes(server, route).find((r) => r.inUse)!;
  return { host: inUse.host, role: inUse.role, since: new Date(route?.since ?? startedAt.getTime()).toISOString() };
}
