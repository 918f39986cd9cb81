import pino from 'pino';
import { formatAge } from '../config/duration.js';
import type { ConfigSnapshot } from '../config/types.js';
import { readRegistry, type RegistryView } from '../cluster/registry-read.js';
import { ClusterStore } from '../cluster/store.js';

export const STATUS_USAGE = `  status   --cluster --config FILE [--json]
                                          the replicas sharing cluster.redis, read from Redis (works while this
                                          host's relay is down): node, version, config version, queue depth, last
                                          heartbeat; exit 1 when Redis can't be reached or nothing is configured`;

/**
 * `sendas status --cluster`: the node registry straight from Redis, not from a relay's /status,
 * so it answers on a host whose relay is stopped and needs neither the monitoring port nor its
 * token; it shows what every replica wrote, which is what each one divides its limits by.
 */
export async function statusCommand(snapshot: ConfigSnapshot, opts: { cluster: boolean; json: boolean }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  if (!opts.cluster) {
    err.write(`sendas status: pass --cluster (one relay's own status is on its monitoring port: /status and the page at /)\nusage:\n${STATUS_USAGE}\n`);
    return 2;
  }
  const config = snapshot.cluster;
  if (!config) {
    err.write(`sendas status --cluster: ${snapshot.file} has no cluster: section; this relay shares nothing with other replicas\n`);
    return 1;
  }
  const store = new ClusterStore({ config, logger: pino({ level: 'silent' }) });
  const where = `${store.redis.options.host ?? '?'}:${store.redis.options.port ?? '?'}`;
  // one attempt: a command answers now or says why not (the relay's store reconnects for ever)
  store.redis.options.retryStrategy = () => null;
  let firstError: string | undefined;
  store.redis.once('error', (e: Error) => (firstError = e.message));
  try {
    await store.start();
    const view = store.up ? await readRegistry(store, config.leaseTtlMs) : undefined;
    if (!view) {
      err.write(
        `sendas status --cluster: cannot reach the cluster's Redis at ${where}${firstError ?? store.lastProblem ? ` (${firstError ?? store.lastProblem})` : ''}; the replicas that cannot reach it either keep their own share of every limit. Check cluster.redis.url in ${snapshot.file} and that Redis runs.\n`,
      );
      return 1;
    }
    out.write(opts.json ? `${JSON.stringify({ redis: 'up', at: where, prefix: config.keyPrefix, now: new Date(view.now).toISOString(), nodes: view.nodes }, null, 2)}\n` : formatRegistry(view, { where, prefix: config.keyPrefix, configVersion: snapshot.version, file: snapshot.file }));
    return 0;
  } finally {
    await store.close();
  }
}

/** The table: one line per replica, then what differs from this host's config file. */
export function formatRegistry(view: RegistryView, ctx: { where: string; prefix: string; configVersion: string; file: string }): string {
  const rows = [['NODE', 'VERSION', 'CONFIG', 'QUEUED', 'HEARTBEAT']];
  for (const n of view.nodes) rows.push([n.node, n.version, n.config, String(n.queueDepth), `${formatAge(view.now - Date.parse(n.heartbeat))} ago`]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = [`Redis ${ctx.where} up, prefix ${ctx.prefix}: ${view.nodes.length} replica${view.nodes.length === 1 ? '' : 's'} in the registry`];
  for (const r of rows) lines.push(r.map((c, i) => (i === 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd());
  if (view.nodes.length === 0) lines.push('(no replica has sent a heartbeat within cluster.lease_ttl)');
  const other = view.nodes.filter((n) => n.config !== ctx.configVersion);
  if (other.length) lines.push(`config version of ${ctx.file}: ${ctx.configVersion}; ${other.map((n) => n.node).join(', ')} run${other.length === 1 ? 's' : ''} another`);
  return `${lines.join('\n')}\n`;
}
