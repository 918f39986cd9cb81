import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { addressKey } from '../mail/address.js';
import { configSchema, KNOWN_KEYS, type RawConfig, type SecretRef } from './schema.js';
import { withPreset } from './presets.js';
import { Secret } from './secret.js';
import type {
  AuthMethod,
  ClientConfig,
  ConfigSnapshot,
  ConfigWarning,
  IdentityConfig,
  IdentityKind,
  Security,
  ServerConfig,
} from './types.js';

export interface ConfigIssue {
  /** Key path such as "servers[0].security"; "" for the file as a whole. */
  readonly path: string;
  readonly line: number | undefined;
  readonly col: number | undefined;
  readonly message: string;
}

export class ConfigError extends Error {
  readonly issues: readonly ConfigIssue[];
  readonly file: string;
  /** Secret files the file references, readable or not: a watcher keeps an eye on them. */
  readonly secretFiles: readonly string[];

  constructor(file: string, issues: ConfigIssue[], secretFiles: readonly string[] = []) {
    super(formatIssues(file, issues));
    this.name = 'ConfigError';
    this.file = file;
    this.issues = issues;
    this.secretFiles = secretFiles;
  }
}

export function formatIssues(file: string, issues: readonly ConfigIssue[]): string {
  const head = `${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'} in the configuration`;
  return [head, ...issues.map((i) => `  ${formatIssue(file, i)}`)].join('\n');
}

export function formatIssue(file: string, issue: ConfigIssue): string {
  const where = issue.line !== undefined ? `${file}:${issue.line}:${issue.col ?? 1}` : file;
  return issue.path ? `${where} ${issue.path}: ${issue.message}` : `${where} ${issue.message}`;
}

export interface LoadOptions {
  /** Environment to resolve {env: NAME} secrets from; defaults to process.env. */
  readonly env?: NodeJS.ProcessEnv;
}

/** Reads and validates the file; throws ConfigError listing every problem found. */
export function loadConfigFile(file: string, opts: LoadOptions = {}): ConfigSnapshot {
  const absolute = resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (err) {
    throw new ConfigError(absolute, [{ path: '', line: undefined, col: undefined, message: `cannot read the configuration file (${errnoText(err)})` }]);
  }
  return parseConfig(text, absolute, opts);
}

type Path = readonly (string | number)[];

/** Validates YAML text; `file` names it in messages and anchors relative {file: …} secret paths. */
export function parseConfig(text: string, file: string, opts: LoadOptions = {}): ConfigSnapshot {
  const env = opts.env ?? process.env;
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const issues: ConfigIssue[] = [];

  const at = (path: Path, message: string, onKey = false): void => {
    const pos = positionOf(doc, lineCounter, path, onKey);
    issues.push({ path: formatPath(path), line: pos?.line, col: pos?.col, message });
  };

  for (const err of doc.errors) {
    const pos = lineCounter.linePos(err.pos[0]);
    issues.push({ path: '', line: pos.line, col: pos.col, message: `YAML syntax: ${yamlErrorText(err.code, err.message)}` });
  }
  if (issues.length > 0) throw new ConfigError(file, issues);

  const raw: unknown = doc.toJS();
  if (!isRecord(raw)) {
    throw new ConfigError(file, [{ path: '', line: 1, col: 1, message: 'the file must be a YAML mapping with at least a `servers:` list' }]);
  }

  // a preset fills in what the YAML leaves out; explicit keys win (config/presets.ts)
  if (Array.isArray(raw.servers)) raw.servers = raw.servers.map((srv: unknown) => (isRecord(srv) ? withPreset(srv) : srv));
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) reportSchemaIssue(issue, raw, at);
  }

  // Cross-key rules run on the raw document even when the schema failed, so one run of
  // `sendas check` lists every problem rather than one layer at a time.
  const warnings: ConfigWarning[] = [];
  const secrets = new SecretResolver(dirname(file), env, at);
  checkRelations(raw, at, warnings);
  const resolved = resolveAllSecrets(raw, secrets);

  if (issues.length > 0 || !parsed.success) {
    throw new ConfigError(file, issues.length > 0 ? sortIssues(issues) : [{ path: '', line: undefined, col: undefined, message: 'invalid configuration' }], secrets.files);
  }
  const rawQueueDir = isRecord(raw.queue) && typeof raw.queue.dir === 'string' ? raw.queue.dir : undefined;
  return buildSnapshot(parsed.data, resolved, file, text, warnings, rawQueueDir, env, secrets.files, raw);
}

