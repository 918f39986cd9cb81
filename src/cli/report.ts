import type { ConfigSnapshot, IdentityConfig } from '../config/types.js';
import { usedBy } from '../config/used-by.js';
import { formatSize } from '../config/size.js';
import { formatDuration } from '../config/duration.js';
import { hasOwnAccount } from '../config/account.js';

export function checkReport(snapshot: ConfigSnapshot): string {
  const out: string[] = [];
  const l = snapshot.listen;
  out.push(`${snapshot.file}: OK (version ${snapshot.version})`);
  out.push(`listen ${l.host}:${l.port}, relaying without login from ${l.allow.join(', ') || '(nobody)'}, max message size ${formatSize(l.maxMessageSize)}, delivery ${snapshot.delivery}`);
  if (snapshot.delivery === 'queue') {
    const q = snapshot.queue;
    out.push(`queue ${q.dir}: retry after ${q.retryMs.map(formatDuration).join(', ')} (the last repeats), give up after ${formatDuration(q.maxAgeMs)}${q.notify ? `, copy of failure notices to ${q.notify}` : ''}`);
  }
  out.push(`clients: ${snapshot.clients.length === 0 ? '(none: only listen.allow may relay)' : snapshot.clients.map((c) => `${c.username}${c.sendAs ? ` (send as ${c.sendAs.join(', ')})` : ' (send as anyone)'}`).join(', ')}`);
  out.push(`policy: from ${snapshot.policy.from}, unknown sender ${snapshot.policy.unknownSender}`);
  out.push('servers:');
  for (const server of snapshot.servers) {
    const own = hasOwnAccount(server);
    const login = !own ? 'no account of its own (every identity on it signs in with its own)' : server.auth === 'none' ? 'no sign-in' : `auth ${server.auth} as ${server.username ?? server.address}`;
    out.push(`  ${server.name}${server.isDefault ? ' (default)' : ''}: ${server.host}:${server.port} ${server.security}, ${login}${own ? `, account ${server.address}` : ''}`);
    const extras = [
      server.alternate ? `alternate ${server.alternate.host}:${server.alternate.port} (primary probed again after ${formatDuration(server.alternate.cooldownMs)})` : undefined,
      server.maxRecipients ? `batches of ${server.maxRecipients} recipients` : undefined,
      server.rate ? `at most ${server.rate.count} messages per ${formatDuration(server.rate.windowMs)} per account` : undefined,
    ].filter(Boolean);
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

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function names(list: IdentityConfig[]): string {
  return list.length > 0 ? `: ${list.map((i) => i.name).join(', ')}` : '';
}
