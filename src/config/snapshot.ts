import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import { addressKey } from '../mail/address.js';
import { clusterSentinel, clusterTls } from './cluster.js';
import { effectiveAuth } from './auth.js';
import { dkimKeysOf } from './dkim.js';
import { DEFAULTS, MICROSOFT_GRAPH_URL, PORT_BY_SECURITY } from './defaults.js';
import type { Path } from './raw.js';
import type { RawConfig } from './schema.js';
import { listenEntries } from './raw.js';
import type { SecretKey } from './secret-key.js';
import { secretAt, secretFilesOf, type SecretReference } from './secret-refs.js';
import type { ClientConfig, ConfigSnapshot, DailyConfig, ConfigWarning, IdentityConfig, IdentityKind, ServerConfig } from './types.js';
import { configVersion } from './version.js';

export interface SnapshotInput {
  /** The validated document. */
  readonly data: RawConfig;
  readonly secrets: readonly SecretReference[];
  /** Absolute path of the YAML file: anchors relative directories. */
  readonly file: string;
  readonly text: string;
  readonly warnings: readonly ConfigWarning[];
  readonly env: NodeJS.ProcessEnv;
  /** Line of a key path in the file, for entries that keep it (dkim). */
  readonly lineOf?: (path: Path) => number | undefined;
  /** The age key that opened the {age: …} secrets, if one is configured. */
  readonly secretKey?: SecretKey;
  /** The secret files and the key file; defaults to the secrets' files. */
  readonly secretFiles?: readonly string[];
}

/** `daily:` with every budget off (or none given) counts nothing: no budget at all. */
function dailyOf(raw: RawConfig['servers'][number]['daily']): DailyConfig | undefined {
  if (!raw) return undefined;
  const messages = raw.messages || undefined;
  const recipients = raw.recipients || undefined;
  return messages === undefined && recipients === undefined ? undefined : Object.freeze({ messages, recipients });
}