// ---------------------------------------------------------------------------------------------
// schema issues

function reportSchemaIssue(issue: z.core.$ZodIssue, raw: Record<string, unknown>, at: (p: Path, m: string, onKey?: boolean) => void): void {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeysAt(path);
    for (const key of issue.keys) {
      const hint = closest(key, known);
      at([...path, key], `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}; known keys here: ${known.join(', ')}`, true);
    }
    return;
  }
  if (getIn(raw, path) === undefined && issue.code === 'invalid_type') {
    at(path, 'is required');
    return;
  }
  at(path, issue.message);
}

function knownKeysAt(path: Path): string[] {
  const last = [...path].reverse().find((p): p is string => typeof p === 'string');
  if (last === 'oauth' && path.includes('override')) return ['refresh_token'];
  switch (last) {
    case 'oauth':
      return KNOWN_KEYS.oauth;
    case undefined:
      return KNOWN_KEYS.root;
    case 'listen':
      return KNOWN_KEYS.listen;
    case 'clients':
      return KNOWN_KEYS.clients;
    case 'servers':
      return KNOWN_KEYS.servers;
    case 'tls':
      return KNOWN_KEYS.tls;
    case 'alternate':
      return KNOWN_KEYS.alternate;
    case 'queue':
      return KNOWN_KEYS.queue;
    case 'channels':
    case 'agents':
      return KNOWN_KEYS.identity;
    case 'override':
      return KNOWN_KEYS.override;
    case 'policy':
      return KNOWN_KEYS.policy;
    case 'log':
      return KNOWN_KEYS.log;
    case 'http':
      return KNOWN_KEYS.http;
    default:
      return [];
  }
}

// ---------------------------------------------------------------------------------------------
// rules that span keys

interface RawServerView {
  index: number;
  name: string | undefined;
  isDefault: boolean;
}

