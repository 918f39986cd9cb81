import type { Secret } from './secret.js';
import type { SecretKey } from './secret-key.js';

/**
 * The immutable, typed snapshot the rest of sendas reads. It is built once from the YAML file
 * (config/load.ts composes the steps) and handed to every stage; nothing else parses the file or
 * reads env vars.
 */

export type Security = 'none' | 'starttls' | 'tls';
export type AuthMethod = 'none' | 'plain' | 'login' | 'cram-md5' | 'xoauth2';

export interface OAuthConfig {
  readonly tenant: string | undefined;
  readonly clientId: string;
  readonly clientSecret: Secret | undefined;
  readonly grant: 'client_credentials' | 'refresh_token';
  readonly tokenUrl: string;
  readonly scope: string | undefined;
  /** The server account's refresh token (refresh_token grant); identities may bring their own. */
  readonly refreshToken: Secret | undefined;
}
export type IdentityKind = 'channel' | 'agent';

/** none: plain SMTP; starttls: plain, upgraded by the client (submission, 587); implicit: TLS from the first byte (submissions, 465). */
export type ListenTls = 'none' | 'starttls' | 'implicit';

export interface ListenConfig {
  readonly host: string;
  readonly port: number;
  /** CIDRs (or single addresses) allowed to relay without logging in. */
  readonly allow: readonly string[];
  /** Bytes; advertised with SIZE. */
  readonly maxMessageSize: number;
  readonly tls: ListenTls;
  /** PEM certificate (chain) and private key; set when tls is not none (relations check it). */
  readonly cert: Secret | undefined;
  readonly key: Secret | undefined;
  readonly minTlsVersion: 'TLSv1.2' | 'TLSv1.3';
  /** AUTH over a connection without TLS from any client, not only from `allow`. */
  readonly allowPlaintextAuth: boolean;
  /** A bare CR or LF in DATA: refused (550 5.5.2), or made CRLF line ends (README "Smuggling and bare newlines"). */
  readonly bareNewline: 'reject' | 'normalize';
  /** Bytes one attachment may have (decoded); undefined: no limit beyond maxMessageSize. */
  readonly maxAttachmentSize: number | undefined;
  /** Key path in the YAML: "listen" for the single mapping, "listen[1]" in the list form. */
  readonly path: string;
}

export interface HttpConfig {
  readonly host: string;
  readonly port: number;
  /** Bearer token for /status and /metrics; undefined = open to whoever reaches the port. */
  readonly token: Secret | undefined;
}

/** `limits:`, for every listener: what a client may cost before it is slowed down, refused or cut off. */
export interface LimitsConfig {
  /** Sessions at once, all clients together. */
  readonly connections: number;
  /** Sessions at once from one client address. */
  readonly connectionsPerAddress: number;
  /** How long the client may stay silent while sendas waits for it. */
  readonly idleTimeoutMs: number;
  /** From the first byte of a command line to its end, however slowly the bytes come. */
  readonly commandTimeoutMs: number;
  /** From the 354 to the final dot. */
  readonly dataTimeoutMs: number;
  /** Error replies a session may collect without a message accepted; the next command gets 421. */
  readonly errorsPerSession: number;
  readonly recipientsPerMessage: number;
  readonly auth: AuthLimitsConfig;
}

export interface AuthLimitsConfig {
  /** Failed logins from one address within `windowMs` that lock the address out. */
  readonly failuresPerAddress: number;
  /** Failed logins for one login name, from any address, within `windowMs` that lock the login out. */
  readonly failuresPerLogin: number;
  readonly windowMs: number;
  readonly lockoutMs: number;
  /** The wait before the first 535; it doubles with each further failure, up to `maxDelayMs`. */
  readonly delayMs: number;
  readonly maxDelayMs: number;
}

export interface ClientConfig {
  readonly username: string;
  readonly password: Secret;
  /** Names of channels/agents this login may send as; undefined = all of them. */
  readonly sendAs: readonly string[] | undefined;
  readonly path: string;
}

export interface ServerTlsConfig {
  /** Extra CA certificates (PEM) to trust for this server, on top of the system's. */
  readonly ca: string | undefined;
  /** Name to verify the certificate against (SNI), when it differs from `host`. */
  readonly servername: string | undefined;
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3' | undefined;
  readonly rejectUnauthorized: boolean;
}

export interface AlternateConfig {
  readonly host: string;
  readonly port: number;
  /** How long after failing over the primary is probed again. */
  readonly cooldownMs: number;
}

