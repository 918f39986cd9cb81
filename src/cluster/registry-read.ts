import { nodeInfoOf, type NodeInfo } from './registry.js';
import type { ClusterStore } from './store.js';

/** The registry as Redis has it now: the replicas whose heartbeat is younger than the TTL, by name, and Redis' time. */
export interface RegistryView {
  /** Redis' TIME (epoch ms): the heartbeats' clock. */
  readonly now: number;
  readonly nodes: readonly NodeInfo[];
}

/**
 * Reads the node registry without joining it (`sendas status --cluster`): the same keys the
 * heartbeat script writes (registry.ts), read-only. Undefined when Redis does not answer.
 */
export async function readRegistry(store: ClusterStore, ttlMs: number): Promise<RegistryView | undefined> {
  return store.run(async (redis) => {
    const now = store.now();
    const ids = await redis.zrangebyscore(store.key('nodes'), now - ttlMs, '+inf');
    const values = ids.length ? await redis.mget(...ids.map((id) => store.key('node', id))) : [];
    const nodes = values.flatMap((v) => {
      const info = v === null ? undefined : nodeInfoOf(v); // null: gone between the two reads
      return info ? [info] : [];
    });
    nodes.sort((a, b) => a.node.localeCompare(b.node));
    return { now, nodes };
  });
}