function checkRelations(raw: Record<string, unknown>, at: (p: Path, m: string, onKey?: boolean) => void, warnings: ConfigWarning[]): void {
  const servers = asArray(raw.servers);
  const serverViews: RawServerView[] = servers.map((s, index) => ({
    index,
    name: isRecord(s) && typeof s.name === 'string' ? s.name : undefined,
    isDefault: isRecord(s) && s.default === true,
  }));

  const serverNames = new Map<string, number>();
  for (const s of serverViews) {
    if (s.name === undefined) continue;
    const first = serverNames.get(s.name);
    if (first !== undefined) at(['servers', s.index, 'name'], `duplicate server name "${s.name}" (already used by servers[${first}])`);
    else serverNames.set(s.name, s.index);
  }

  const defaults = serverViews.filter((s) => s.isDefault);
  if (servers.length > 1 && defaults.length === 0) {
    at(['servers'], 'no server is the default: set `default: true` on exactly one server');
  }
  if (defaults.length > 1) {
    for (const s of defaults.slice(1)) {
      at(['servers', s.index, 'default'], `only one server can be the default, and servers[${defaults[0]!.index}] ("${defaults[0]!.name}") already is`);
    }
  }

  servers.forEach((s, i) => {
    if (!isRecord(s)) return;
    const auth = effectiveAuth(s);
    const type = typeof s.type === 'string' ? s.type.toLowerCase() : 'smtp';
    const security = typeof s.security === 'string' ? s.security.toLowerCase() : 'starttls';
    const oauth = isRecord(s.oauth) ? s.oauth : undefined;
    if (type === 'smtp' && s.host === undefined) at(['servers', i], 'needs `host:` (or a `preset:`)');
    if (PASSWORD_AUTH.has(auth) && s.username === undefined) {
      at(['servers', i], `auth is ${auth} but no username is set: add \`username:\` or set \`auth: none\``);
    }
    if (PASSWORD_AUTH.has(auth) && s.password === undefined) {
      at(['servers', i], `auth is ${auth} but no password is set: add \`password:\` (a string, {env: NAME} or {file: PATH})`);
    }
    if ((auth === 'xoauth2' || type === 'graph') && !oauth) {
      at(['servers', i], `${type === 'graph' ? 'type graph' : 'auth xoauth2'} needs \`oauth:\` (client_id, client_secret, grant; token_url or preset office365 with tenant)`);
    }
    if (oauth) {
      const grant = typeof oauth.grant === 'string' ? oauth.grant.toLowerCase() : 'client_credentials';
      if (oauth.token_url === undefined) {
        at(['servers', i, 'oauth'], s.preset === 'office365' ? 'needs `tenant:` (e.g. contoso.onmicrosoft.com) or `token_url:`' : 'needs `token_url:` (or a `preset:`)');
      }
      if (grant === 'client_credentials' && oauth.client_secret === undefined) {
        at(['servers', i, 'oauth'], 'grant client_credentials needs `client_secret:`');
      }
      if (type === 'graph' && grant !== 'client_credentials') {
        at(['servers', i, 'oauth', 'grant'], 'type graph sends with the app token: use grant client_credentials');
      }
    }
    if (s.username === undefined && s.address === undefined) {
      at(['servers', i], 'needs `address:` (the mailbox messages are sent from) when it has no username');
    }
    if (s.address === undefined && typeof s.username === 'string' && !s.username.includes('@')) {
      at(['servers', i, 'username'], `"${s.username}" is not an email address, so set \`address:\` to the account's mailbox`);
    }
    // a password or token in plain text: fine on this host, refused towards any other unless written explicitly
    if (type === 'smtp' && auth !== 'none' && auth !== 'cram-md5' && security === 'none') {
      const host = typeof s.host === 'string' ? s.host : '';
      if (!isLoopbackHost(host) && s.allow_plaintext_auth !== true) {
        at(['servers', i, 'security'], `auth ${auth} with security: none would send the ${auth === 'xoauth2' ? 'access token' : 'password'} in plain text to ${host}; use starttls or tls, or set \`allow_plaintext_auth: true\` on this server`);
      } else {
        warnings.push({
          path: `servers[${i}]`,
          message: `server "${String(s.name)}" sends its ${auth === 'xoauth2' ? 'access token' : 'password'} in plain text (auth ${auth} with security: none)${isLoopbackHost(host) ? ' to this host' : ', allowed by allow_plaintext_auth'}`,
        });
      }
    }
    if (isRecord(s.tls) && s.tls.reject_unauthorized === false) {
      warnings.push({ path: `servers[${i}].tls.reject_unauthorized`, message: `server "${String(s.name)}" accepts any TLS certificate: its password can be intercepted` });
    }
  });

  const identityNames = new Map<string, string>();
  const identityAddresses = new Map<string, string>();
  for (const kind of ['channels', 'agents'] as const) {
    asArray(raw[kind]).forEach((item, i) => {
      if (!isRecord(item)) return;
      const here = `${kind}[${i}]`;
      if (typeof item.name === 'string') {
        const first = identityNames.get(item.name);
        if (first !== undefined) at([kind, i, 'name'], `duplicate name "${item.name}" (already used by ${first}; channels and agents share one set of names)`);
        else identityNames.set(item.name, here);
      }
      if (typeof item.address === 'string') {
        const key = addressKey(item.address);
        const first = identityAddresses.get(key);
        if (first !== undefined) at([kind, i, 'address'], `address ${item.address} is already used by ${first} (addresses are compared case-insensitively)`);
        else identityAddresses.set(key, here);
      }
      if (typeof item.server === 'string' && !serverNames.has(item.server)) {
        const hint = closest(item.server, [...serverNames.keys()]);
        at([kind, i, 'server'], `unknown server "${item.server}"${hint ? ` (did you mean "${hint}"?)` : ''}; servers are: ${[...serverNames.keys()].join(', ') || '(none)'}`);
      }
      const override = item.override;
      const serverName = typeof item.server === 'string' ? item.server : defaults[0]?.name ?? serverViews[0]?.name;
      const server = servers.find((s) => isRecord(s) && s.name === serverName);
      const overrideAuth = isRecord(override) && typeof override.auth === 'string' ? (override.auth.toLowerCase() as AuthMethod) : undefined;
      if (overrideAuth === 'xoauth2' && !(isRecord(server) && isRecord(server.oauth))) {
        at([kind, i, 'override', 'auth'], `auth xoauth2 needs \`oauth:\` on server "${String(serverName)}" (client_id, client_secret, token_url or preset)`);
      }
      if (override !== undefined && (override === null || (isRecord(override) && override.password === undefined))) {
        const method = overrideAuth ?? (isRecord(server) ? effectiveAuth(server) : 'login');
        if (PASSWORD_AUTH.has(method)) {
          warnings.push({
            path: `${here}.override`,
            message: `${kind === 'channels' ? 'channel' : 'agent'} "${String(item.name)}" overrides the server account but has no password: its messages are refused until \`${here}.override.password\` is set`,
          });
        }
      }
    });
  }

  const clientNames = new Map<string, number>();
  asArray(raw.clients).forEach((c, i) => {
    if (!isRecord(c)) return;
    if (typeof c.username === 'string') {
      const first = clientNames.get(c.username);
      if (first !== undefined) at(['clients', i, 'username'], `duplicate client username "${c.username}" (already clients[${first}])`);
      else clientNames.set(c.username, i);
    }
    asArray(c.send_as).forEach((n, j) => {
      if (typeof n === 'string' && !identityNames.has(n)) {
        const hint = closest(n, [...identityNames.keys()]);
        at(['clients', i, 'send_as', j], `"${n}" is not the name of a channel or agent${hint ? ` (did you mean "${hint}"?)` : ''}`);
      }
    });
  });
}

