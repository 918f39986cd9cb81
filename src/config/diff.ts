import type { Secret } from './secret.js';
import type { ClientConfig, ConfigSnapshot, IdentityConfig, ListenConfig, ServerConfig } from './types.js';

export interface NamedChanges {
  readonly added: string[];
  readonly removed: string[];
  readonly changed: string[];
}

export interface ConfigChange {
  readonly servers: NamedChanges;
  readonly channels: NamedChanges;
  readonly agents: NamedChanges;
  readonly clients: NamedChanges;
  /** The default server moved: every identity without `server` moves with it. */
  readonly defaultServer: { readonly from: string; readonly to: string } | undefined;
  /** Other keys that changed and apply at once (policy, listen.allow, a listener's certificate, queue.retry, log.level …). */
  readonly settings: string[];
  /** Keys that changed but only take effect after a restart. */
  readonly needsRestart: string[];
}

/** What changed between two snapshots, in the domain's words. Pure. */
export function diffSnapshots(before: ConfigSnapshot, after: ConfigSnapshot): ConfigChange {
  const settings: string[] = [];
  const needsRestart: string[] = [];
  const differ = (a: unknown, b: unknown) => JSON.stringify(a) !== JSON.stringify(b);

  diffListeners(before.listeners, after.listeners, settings, needsRestart);
  // connection limits and the auth limits apply to the next connection or login; timeouts to sessions that start after the reload
  if (differ(before.limits, after.limits)) settings.push('limits');
  if (before.delivery !== after.delivery) needsRestart.push('delivery');
  if (before.queue.dir !== after.queue.dir) needsRestart.push('queue.dir');
  if (differ(before.queue.retryMs, after.queue.retryMs)) settings.push('queue.retry');
  if (before.queue.maxAgeMs !== after.queue.maxAgeMs) settings.push('queue.max_age');
  if (before.queue.notify !== after.queue.notify) settings.push('queue.notify');
  if (differ(before.policy, after.policy)) settings.push('policy');
  if (before.log.level !== after.log.level) settings.push('log.level');
  // the logger's destination is made once at start
  if (before.log.format !== after.log.format) needsRestart.push('log.format');
  // the Redis connection and the node's name are made once at start
  if (!sameCluster(before.cluster, after.cluster)) needsRestart.push('cluster');
  // the log's and the history's hashes are set up at start: a change mid-run would mix both forms
  if (before.log.redact !== after.log.redact) needsRestart.push('log.redact');
  if ((before.history === false) !== (after.history === false)) needsRestart.push('history');
  else if (before.history && after.history && before.history.keepMs !== after.history.keepMs) settings.push('history.keep');
  const endpoint = (h: ConfigSnapshot['http']) => (h === false ? false : [h.host, h.port]);
  if (differ(endpoint(before.http), endpoint(after.http))) needsRestart.push('http');
  else if (before.http && after.http && !sameSecret(before.http.token, after.http.token)) settings.push('http.token');
  // the token store reads the current snapshot's key at each write
  if (before.secretKey?.recipient !== after.secretKey?.recipient) settings.push('secrets.key_file');

  // a new key or selector signs the next message (the queue reads the current snapshot at each attempt)
  const dkim = (s: ConfigSnapshot) => [...s.dkim.values()].map((k) => [k.domain, k.selector, k.algorithm, k.publicKey, k.headers]);
  if (differ(dkim(before), dkim(after))) settings.push('dkim');
  // the relay checks the From domains again after every applied reload anyway
  if (differ(before.deliverability, after.deliverability)) settings.push('deliverability');

  const identities = (s: ConfigSnapshot, kind: IdentityConfig['kind']) => s.identities.filter((i) => i.kind === kind);
  return {
    servers: compare(before.servers, after.servers, (s) => s.name, serverFingerprint, (a, b) => sameSecret(a.password, b.password)),
    channels: compare(identities(before, 'channel'), identities(after, 'channel'), (i) => i.name, identityFingerprint, sameOverridePassword),
    agents: compare(identities(before, 'agent'), identities(after, 'agent'), (i) => i.name, identityFingerprint, sameOverridePassword),
    clients: compare(before.clients, after.clients, (c) => c.username, clientFingerprint, (a, b) => a.password.equals(b.password)),
    defaultServer: before.defaultServer.name !== after.defaultServer.name ? { from: before.defaultServer.name, to: after.defaultServer.name } : undefined,
    settings,
    needsRestart,
  };
}

/**
 * A listener's socket (host, port, tls kind) is bound at start: changing it needs a restart, and
 * until then that listener keeps its previous settings (listener/server.ts). Everything else of a
 * listener applies to its next connection; a new certificate or key is the renewal case.
 */