/** The immutable snapshot the stages read, from a document that passed every check. */
export function buildSnapshot({ data, secrets, file, text, warnings, env, lineOf = () => undefined, secretKey, secretFiles }: SnapshotInput): ConfigSnapshot {
  const secret = secretAt(secrets);
  const servers: ServerConfig[] = data.servers.map((s, i) => {
    const path = `servers[${i}]`;
    const security = s.security ?? DEFAULTS.server.security;
    const port = s.port ?? PORT_BY_SECURITY[security];
    return Object.freeze({
      name: s.name,
      // a lone server is the default without saying so; with several, exactly one says so
      isDefault: s.default || data.servers.length === 1,
      type: s.type,
      preset: s.preset,
      host: s.host ?? '',
      port,
      security,
      auth: effectiveAuth(s),
      username: s.username,
      password: secret(`${path}.password`),
      address: s.address ?? s.username ?? '',
      tls: Object.freeze({
        ca: secret(`${path}.tls.ca`)?.reveal(),
        servername: s.tls?.servername,
        minVersion: s.tls?.min_version,
        rejectUnauthorized: s.tls?.reject_unauthorized ?? DEFAULTS.server.rejectUnauthorized,
      }),
      oauth: s.oauth
        ? Object.freeze({
            tenant: s.oauth.tenant,
            clientId: s.oauth.client_id,
            clientSecret: secret(`${path}.oauth.client_secret`),
            grant: s.oauth.grant ?? DEFAULTS.server.grant,
            tokenUrl: s.oauth.token_url ?? '',
            scope: s.oauth.scope,
            refreshToken: secret(`${path}.oauth.refresh_token`),
          })
        : undefined,
      allowPlaintextAuth: s.allow_plaintext_auth,
      proxy: s.proxy,
      graphUrl: s.graph_url ?? MICROSOFT_GRAPH_URL,
      saveToSentItems: s.save_to_sent_items ?? DEFAULTS.server.saveToSentItems,
      // the alternate is the same service on another host: it defaults to the primary's port
      alternate: s.alternate ? Object.freeze({ host: s.alternate.host, port: s.alternate.port ?? port, cooldownMs: s.alternate.cooldown }) : undefined,
      maxRecipients: s.max_recipients || undefined,
      rate: s.rate ? Object.freeze({ ...s.rate }) : undefined,
      connections: s.connections,
      daily: dailyOf(s.daily),
      path,
    });
  });
  const defaultServer = servers.find((s) => s.isDefault)!;

  const identity = (kind: IdentityKind, list: RawConfig['channels'], key: 'channels' | 'agents') =>
    list.map((c, i): IdentityConfig => {
      const path = `${key}[${i}]`;
      return Object.freeze({
        kind,
        name: c.name,
        address: c.address,
        displayName: c.display_name,
        serverName: c.server,
        override:
          c.override === undefined
            ? undefined
            : Object.freeze({
                username: c.override.username ?? c.address,
                password: secret(`${path}.override.password`),
                auth: c.override.auth,
                refreshToken: secret(`${path}.override.oauth.refresh_token`),
              }),
        path,
      });
    });
  const identities = [...identity('channel', data.channels, 'channels'), ...identity('agent', data.agents, 'agents')];

  const clients: ClientConfig[] = data.clients.map((c, i) =>
    Object.freeze({ username: c.username, password: secret(`clients[${i}].password`)!, sendAs: c.send_as ? Object.freeze([...c.send_as]) : undefined, path: `clients[${i}]` }),
  );

  // relative to the config file, like {file: …} secrets, so the relay finds them whatever its working directory
  const base = dirname(file);
  return Object.freeze({
    version: configVersion(text, secrets, secretKey?.recipient),
    file,
    listeners: Object.freeze(
      listenEntries(data.listen).map(([path, l]) =>
        Object.freeze({
          host: l.host,
          port: l.port,
          allow: Object.freeze([...l.allow]),
          maxMessageSize: l.max_message_size,
          tls: l.tls,
          cert: secret(`${path}.cert`),
          key: secret(`${path}.key`),
          minTlsVersion: l.min_tls_version,
          allowPlaintextAuth: l.allow_plaintext_auth,
          bareNewline: l.bare_newline,
          maxAttachmentSize: l.max_attachment_size ?? DEFAULTS.listen.maxAttachmentSize,
          path,
        }),
      ),
    ),
    limits: Object.freeze({
      connections: data.limits.connections,
      connectionsPerAddress: data.limits.connections_per_address,
      idleTimeoutMs: data.limits.idle_timeout,
      commandTimeoutMs: data.limits.command_timeout,
      dataTimeoutMs: data.limits.data_timeout,
      errorsPerSession: data.limits.errors_per_session,
      recipientsPerMessage: data.limits.recipients_per_message,
      auth: Object.freeze({
        failuresPerAddress: data.limits.auth.failures_per_address,
        failuresPerLogin: data.limits.auth.failures_per_login,
        windowMs: data.limits.auth.window,
        lockoutMs: data.limits.auth.lockout,
        delayMs: data.limits.auth.delay,
        maxDelayMs: data.limits.auth.max_delay,
      }),
    }),
    delivery: data.delivery,
    queue: Object.freeze({
      dir: resolve(base, data.queue.dir ?? env.SENDAS_QUEUE_DIR ?? DEFAULTS.queue.dir),
      retryMs: Object.freeze([...data.queue.retry]),
      maxAgeMs: data.queue.max_age,
      notify: data.queue.notify,
    }),
    stateDir: resolve(base, data.state_dir ?? env.SENDAS_STATE_DIR ?? DEFAULTS.stateDir),
    clients: Object.freeze(clients),
    servers: Object.freeze(servers),
    identities: Object.freeze(identities),
    policy: Object.freeze({ from: data.policy.from, unknownSender: data.policy.unknown_sender }),
    log: Object.freeze({ level: data.log.level, redact: data.log.redact, ...(data.log.format ? { format: data.log.format } : {}) }),
    history: data.history === false ? false : Object.freeze({ keepMs: data.history.keep }),
    http: data.http === false ? false : Object.freeze({ host: data.http.host, port: data.http.port, token: secret('http.token') }),
    warnings: Object.freeze([...warnings]),
    secretFiles: Object.freeze([...(secretFiles ?? secretFilesOf(secrets))]),
    secretKey,
    dkim: dkimKeysOf(data.dkim, secrets, lineOf),
    deliverability: Object.freeze({ check: data.deliverability.check, intervalMs: data.deliverability.interval, dnsServers: Object.freeze([...data.deliverability.dns_servers]) }),
    cluster:
      data.cluster === false
        ? false
        : Object.freeze({
            url: secret('cluster.redis.url')!,
            ...(data.cluster.redis.tls ? { tls: Object.freeze(clusterTls(secret)) } : {}),
            ...(data.cluster.redis.sentinel ? { sentinel: Object.freeze(clusterSentinel(data.cluster.redis.sentinel, secret)) } : {}),
            keyPrefix: data.cluster.redis.key_prefix,
            nodeId: data.cluster.node_id ?? env.HOSTNAME ?? hostname(),
            leaseTtlMs: data.cluster.lease_ttl,
          }),
    defaultServer,
    serversByName: new Map(servers.map((s) => [s.name, s])),
    identitiesByAddress: new Map(identities.map((i) => [addressKey(i.address), i])),
    identitiesByName: new Map(identities.map((i) => [i.name, i])),
    clientsByUsername: new Map(clients.map((c) => [c.username, c])),
  });
}