/** auth when the YAML doesn't say: xoauth2 with an oauth block or for Graph, login with a username, else none. */
function effectiveAuth(server: { auth?: unknown; oauth?: unknown; type?: unknown; username?: unknown }): AuthMethod {
  if (typeof server.auth === 'string') return server.auth.toLowerCase() as AuthMethod;
  if (isRecord(server.oauth) || (typeof server.type === 'string' && server.type.toLowerCase() === 'graph')) return 'xoauth2';
  return server.username !== undefined ? 'login' : 'none';
}

const PASSWORD_AUTH = new Set<AuthMethod>(['plain', 'login', 'cram-md5']);

function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

// ---------------------------------------------------------------------------------------------
// secrets

class SecretResolver {
  readonly files: string[] = [];

  constructor(
    private readonly baseDir: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly at: (p: Path, m: string) => void,
  ) {}

  resolve(ref: unknown, path: Path): Secret | undefined {
    if (typeof ref === 'string') return new Secret(ref, 'inline');
    if (!isRecord(ref)) return undefined; // the schema reports the shape
    if (typeof ref.env === 'string') {
      const value = this.env[ref.env];
      if (value === undefined || value === '') {
        this.at(path, `environment variable ${ref.env} is ${value === undefined ? 'not set' : 'empty'}`);
        return undefined;
      }
      return new Secret(value, `env ${ref.env}`);
    }
    if (typeof ref.file === 'string') {
      const file = resolve(this.baseDir, ref.file);
      this.files.push(file);
      try {
        // one trailing newline is what `echo` and most editors add; anything else is the secret
        const value = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
        if (value === '') {
          this.at(path, `secret file ${file} is empty`);
          return undefined;
        }
        return new Secret(value, `file ${file}`);
      } catch (err) {
        this.at(path, `cannot read secret file ${file} (${errnoText(err)})`);
        return undefined;
      }
    }
    return undefined;
  }
}