function diffListeners(before: readonly ListenConfig[], after: readonly ListenConfig[], settings: string[], needsRestart: string[]): void {
  if (before.length !== after.length) {
    needsRestart.push('listen');
    return;
  }
  after.forEach((b, i) => {
    const a = before[i]!;
    for (const key of ['host', 'port', 'tls'] as const) if (a[key] !== b[key]) needsRestart.push(`${b.path}.${key}`);
    if (needsRestart.some((k) => k.startsWith(`${b.path}.`))) return;
    if (JSON.stringify(a.allow) !== JSON.stringify(b.allow)) settings.push(`${b.path}.allow`);
    if (a.maxMessageSize !== b.maxMessageSize) settings.push(`${b.path}.max_message_size`);
    if (a.allowPlaintextAuth !== b.allowPlaintextAuth) settings.push(`${b.path}.allow_plaintext_auth`);
    // both apply to sessions opened after the reload: a session keeps the listener settings it started with
    if (a.bareNewline !== b.bareNewline) settings.push(`${b.path}.bare_newline`);
    if (a.maxAttachmentSize !== b.maxAttachmentSize) settings.push(`${b.path}.max_attachment_size`);
    if (a.minTlsVersion !== b.minTlsVersion) settings.push(`${b.path}.min_tls_version`);
    if (!sameSecret(a.cert, b.cert)) settings.push(`${b.path}.cert`);
    if (!sameSecret(a.key, b.key)) settings.push(`${b.path}.key`);
  });
}

export function isEmptyChange(c: ConfigChange): boolean {
  const none = (n: NamedChanges) => n.added.length + n.removed.length + n.changed.length === 0;
  return none(c.servers) && none(c.channels) && none(c.agents) && none(c.clients) && !c.defaultServer && c.settings.length === 0 && c.needsRestart.length === 0;
}

/** "servers: +backup ~main; agents: +carol -bob; default server: main → backup" */
export function describeChange(c: ConfigChange): string {
  const parts: string[] = [];
  const named = (label: string, n: NamedChanges) => {
    const items = [...n.added.map((x) => `+${x}`), ...n.removed.map((x) => `-${x}`), ...n.changed.map((x) => `~${x}`)];
    if (items.length) parts.push(`${label}: ${items.join(' ')}`);
  };
  named('servers', c.servers);
  named('channels', c.channels);
  named('agents', c.agents);
  named('clients', c.clients);
  if (c.defaultServer) parts.push(`default server: ${c.defaultServer.from} → ${c.defaultServer.to}`);
  if (c.settings.length) parts.push(`settings: ${c.settings.join(', ')}`);
  if (c.needsRestart.length) parts.push(`needs a restart: ${c.needsRestart.join(', ')}`);
  return parts.join('; ') || 'no change';
}

function compare<T>(before: readonly T[], after: readonly T[], key: (x: T) => string, fingerprint: (x: T) => string, sameSecrets: (a: T, b: T) => boolean): NamedChanges {
  const was = new Map(before.map((x) => [key(x), x]));
  const now = new Map(after.map((x) => [key(x), x]));
  return {
    added: [...now.keys()].filter((k) => !was.has(k)),
    removed: [...was.keys()].filter((k) => !now.has(k)),
    changed: [...now.keys()].filter((k) => {
      const a = was.get(k);
      const b = now.get(k)!;
      return a !== undefined && (fingerprint(a) !== fingerprint(b) || !sameSecrets(a, b));
    }),
  };
}

function serverFingerprint(s: ServerConfig): string {
  // path is where it sits in the file, not what it is; the password is compared separately
  const { path: _path, password: _password, ...rest } = s;
  return JSON.stringify(rest);
}

function identityFingerprint(i: IdentityConfig): string {
  return JSON.stringify([i.address, i.displayName, i.serverName, i.override?.username, i.override !== undefined]);
}

function clientFingerprint(c: ClientConfig): string {
  return JSON.stringify([c.sendAs]);
}

function sameOverridePassword(a: IdentityConfig, b: IdentityConfig): boolean {
  return sameSecret(a.override?.password, b.override?.password);
}

function sameSecret(a: Secret | undefined, b: Secret | undefined): boolean {
  return a === undefined ? b === undefined : a.equals(b);
}

function sameCluster(a: ConfigSnapshot['cluster'], b: ConfigSnapshot['cluster']): boolean {
  if (a === false || b === false) return a === b;
  return a.url.equals(b.url) && a.keyPrefix === b.keyPrefix && a.nodeId === b.nodeId && a.leaseTtlMs === b.leaseTtlMs;
}
