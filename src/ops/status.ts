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
}

/** The /status document. Pure: no secrets can appear (only names, hosts and addresses are read). */
export function relayStatus(input: {
  snapshot: ConfigSnapshot;
  loadedAt: Date;
  lastReloadError: { at: Date; issues: readonly ConfigIssue[] } | undefined;
  queue: { depth: number; oldestAgeSeconds: number; byServer: Record<string, { queued: number; oldestAgeSeconds: number }> } | undefined;
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
  };
}