interface ResolvedSecrets {
  clients: (Secret | undefined)[];
  servers: (Secret | undefined)[];
  serverCas: (Secret | undefined)[];
  channels: (Secret | undefined)[];
  agents: (Secret | undefined)[];
  oauthClientSecrets: (Secret | undefined)[];
  oauthRefreshTokens: (Secret | undefined)[];
  channelRefreshTokens: (Secret | undefined)[];
  agentRefreshTokens: (Secret | undefined)[];
}

function resolveAllSecrets(raw: Record<string, unknown>, secrets: SecretResolver): ResolvedSecrets {
  const field = (list: unknown, key: string, name: string): (Secret | undefined)[] =>
    asArray(list).map((item, i) => (isRecord(item) && item[key] !== undefined ? secrets.resolve(item[key], [name, i, key]) : undefined));
  return {
    clients: field(raw.clients, 'password', 'clients'),
    servers: field(raw.servers, 'password', 'servers'),
    serverCas: asArray(raw.servers).map((s, i) =>
      isRecord(s) && isRecord(s.tls) && s.tls.ca !== undefined ? secrets.resolve(s.tls.ca as SecretRef, ['servers', i, 'tls', 'ca']) : undefined,
    ),
    channels: asArray(raw.channels).map((c, i) =>
      isRecord(c) && isRecord(c.override) && c.override.password !== undefined ? secrets.resolve(c.override.password, ['channels', i, 'override', 'password']) : undefined,
    ),
    agents: asArray(raw.agents).map((c, i) =>
      isRecord(c) && isRecord(c.override) && c.override.password !== undefined ? secrets.resolve(c.override.password, ['agents', i, 'override', 'password']) : undefined,
    ),
    oauthClientSecrets: asArray(raw.servers).map((s, i) =>
      isRecord(s) && isRecord(s.oauth) && s.oauth.client_secret !== undefined ? secrets.resolve(s.oauth.client_secret, ['servers', i, 'oauth', 'client_secret']) : undefined,
    ),
    oauthRefreshTokens: asArray(raw.servers).map((s, i) =>
      isRecord(s) && isRecord(s.oauth) && s.oauth.refresh_token !== undefined ? secrets.resolve(s.oauth.refresh_token, ['servers', i, 'oauth', 'refresh_token']) : undefined,
    ),
    channelRefreshTokens: identityRefreshTokens(raw.channels, 'channels', secrets),
    agentRefreshTokens: identityRefreshTokens(raw.agents, 'agents', secrets),
  };
}

function identityRefreshTokens(list: unknown, key: string, secrets: SecretResolver): (Secret | undefined)[] {
  return asArray(list).map((c, i) => {
    const oauth = isRecord(c) && isRecord(c.override) && isRecord(c.override.oauth) ? c.override.oauth : undefined;
    return oauth && oauth.refresh_token !== undefined ? secrets.resolve(oauth.refresh_token, [key, i, 'override', 'oauth', 'refresh_token']) : undefined;
  });
}

// ---------------------------------------------------------------------------------------------
// snapshot

const DEFAULT_PORT: Record<Security, number> = { none: 25, starttls: 587, tls: 465 };

