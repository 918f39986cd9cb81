import { Counter, Gauge, type Registry } from 'prom-client';
import type { Cluster } from '../cluster/cluster.js';

/**
 * The cluster's series (`cluster:` only: a single relay has no Redis to be down, and a 0 there
 * would fire the RedisDown alert): whether Redis answers, the replicas in the registry, and each
 * fall back to the local shares. All present from the start.
 */
export function registerClusterMetrics(registry: Registry, cluster: Pick<Cluster, 'up' | 'replicas' | 'store'>): void {
  new Gauge({
    name: 'sendas_cluster_redis_up',
    help: "Whether this replica's Redis (cluster.redis) answers: 1, limits are shared; 0, each replica keeps its own share",
    registers: [registry],
    collect() {
      this.set(cluster.up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'sendas_cluster_nodes',
    help: 'Live replicas in the node registry as last seen (what limits are divided by while Redis is down)',
    registers: [registry],
    collect() {
      this.set(cluster.replicas());
    },
  });
  const outages = new Counter({
    name: 'sendas_cluster_redis_outages_total',
    help: 'Times Redis stopped answering and this replica fell back to its local share of every limit',
    registers: [registry],
  });
  outages.inc(0);
  cluster.store.onHealth((up) => {
    if (!up) outages.inc();
  });
}
