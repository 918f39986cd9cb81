import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import { z } from 'zod';
import { DEFAULTS } from './defaults.js';
import { parseDuration, parseRate } from './duration.js';
import { isRecord } from './raw.js';
import { parseSize } from './size.js';

/**
 * The shape of relay.yaml. Only structure and single values are checked here; rules that span
 * several keys (one default server, unique names, references) live in relations.ts so that every problem
 * is reported together, each with its own key path.
 */

/** A secret as written in YAML: a plain string, {env: NAME}, {file: PATH} or {age: CIPHERTEXT}. Resolved in secret-refs.ts. */
export type SecretRef = string | { env: string } | { file: string } | { age: string };

const secretRef = z.custom<SecretRef>(
  (v) =>
    (typeof v === 'string' && v.length > 0) ||
    (isRecord(v) && Object.keys(v).length === 1 && typeof v.env === 'string' && v.env.length > 0) ||
    (isRecord(v) && Object.keys(v).length === 1 && typeof v.file === 'string' && v.file.length > 0) ||
    (isRecord(v) && Object.keys(v).length === 1 && typeof v.age === 'string' && v.age.length > 0),
  { error: 'must be a string, {env: VARIABLE}, {file: PATH} or {age: CIPHERTEXT}' },
);

/**
 * `listen:` with every key commented out is YAML null: it means "all defaults", not an error. The
 * section missing altogether is parsed as `{}` (prefault), so its keys' own defaults apply.
 */
const orDefault = <T extends z.ZodType>(schema: T, empty: z.input<T>) => z.preprocess((v) => (v === null ? undefined : v), schema.prefault(empty));

/** Ops write STARTTLS, Login, CRAM-MD5 as their admin console spells them. */
const lowerEnum = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.preprocess((v) => (typeof v === 'string' ? v.toLowerCase() : v), z.enum(values));

const name = z
  .string({ error: 'must be a name (text)' })
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, { error: 'must start with a letter or digit and use only letters, digits, ".", "_" and "-"' });

const address = z.string({ error: 'must be an email address' }).regex(/^[^\s@<>",;]+@[^\s@<>",;]+\.[^\s@<>",;]+$/, {
  error: 'must be a plain email address such as support@acme.example (no display name, no angle brackets)',
});

const port = z.number({ error: 'must be a port number' }).int().min(0).max(65535);

const size = z.union([z.number(), z.string()], { error: 'must be a size such as 25MB' }).transform((v, ctx) => {
  const bytes = parseSize(v);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size: write a number of bytes or a number with KB, MB or GB (e.g. 25MB)` });
    return z.NEVER;
  }
  return bytes;
});

const duration = z.union([z.number(), z.string()], { error: 'must be a duration such as 30s, 15m, 2h or 2d' }).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration: write a number with s, m, h or d (e.g. 15m)` });
    return z.NEVER;
  }
  return ms;
});