function buildSnapshot(
  data: RawConfig,
  secrets: ResolvedSecrets,
  file: string,
  text: string,
  warnings: ConfigWarning[],
  rawQueueDir: string | undefined,
  env: NodeJS.ProcessEnv,
  secretFiles: readonly string[],
  rawRoot: unknown,
): ConfigSnapshot {
  const servers: ServerConfig[] = data.servers.map((s, i) => {
    const security = s.security ?? 'starttls';
    return Object.freeze({
      name: s.name,
      // a lone server is the default without saying so; with several, exactly one says so
      isDefault: s.default || data.servers.length === 1,
      type: s.type,
      preset: s.preset,
      host: s.host ?? '',
      port: s.port ?? DEFAULT_PORT[security],
      security,
      auth: effectiveAuth(s),
      username: s.username,
      password: secrets.servers[i],
      address: s.address ?? s.username ?? '',
      tls: Object.freeze({
        ca: secrets.serverCas[i]?.reveal(),
        servername: s.tls?.servername,
        minVersion: s.tls?.min_version,
        rejectUnauthorized: s.tls?.reject_unauthorized ?? true,
      }),
      oauth: s.oauth
        ? Object.freeze({
            tenant: s.oauth.tenant,
            clientId: s.oauth.client_id,
            clientSecret: secrets.oauthClientSecrets[i],
            grant: s.oauth.grant ?? 'client_credentials',
            tokenUrl: s.oauth.token_url ?? '',
            scope: s.oauth.scope,
            refreshToken: secrets.oauthRefreshTokens[i],
          })
        : undefined,
      allowPlaintextAuth: s.allow_plaintext_auth,
      proxy: s.proxy,
      graphUrl: s.graph_url ?? 'https://graph.microsoft.com',
      alternate: s.alternate
        ? Object.freeze({ host: s.alternate.host, port: s.alternate.port ?? s.port ?? DEFAULT_PORT[security], cooldownMs: s.alternate.cooldown })
        : undefined,
      maxRecipients: s.max_recipients,
      rate: s.rate ? Object.freeze({ ...s.rate }) : undefined,
      path: `servers[${i}]`,
    });
  });
  const defaultServer = servers.find((s) => s.isDefault)!;

  const identity = (kind: IdentityKind, list: RawConfig['channels'], passwords: (Secret | undefined)[], refreshTokens: (Secret | undefined)[], key: string) =>
    list.map((c, i): IdentityConfig =>
      Object.freeze({
        kind,
        name: c.name,
        address: c.address,
        displayName: c.display_name,
        serverName: c.server,
        override:
          c.override === undefined
            ? undefined
            : Object.freeze({ username: c.override.username ?? c.address, password: passwords[i], auth: c.override.auth, refreshToken: refreshTokens[i] }),
        path: `${key}[${i}]`,
      }),
    );
  const identities = [
    ...identity('channel', data.channels, secrets.channels, secrets.channelRefreshTokens, 'channels'),
    ...identity('agent', data.agents, secrets.agents, secrets.agentRefreshTokens, 'agents'),
  ];

  const clients: ClientConfig[] = data.clients.map((c, i) =>
    Object.freeze({ username: c.username, password: secrets.clients[i]!, sendAs: c.send_as ? Object.freeze([...c.send_as]) : undefined, path: `clients[${i}]` }),
  );

  return Object.freeze({
    version: configVersion(text, secrets),
    file,
    listen: Object.freeze({
      host: data.listen.host,
      port: data.listen.port,
      allow: Object.freeze([...data.listen.allow]),
      maxMessageSize: data.listen.max_message_size,
    }),
    delivery: data.delivery,
    queue: Object.freeze({
      // relative to the config file, like {file: …} secrets, so the relay finds it whatever its working
      // directory; without `dir`, SENDAS_QUEUE_DIR (set by the Docker image) or ./var/queue
      dir: resolve(dirname(file), rawQueueDir ?? env.SENDAS_QUEUE_DIR ?? data.queue.dir),
      retryMs: Object.freeze([...data.queue.retry]),
      maxAgeMs: data.queue.max_age,
      notify: data.queue.notify,
    }),
    stateDir: resolve(dirname(file), (isRecord(rawRoot) && typeof rawRoot.state_dir === 'string' ? rawRoot.state_dir : undefined) ?? env.SENDAS_STATE_DIR ?? data.state_dir),
    clients: Object.freeze(clients),
    servers: Object.freeze(servers),
    identities: Object.freeze(identities),
    policy: Object.freeze({ from: data.policy.from, unknownSender: data.policy.unknown_sender }),
    log: Object.freeze({ level: data.log.level }),
    http: data.http === false ? false : Object.freeze({ host: data.http.host, port: data.http.port }),
    warnings: Object.freeze(warnings),
    secretFiles: Object.freeze([...secretFiles]),
    defaultServer,
    serversByName: new Map(servers.map((s) => [s.name, s])),
    identitiesByAddress: new Map(identities.map((i) => [addressKey(i.address), i])),
    identitiesByName: new Map(identities.map((i) => [i.name, i])),
    clientsByUsername: new Map(clients.map((c) => [c.username, c])),
  });
}

