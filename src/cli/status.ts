import pino from 'pino';
import { formatAge } from '../config/duration.js';
import type { ConfigSnapshot } from '../config/types.js';
import { readRegistry, type RegistryView } from '../cluster/registry-read.js';
import { ClusterStore } from '../cluster/store.js';
import type { ClusterStatus } from '../cluster/cluster.js';
import { STATUS_USAGE } from './usage.js';

/**
 * `sendas status --cluster`: by default the node registry straight from Redis, not from a relay's
 * /status, so it answers on a host whose relay is stopped and needs neither the monitoring port
 * nor its token; it shows what every replica wrote, which is what each one divides its limits by.
 * With `--url` it asks one relay's /status instead: the view from that replica, which is the one
 * to see while Redis itself is down (the replicas it last saw, its share).
 */
export async function statusCommand(snapshot: ConfigSnapshot, opts: { cluster: boolean; json: boolean; url?: string | undefined }, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  if (!opts.cluster) {
    err.write(`sendas status: pass --cluster (one relay's own status is on its monitoring port: /status and the page at /)\nusage:\n${STATUS_USAGE}\n`);
    return 2;
  }
  const config = snapshot.cluster;
  if (!config) {
    err.write(`sendas status --cluster: ${snapshot.file} has no cluster: section; this relay shares nothing with other replicas\n`);
    return 1;
  }
  if (opts.url !== undefined) return fromRelay(snapshot, opts.url, opts.json, out, err);
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
    const heading = `Redis ${where} up, prefix ${config.keyPrefix}: ${replicas(view.nodes.length)} in the registry`;
    out.write(opts.json ? `${JSON.stringify({ redis: 'up', at: where, prefix: config.keyPrefix, now: new Date(view.now).toISOString(), nodes: view.nodes }, null, 2)}\n` : formatRegistry(view, heading, { configVersion: snapshot.version, file: snapshot.file }));
    return 0;
  } finally {
    await store.close();
  }
}

/** The table: one line per replica, then what differs from this host's config file. */
export function formatRegistry(view: RegistryView, heading: string, ctx: { configVersion: string; file: string }): string {
  const rows = [['NODE', 'VERSION', 'CONFIG', 'QUEUED', 'HEARTBEAT']];
  for (const n of view.nodes) rows.push([n.node, n.version, n.config, String(n.queueDepth), `${formatAge(view.now - Date.parse(n.heartbeat))} ago`]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = [heading];
  for (const r of rows) lines.push(r.map((c, i) => (i === 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd());
  if (view.nodes.length === 0) lines.push('(no replica has sent a heartbeat within cluster.lease_ttl)');
  const other = view.nodes.filter((n) => n.config !== ctx.configVersion);
  if (other.length) lines.push(`config version of ${ctx.file}: ${ctx.configVersion}; ${other.map((n) => n.node).join(', ')} run${other.length === 1 ? 's' : ''} another`);
  return `${lines.join('\n')}\n`;
}

function replicas(n: number): string {
  return `${n} replica${n === 1 ? '' : 's'}`;
}

/** The same table from one relay's /status: what that replica last saw, Redis up or down. */
async function fromRelay(snapshot: ConfigSnapshot, url: string, json: boolean, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const token = snapshot.http ? snapshot.http.token : undefined;
  let target: URL;
  try {
    target = new URL('/status', url);
  } catch {
    err.write(`sendas status --cluster: --url must be the relay's monitoring address, e.g. http://127.0.0.1:9025 (got ${url})\n`);
    return 2;
  }
  let body: { cluster?: ClusterStatus };
  try {
    const res = await fetch(target, { headers: token ? { authorization: `Bearer ${token.reveal()}` } : {}, signal: AbortSignal.timeout(5_000) });
    if (res.status === 401) {
      err.write(`sendas status --cluster: the relay at ${target.origin} refused ${token ? `the http.token of ${snapshot.file}` : 'a request without a token (set http.token in the config)'}\n`);
      return 1;
    }
    if (!res.ok) {
      err.write(`sendas status --cluster: the relay at ${target.origin} answered ${res.status} for /status\n`);
      return 1;
    }
    body = (await res.json()) as { cluster?: ClusterStatus };
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    err.write(`sendas status --cluster: cannot reach the relay at ${target.origin} (${cause?.code ?? cause?.message ?? (e as Error).message}); is it running, with http: on that port?\n`);
    return 1;
  }
  const c = body.cluster;
  if (!c) {
    err.write(`sendas status --cluster: the relay at ${target.origin} runs without a cluster: section\n`);
    return 1;
  }
  if (json) {
    out.write(`${JSON.stringify(c, null, 2)}\n`);
    return 0;
  }
  const redis = c.redis === 'up' ? 'up' : `DOWN${c.problem ? ` (${c.problem})` : ''}, each replica on its own share (limits divided by ${c.replicas})`;
  const heading = `${c.node} at ${target.origin}: Redis ${redis} since ${c.since}; ${replicas(c.nodes.length)} last seen`;
  out.write(formatRegistry({ now: Date.now(), nodes: c.nodes }, heading, { configVersion: snapshot.version, file: snapshot.file }));
  return 0;
}
