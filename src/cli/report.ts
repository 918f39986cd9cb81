import { X509Certificate } from 'node:crypto';
import type { ConfigSnapshot, IdentityConfig, ServerConfig } from '../config/types.js';
import { usedBy } from '../config/used-by.js';
import { formatSize } from '../config/size.js';
import { formatDuration } from '../config/duration.js';
import { hasOwnAccount } from '../config/account.js';
import { dirOrigins } from '../config/dir-origin.js';
import { describeRedis } from '../config/cluster.js';

export function checkReport(snapshot: ConfigSnapshot, env: NodeJS.ProcessEnv = process.env): string {
  const dirs = dirOrigins(snapshot, env);
  const out: string[] = [];
  out.push(`${snapshot.file}: OK (version ${snapshot.version})`);
  for (const l of snapshot.listeners) {
    const tls = l.tls === 'none' ? 'no TLS' : `TLS ${l.tls} (${l.minTlsVersion} or later)`;
    const auth = l.tls === 'implicit' ? '' : l.allowPlaintextAuth ? ', AUTH without TLS from anywhere' : l.tls === 'starttls' ? ', AUTH only after STARTTLS outside allow' : ', AUTH only from allow';
    out.push(`listen ${l.host}:${l.port} ${tls}${auth}, relaying without login from ${l.allow.join(', ') || '(nobody)'}, max message size ${formatSize(l.maxMessageSize)}`);
    if (l.cert) out.push(`    certificate ${certificateLine(l.cert.reveal())}`);
  }
  out.push(`delivery ${snapshot.delivery}`);
  if (snapshot.delivery === 'queue') {
    const q = snapshot.queue;
    out.push(`queue ${q.dir} (${dirs.queue.origin}): retry after ${q.retryMs.map(formatDuration).join(', ')} (the last repeats), give up after ${formatDuration(q.maxAgeMs)}${q.notify ? `, copy of failure notices to ${q.notify}` : ''}`);
  }
  out.push(`state ${dirs.state.dir} (${dirs.state.origin})`);
  out.push(`clients: ${snapshot.clients.length === 0 ? '(none: only listen.allow may relay)' : snapshot.clients.map((c) => `${c.username}${c.sendAs ? ` (send as ${c.sendAs.join(', ')})` : ' (send as anyone)'}`).join(', ')}`);
  out.push(`policy: from ${snapshot.policy.from}, unknown sender ${snapshot.policy.unknownSender}`);
  if (snapshot.cluster) {
    const c = snapshot.cluster;
    out.push(`cluster: Redis ${describeRedis(c)}, key prefix ${c.keyPrefix}, this node ${c.nodeId}, leases and registry entries live ${formatDuration(c.leaseTtlMs)}`);
  }
  if (snapshot.secretKey) out.push(`secret key: ${snapshot.secretKey.where} (encrypt new secrets to ${snapshot.secretKey.recipient})`);
  out.push('servers:');
  for (const server of snapshot.servers) {
    const own = hasOwnAccount(server);
    const login = !own ? 'no account of its own (every identity on it signs in with its own)' : server.auth === 'none' ? 'no sign-in' : `auth ${server.auth} as ${server.username ?? server.address}`;
    out.push(`  ${server.name}${server.isDefault ? ' (default)' : ''}: ${server.host}:${server.port} ${server.security}, ${login}${own ? `, account ${server.address}` : ''}`);
    const extras = [
      server.alternate ? `alternate ${server.alternate.host}:${server.alternate.port} (primary probed again after ${formatDuration(server.alternate.cooldownMs)})` : undefined,
    ].filter(Boolean);
    out.push(`    limits per account: ${limitsOf(server)}`);
    if (extras.length > 0) out.push(`    ${extras.join(', ')}`);
    const { channels, agents } = usedBy(snapshot, server);
    out.push(`    used by ${count(channels.length, 'channel')}${names(channels)}`);
    out.push(`    used by ${count(agents.length, 'agent')}${names(agents)}`);
    const overriding = [...channels, ...agents].filter((i) => i.override);
    if (overriding.length > 0) out.push(`    with their own account (override): ${overriding.map((i) => i.name).join(', ')}`);
  }
  if (snapshot.warnings.length > 0) {
    out.push('warnings:');
    for (const w of snapshot.warnings) out.push(`  ${w.path}: ${w.message}`);
  }
  return out.join('\n');
}

/** Which certificate a listener will serve, so ops can tell a renewal was picked up. */
function certificateLine(pem: string): string {
  try {
    const c = new X509Certificate(pem);
    return `${c.subject.replace(/\n/g, ', ')}, valid until ${new Date(c.validTo).toISOString().slice(0, 10)}, SHA-256 ${c.fingerprint256}`;
  } catch {
    return '(not readable)';
  }
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function names(list: IdentityConfig[]): string {
  return list.length > 0 ? `: ${list.map((i) => i.name).join(', ')}` : '';
}

/** An account's limits on a server, in words (`sendas check`, `sendas explain`). */
export function limitsOf(server: ServerConfig): string {
  const d = server.daily;
  const daily = d ? [d.messages ? `${d.messages} messages` : undefined, d.recipients ? `${d.recipients} recipients` : undefined].filter(Boolean).join(' and ') : '';
  return [
    `${server.connections} connection${server.connections === 1 ? '' : 's'}`,
    server.rate ? `${server.rate.count} messages per ${formatDuration(server.rate.windowMs)}` : 'no rate limit',
    server.maxRecipients && server.type !== 'graph' ? `batches of ${server.maxRecipients} recipients` : undefined,
    daily ? `${daily} per rolling 24 h` : 'no daily budget',
  ]
    .filter(Boolean)
    .join(', ');
}