/**
 * A short hash that changes when the file or any secret it references changes (a password
 * rotated in its file is a new config too). Secrets go in as their own digests, so the version
 * can't be used to test a guessed password without also knowing the whole file.
 */
function configVersion(text: string, secrets: ResolvedSecrets): string {
  const hash = createHash('sha256').update(text);
  const all = [
    ...secrets.clients,
    ...secrets.servers,
    ...secrets.serverCas,
    ...secrets.channels,
    ...secrets.agents,
    ...secrets.oauthClientSecrets,
    ...secrets.oauthRefreshTokens,
    ...secrets.channelRefreshTokens,
    ...secrets.agentRefreshTokens,
  ];
  for (const secret of all) hash.update('\0').update(secret ? createHash('sha256').update(secret.reveal()).digest() : '-');
  return hash.digest('hex').slice(0, 12);
}

// ---------------------------------------------------------------------------------------------
// helpers

function positionOf(doc: Document, lc: LineCounter, path: Path, onKey: boolean): { line: number; col: number } | undefined {
  // walk up until a node that exists: a missing key is reported where its parent is
  for (let depth = path.length; depth >= 0; depth--) {
    const sub = path.slice(0, depth);
    if (onKey && depth === path.length && sub.length > 0) {
      const parent = sub.length === 1 ? doc.contents : doc.getIn(sub.slice(0, -1), true);
      if (isMap(parent)) {
        const key = sub[sub.length - 1];
        const pair = parent.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === key);
        const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
        if (range) return lc.linePos(range[0]);
      }
      continue;
    }
    const node = sub.length === 0 ? doc.contents : doc.getIn(sub, true);
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    if (range) return lc.linePos(range[0]);
  }
  return undefined;
}

export function formatPath(path: Path): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return [...issues].sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity) || (a.col ?? 0) - (b.col ?? 0));
}

function getIn(value: unknown, path: Path): unknown {
  let cur = value;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[p];
  }
  return cur;
}

function asArray(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The yaml library quotes source text in some messages ("Invalid escape sequence \\Uhunter22"),
 * and that text can be part of a password written inline. Only the library's own words are kept.
 */
function yamlErrorText(code: string, message: string): string {
  if (code === 'BAD_DQ_ESCAPE') return 'invalid escape sequence in a double-quoted string (use single quotes for values with backslashes)';
  const first = (message.split('\n')[0] ?? message).replace(/ at line \d+, column \d+:?$/, '');
  return first.replace(/\\\S*/g, '…').replace(/"[^"]*"|'[^']*'/g, '…');
}

function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT') return 'no such file';
  if (e?.code === 'EACCES') return 'permission denied';
  if (e?.code === 'EISDIR') return 'is a directory';
  return e?.code ?? String(err);
}

/** The known key closest to a typo, when it is close enough to be what was meant. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