export interface RateConfig {
  readonly count: number;
  readonly windowMs: number;
}

/** An account's budgets per rolling 24 hours; a budget left out is not counted. */
export interface DailyConfig {
  readonly messages: number | undefined;
  readonly recipients: number | undefined;
}

export interface QueueConfig {
  /** Absolute path of the queue directory. */
  readonly dir: string;
  /** Waits between attempts; the last one repeats. */
  readonly retryMs: readonly number[];
  readonly maxAgeMs: number;
  /** Copy of every failure notice. */
  readonly notify: string | undefined;
}

export interface ServerConfig {
  readonly name: string;
  readonly isDefault: boolean;
  /** smtp: SMTP submission; graph: Microsoft Graph sendMail with an app token. */
  readonly type: 'smtp' | 'graph';
  readonly preset: 'office365' | 'gmail' | undefined;
  readonly host: string;
  readonly port: number;
  readonly security: Security;
  readonly auth: AuthMethod;
  readonly username: string | undefined;
  readonly password: Secret | undefined;
  /** The server account's mailbox: the From of identities that don't override. */
  readonly address: string;
  readonly tls: ServerTlsConfig;
  readonly oauth: OAuthConfig | undefined;
  /** Sending a password in plain text to a host that is not loopback was explicitly allowed. */
  readonly allowPlaintextAuth: boolean;
  /** socks5://host:port or http://host:port (CONNECT). */
  readonly proxy: string | undefined;
  /** Graph API base URL (type: graph). */
  readonly graphUrl: string;
  /** type graph: keep a copy in the mailbox's Sent Items (transport/graph.ts says how false is honoured). */
  readonly saveToSentItems: boolean;
  /** Same accounts, another host: used while the primary can't be reached. */
  readonly alternate: AlternateConfig | undefined;
  /** Larger recipient lists go upstream in batches of this size. */
  readonly maxRecipients: number | undefined;
  /** Per account: messages wait for it, they never fail for it. */
  readonly rate: RateConfig | undefined;
  /** Per account: at most this many upstream transactions at once (the pool size too). */
  readonly connections: number;
  /** Per account, counted before sending and kept in state_dir: mail over it waits (reason quota). */
  readonly daily: DailyConfig | undefined;
  /** Key path in the YAML, e.g. "servers[0]", for messages that point ops at the right place. */
  readonly path: string;
}

export interface OverrideConfig {
  readonly username: string;
  /** Absent: the identity is configured to use its own account but nobody set its password. */
  readonly password: Secret | undefined;
  /** How this account signs in; default: its server's `auth`. */
  readonly auth: AuthMethod | undefined;
  /** The account's own (delegated) refresh token, for auth xoauth2 with grant refresh_token. */
  readonly refreshToken: Secret | undefined;
}

export interface IdentityConfig {
  readonly kind: IdentityKind;
  readonly name: string;
  readonly address: string;
  readonly displayName: string | undefined;
  /** The server named in the YAML; undefined = follows the default server. */
  readonly serverName: string | undefined;
  readonly override: OverrideConfig | undefined;
  readonly path: string;
}

export interface PolicyConfig {
  readonly from: 'rewrite' | 'reject';
  readonly unknownSender: 'reject' | 'default';
}

export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';

/** `dkim:` entry: the key that signs mail whose (aligned) From is in `domain`. */
export interface DkimKeyConfig {
  /** Lower case, no trailing dot, A-labels (xn--…): the d= of the signature and the key of `ConfigSnapshot.dkim`. */
  readonly domain: string;
  /** s=: the record is published at `<selector>._domainkey.<domain>`. */
  readonly selector: string;
  /** The PEM private key (PKCS#8 or PKCS#1), checked at load to be RSA of at least 1024 bits or Ed25519. */
  readonly key: Secret;
  /** a=: as written, else the key's own (an RSA key signs rsa-sha256, an Ed25519 key ed25519-sha256). */
  readonly algorithm: DkimAlgorithm;
  /** k= of the DNS record. */
  readonly keyType: 'rsa' | 'ed25519';
  /** RSA modulus length; undefined for Ed25519. */
  readonly bits: number | undefined;
  /**
   * The p= value the DNS record must carry for this key, derived from the private key: base64 of
   * the DER SubjectPublicKeyInfo for RSA, base64 of the raw 32-byte key for Ed25519 (RFC 8463 §4.2).
   */
  readonly publicKey: string;
  /** Header fields signed, in order (h=); From is signed once more than it occurs (oversigned). */
  readonly headers: readonly string[];
  /** Key path in the YAML, e.g. "dkim[0]". */
  readonly path: string;
  /** Line of the entry in the YAML file (undefined when unknown). */
  readonly line: number | undefined;
}

