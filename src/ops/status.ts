import type { ConfigIssue } from '../config/load.js';
import type { ConfigSnapshot } from '../config/types.js';
import { usedBy } from '../config/used-by.js';

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
    usedBy: { channels: string[]; agents: string[] };
    queue: { queued: number; oldestAgeSeconds: number };
  }[];
  queue?: { depth: number; oldestAgeSeconds: number };
  /** Each upstream account seen since the start (or with budget use kept in state_dir). */
  accounts: AccountStatus[];
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
  accounts?: AccountStatus[];
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
        usedBy: { channels: users.channels.map((i) => i.name), agents: users.agents.map((i) => i.name) },
        queue: input.queue?.byServer[server.name] ?? { queued: 0, oldestAgeSeconds: 0 },
      };
    }),
    ...(input.queue ? { queue: { depth: input.queue.depth, oldestAgeSeconds: input.queue.oldestAgeSeconds } } : {}),
    accounts: input.accounts ?? [],
  };
}