const rate = z.string({ error: 'must be a rate such as 30/min' }).transform((v, ctx) => {
  const r = parseRate(v);
  if (!r) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a rate: write messages per s, min, hour or day (e.g. 30/min)` });
    return z.NEVER;
  }
  return r;
});

/** A positive whole number, or false: a preset's limit turned off. */
const limit = z.union([z.number().int().min(1), z.literal(false)], { error: 'must be a whole number of at least 1, or false to turn the limit off' });

/** Per account, per rolling 24 hours; `false` turns a preset's budget off (all of it, or one key). */
const daily = z.strictObject(
  {
    messages: limit.optional(),
    recipients: limit.optional(),
  },
  { error: 'must be {messages: N, recipients: N} or false' },
);

/** `false` for a key with more than one value: off, each problem inside still told at its own key. */
const offAs = <T extends z.ZodType>(schema: T, off: unknown) => z.preprocess((v) => (v === false ? off : v), schema);

const cidr = z.string().refine(
  (v) => {
    const [addr, prefix, ...rest] = v.split('/');
    if (rest.length > 0 || !addr) return false;
    const family = isIP(addr);
    if (family === 0) return false;
    if (prefix === undefined) return true;
    if (!/^\d{1,3}$/.test(prefix)) return false;
    return Number(prefix) <= (family === 4 ? 32 : 128);
  },
  { error: 'must be an IP address or a CIDR range such as 192.168.0.0/16 or ::1' },
);

const listen = z.strictObject({
  host: z.string().min(1).default(DEFAULTS.listen.host),
  port: port.default(DEFAULTS.listen.port),
  allow: z.array(cidr).default([...DEFAULTS.listen.allow]),
  max_message_size: size.default(DEFAULTS.listen.maxMessageSize),
  tls: lowerEnum(['none', 'starttls', 'implicit'] as const).default(DEFAULTS.listen.tls),
  cert: secretRef.optional(),
  key: secretRef.optional(),
  min_tls_version: z.enum(['TLSv1.2', 'TLSv1.3'], { error: 'must be TLSv1.2 or TLSv1.3' }).default(DEFAULTS.listen.minTlsVersion),
  allow_plaintext_auth: z.boolean().default(false),
  bare_newline: lowerEnum(['reject', 'normalize'] as const).default(DEFAULTS.listen.bareNewline),
  // no default: without it, attachments are limited only by max_message_size
  max_attachment_size: size.optional(),
});

/** One listener as a mapping (the form of the first releases), or a list of them. */
const listeners = z.union([listen, z.array(listen).min(1, { error: 'needs at least one listener (or leave `listen:` out for the default one)' })]);
const count = z.number({ error: 'must be a whole number' }).int().min(1, { error: 'must be at least 1' });

const authLimits = z.strictObject({
  failures_per_address: count.default(DEFAULTS.limits.auth.failuresPerAddress),
  failures_per_login: count.default(DEFAULTS.limits.auth.failuresPerLogin),
  window: duration.default(DEFAULTS.limits.auth.windowMs),
  lockout: duration.default(DEFAULTS.limits.auth.lockoutMs),
  delay: duration.default(DEFAULTS.limits.auth.delayMs),
  max_delay: duration.default(DEFAULTS.limits.auth.maxDelayMs),
});

const limits = z.strictObject({
  connections: count.default(DEFAULTS.limits.connections),
  connections_per_address: count.default(DEFAULTS.limits.connectionsPerAddress),
  idle_timeout: duration.default(DEFAULTS.limits.idleTimeoutMs),
  command_timeout: duration.default(DEFAULTS.limits.commandTimeoutMs),
  data_timeout: duration.default(DEFAULTS.limits.dataTimeoutMs),
  errors_per_session: count.default(DEFAULTS.limits.errorsPerSession),
  recipients_per_message: count.default(DEFAULTS.limits.recipientsPerMessage),
  auth: orDefault(authLimits, {}),
});

const client = z.strictObject({
  username: z.string().min(1, { error: 'must not be empty' }),
  password: secretRef,
  send_as: z.array(name).min(1, { error: 'is empty: list the channels/agents this login may send as, or remove send_as to allow all' }).optional(),
});

const authMethod = lowerEnum(['none', 'plain', 'login', 'cram-md5', 'xoauth2'] as const);

const oauth = z.strictObject({
  tenant: z.string().min(1).optional(),
  client_id: z.string().min(1, { error: 'must not be empty' }),
  client_secret: secretRef.optional(),
  grant: lowerEnum(['client_credentials', 'refresh_token'] as const).optional(),
  token_url: z.string().regex(/^https?:\/\/\S+$/, { error: 'must be an http(s) URL' }).optional(),
  scope: z.string().min(1).optional(),
  refresh_token: secretRef.optional(),
});

const tls = z.strictObject({
  ca: secretRef.optional(),
  servername: z.string().min(1).optional(),
  min_version: z.enum(['TLSv1.2', 'TLSv1.3'], { error: 'must be TLSv1.2 or TLSv1.3' }).optional(),
  reject_unauthorized: z.boolean().default(DEFAULTS.server.rejectUnauthorized),
});

const alternate = z.strictObject({
  host: z.string().min(1, { error: 'must not be empty' }),
  port: port.optional(),
  cooldown: duration.default(DEFAULTS.server.alternateCooldownMs),
});

const server = z.strictObject({
  name,
  default: z.boolean().default(false),
  type: lowerEnum(['smtp', 'graph'] as const).default(DEFAULTS.server.type),
  preset: lowerEnum(['office365', 'gmail'] as const).optional(),
  host: z.string().min(1, { error: 'must not be empty' }).optional(),
  port: port.optional(),
  security: lowerEnum(['none', 'starttls', 'tls'] as const).optional(),
  auth: authMethod.optional(),
  username: z.string().min(1).optional(),
  password: secretRef.optional(),
  address: address.optional(),
  oauth: oauth.optional(),
  tls: tls.optional(),
  allow_plaintext_auth: z.boolean().default(false),
  proxy: z
    .string()
    .regex(/^(socks5?|socks4a?|socks5h|http):\/\/[^\s/]+(:\d+)?\/?$/i, { error: 'must be socks5://host:port or http://host:port' })
    .optional(),
  graph_url: z.string().regex(/^https?:\/\/\S+$/, { error: 'must be an http(s) URL' }).optional(),
  save_to_sent_items: z.boolean().optional(),
  alternate: alternate.optional(),
  max_recipients: limit.optional(),
  rate: offAs(rate.optional(), undefined),
  /** Concurrent upstream transactions per account. */
  connections: z.number({ error: 'must be a whole number' }).int().min(1, { error: 'must be at least 1' }).max(100).default(DEFAULTS.server.connections),
  daily: offAs(daily.optional(), { messages: false, recipients: false }),
});

const queue = z.strictObject({
  // no default here: SENDAS_QUEUE_DIR comes between the file and the default (snapshot.ts)
  dir: z.string().min(1).optional(),
  retry: z.array(duration).min(1, { error: 'needs at least one wait' }).default([...DEFAULTS.queue.retryMs]),
  max_age: duration.default(DEFAULTS.queue.maxAgeMs),
  notify: address.optional(),
});

const overrideAccount = z.strictObject({
  username: z.string().min(1).optional(),
  password: secretRef.optional(),
  auth: authMethod.optional(),
  oauth: z.strictObject({ refresh_token: secretRef.optional() }).optional(),
});

const override = z
  .union([z.null(), overrideAccount])
  // `override:` with nothing under it still means "use this identity's own account"
  .transform((v) => v ?? {});

const identity = z.strictObject({
  name,
  address,
  display_name: z.string().optional(),
  server: name.optional(),
  override: override.optional(),
});

const log = z.strictObject({
  level: lowerEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const).default(DEFAULTS.log.level),
  // no default: line on a terminal, json otherwise (log.ts)
  format: lowerEnum(['json', 'line', 'pretty'] as const).optional(),
  redact: z.boolean({ error: 'must be true or false' }).default(DEFAULTS.log.redact),
});

const historyKeep = z.strictObject({
  keep: duration.default(DEFAULTS.history.keepMs),
});

const history = z.union([z.literal(false), historyKeep], { error: 'must be false, or a mapping with keep (e.g. keep: 30d)' });

const httpEndpoint = z.strictObject({
  host: z.string().min(1).default(DEFAULTS.http.host),
  port: port.default(DEFAULTS.http.port),
  token: secretRef.optional(),
});

/** The age identity file that opens {age: …} secrets (config/secret-key.ts); no default: SENDAS_SECRET_KEY_FILE comes next. */
const secrets = z.strictObject({
  key_file: z.string({ error: 'must be the path of an age identity file' }).min(1).optional(),
});

/** Several relays sharing limits, tokens and lockouts through Redis (src/cluster/); off by default. */
// rediss:// to a Redis whose certificate a private CA signed, and the client certificate Redis
// asks for by default when it speaks TLS (tls-auth-clients yes)
const clusterRedisTls = z.strictObject({
  ca: secretRef.optional(),
  cert: secretRef.optional(),
  key: secretRef.optional(),
});

// Redis Sentinel: the master is found (and followed through a failover) by asking the Sentinels
const sentinelHost = z.string({ error: 'must be HOST:PORT of a Sentinel, e.g. 10.0.0.5:26379' }).regex(/^(\[[0-9a-fA-F:]+\]|[^\s:\[\]]+):\d{1,5}$/, { error: 'must be HOST:PORT of a Sentinel, e.g. 10.0.0.5:26379' });
const clusterSentinel = z.strictObject({
  master: z.string({ error: "must be the master's name as the Sentinels know it (sentinel monitor NAME …)" }).min(1),
  hosts: z.array(sentinelHost).min(1, { error: 'must list at least one Sentinel' }),
  password: secretRef.optional(),
});

const clusterRedis = z.strictObject({
  url: secretRef,
  tls: clusterRedisTls.optional(),
  sentinel: clusterSentinel.optional(),
  key_prefix: z.string({ error: 'must be a key prefix (text)' }).regex(/^[A-Za-z0-9._:-]+$/, { error: 'must use only letters, digits, ".", "_", ":" and "-"' }).default(DEFAULTS.cluster.keyPrefix),
});

const clusterSection = z.strictObject({
  redis: clusterRedis,
  // no default here: the host name (a StatefulSet pod's own name), taken at start (snapshot.ts)
  node_id: name.optional(),
  lease_ttl: duration.refine((ms) => ms >= 2_000, { error: 'must be at least 2s (leases are renewed every third of it)' }).default(DEFAULTS.cluster.leaseTtlMs),
});

const cluster = z.union([z.literal(false), clusterSection], { error: 'must be false, or a mapping with redis: {url: …}' });

const http = z.union([z.literal(false), httpEndpoint], { error: 'must be false, or a mapping with host, port and token' });

const policy = z.strictObject({
  from: lowerEnum(['rewrite', 'reject'] as const).default(DEFAULTS.policy.from),
  unknown_sender: lowerEnum(['reject', 'default'] as const).default(DEFAULTS.policy.unknownSender),
});

/** A DNS label sequence: a DKIM selector ("s2026") or a domain ("acme.example"). */
export const DNS_NAME = /^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/;
// an internationalized domain is checked in the A-label form it is signed with (d=xn--…)
const dnsName = (what: string) =>
  z.string({ error: `must be a ${what}` }).refine((v) => DNS_NAME.test(domainToASCII(v) || v), { error: `must be a ${what} (letters, digits, "-", "_", labels separated by ".")` });

const headerName = z.string({ error: 'must be a header field name' }).regex(/^[\x21-\x39\x3b-\x7e]+$/, { error: 'must be a header field name such as Subject' });

/** One signing key per From domain (config/dkim.ts checks the key and the duplicates). */
const dkim = z.strictObject({
  domain: dnsName('domain such as acme.example'),
  selector: dnsName('selector such as s2026'),
  key: secretRef,
  algorithm: lowerEnum(['rsa-sha256', 'ed25519-sha256'] as const).optional(),
  headers: z.array(headerName).min(1, { error: 'needs at least From' }).optional(),
});

/** `sendas check --dns` run by the relay in the background (src/deliverability/). */
const deliverability = z.strictObject({
  check: z.boolean({ error: 'must be true or false' }).default(DEFAULTS.deliverability.check),
  interval: duration.default(DEFAULTS.deliverability.intervalMs),
  // Node's resolver takes addresses only, no names: a name would need a resolver to find the resolver
  dns_servers: z
    .array(
      z.string().refine(
        (v) => {
          const m = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(v) ?? /^([^:]+)(?::(\d{1,5}))?$/.exec(v);
          return m ? isIP(m[1]!) !== 0 && (m[2] === undefined || Number(m[2]) <= 65535) : isIP(v) === 6;
        },
        { error: 'must be an IP address with an optional port: 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:53' },
      ),
    )
    .default([]),
});

export const configSchema = z.strictObject({
  listen: orDefault(listeners, {}),
  limits: orDefault(limits, {}),
  delivery: lowerEnum(['queue', 'passthrough'] as const).default(DEFAULTS.delivery),
  queue: orDefault(queue, {}),
  clients: orDefault(z.array(client), []),
  servers: z.array(server, { error: 'must be a list of servers' }).min(1, { error: 'at least one server is needed' }),
  channels: orDefault(z.array(identity), []),
  agents: orDefault(z.array(identity), []),
  policy: orDefault(policy, {}),
  log: orDefault(log, {}),
  // no default here: SENDAS_STATE_DIR comes between the file and the default (snapshot.ts)
  state_dir: z.string().min(1).optional(),
  http: orDefault(http, {}),
  dkim: orDefault(z.array(dkim, { error: 'must be a list of {domain, selector, key}' }), []),
  deliverability: orDefault(deliverability, {}),
  history: orDefault(history, {}),
  secrets: orDefault(secrets, {}),
  cluster: z.preprocess((v) => (v === null || v === undefined ? false : v), cluster),
});

export type RawConfig = z.infer<typeof configSchema>;
export type RawServer = z.infer<typeof server>;
export type RawIdentity = z.infer<typeof identity>;

/** Every key the schema knows at each level, for "did you mean …" hints on typos. */
export const KNOWN_KEYS = {
  root: Object.keys(configSchema.shape) as string[],
  listen: Object.keys(listen.shape),
  limits: Object.keys(limits.shape),
  limitsAuth: Object.keys(authLimits.shape),
  clients: Object.keys(client.shape),
  servers: Object.keys(server.shape),
  tls: Object.keys(tls.shape),
  oauth: Object.keys(oauth.shape),
  alternate: Object.keys(alternate.shape),
  daily: Object.keys(daily.shape),
  queue: Object.keys(queue.shape),
  identity: Object.keys(identity.shape),
  override: Object.keys(overrideAccount.shape),
  policy: Object.keys(policy.shape),
  log: Object.keys(log.shape),
  http: Object.keys(httpEndpoint.shape),
  dkim: Object.keys(dkim.shape),
  deliverability: Object.keys(deliverability.shape),
  history: Object.keys(historyKeep.shape),
  secrets: Object.keys(secrets.shape),
  cluster: Object.keys(clusterSection.shape),
  clusterRedis: Object.keys(clusterRedis.shape),
};