/** `deliverability:`: the relay's background `sendas check --dns` (src/deliverability/). */
export interface DeliverabilityConfig {
  readonly check: boolean;
  readonly intervalMs: number;
  /** Resolvers to ask, as IP[:PORT] ("192.0.2.53:5353", "[2001:db8::53]:53"); empty: the system's. */
  readonly dnsServers: readonly string[];
}

export interface ConfigWarning {
  readonly path: string;
  readonly message: string;
}

/** `cluster:`: the replicas' shared state in Redis (src/cluster/). */
export interface ClusterConfig {
  /** redis://[:password@]host:port[/db] or rediss:// (TLS); a secret because it may carry the password. */
  readonly url: Secret;
  /** cluster.redis.tls (rediss:// only): the CA that signed Redis' certificate (else the system's), the client certificate and key. */
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: Secret };
  /** cluster.redis.sentinel: the master by its name through these Sentinels (url then gives its password, db and TLS, not its host). */
  readonly sentinel?: { readonly master: string; readonly hosts: readonly { readonly host: string; readonly port: number }[]; readonly password?: Secret };
  readonly keyPrefix: string;
  /** This replica's name in the registry: cluster.node_id, else the host name. */
  readonly nodeId: string;
  readonly leaseTtlMs: number;
}

export interface ConfigSnapshot {
  /** Short hash of the file's text and its secrets (version.ts): tells two loaded configs apart in logs. */
  readonly version: string;
  /** Absolute path of the YAML file this snapshot came from. */
  readonly file: string;
  /** One per listening socket, in the order of the file. */
  readonly listeners: readonly ListenConfig[];
  readonly limits: LimitsConfig;
  readonly delivery: 'queue' | 'passthrough';
  readonly queue: QueueConfig;
  readonly clients: readonly ClientConfig[];
  readonly servers: readonly ServerConfig[];
  readonly identities: readonly IdentityConfig[];
  readonly policy: PolicyConfig;
  readonly log: {
    readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
    /** Unset: line when stdout is a terminal, json otherwise. Read at start only. */
    readonly format?: 'json' | 'line' | 'pretty';
    /** Addresses in log lines (and the history) as keyed hashes (history/redact.ts). */
    readonly redact: boolean;
  };
  /** The delivery history in state_dir/history.sqlite; false = off. */
  readonly history: { readonly keepMs: number } | false;
  /** The monitoring endpoints; false = off. */
  readonly http: HttpConfig | false;
  readonly warnings: readonly ConfigWarning[];
  /** Where rotated OAuth refresh tokens are kept (mode 0600). */
  readonly stateDir: string;
  /** Absolute paths of the {file: …} secrets and of the key file: watched for rotation. */
  readonly secretFiles: readonly string[];
  /** `dkim:` keyed by domain as `dkimDomainKey()` (config/dkim.ts) writes it; a From domain not in it is sent unsigned. */
  readonly dkim: ReadonlyMap<string, DkimKeyConfig>;
  readonly deliverability: DeliverabilityConfig;
  /** false: one relay, every limit kept in memory and state_dir as before. */
  readonly cluster: ClusterConfig | false;
  /** The age key (secrets.key_file, SENDAS_SECRET_KEY_FILE or SENDAS_SECRET_KEY); state_dir's refresh tokens are encrypted to it. */
  readonly secretKey: SecretKey | undefined;

  readonly defaultServer: ServerConfig;
  readonly serversByName: ReadonlyMap<string, ServerConfig>;
  /** Keyed by addressKey(). */
  readonly identitiesByAddress: ReadonlyMap<string, IdentityConfig>;
  readonly identitiesByName: ReadonlyMap<string, IdentityConfig>;
  readonly clientsByUsername: ReadonlyMap<string, ClientConfig>;
}

/** The server an identity sends through: its own `server`, else whichever server is the default now. */
export function serverOf(snapshot: ConfigSnapshot, identity: IdentityConfig): ServerConfig {
  if (identity.serverName === undefined) return snapshot.defaultServer;
  const server = snapshot.serversByName.get(identity.serverName);
  // relations.ts refuses a config with a dangling server reference, so this can't happen at run time
  if (!server) throw new Error(`${identity.path}.server names unknown server ${identity.serverName}`);
  return server;
}
