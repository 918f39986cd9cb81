import type { Security } from './types.js';

/**
 * What relay.yaml means when it leaves a key out. The schema fills these in; rules that read the
 * document before validation and the snapshot builder use the same constants. README's tables
 * describe them for users.
 */
export const DEFAULTS = {
  listen: {
    host: '127.0.0.1',
    port: 2525,
    allow: ['127.0.0.0/8', '::1'],
    maxMessageSize: 25 * 1024 * 1024,
    tls: 'none',
    // RFC 8996 deprecated TLS 1.0/1.1, and Node's own minimum is 1.2; smtp-server's default (TLSv1) is not used
    minTlsVersion: 'TLSv1.2',
    /** Postfix 3.9's default: legacy software writing bare LF keeps working, and what leaves is CRLF only either way. */
    bareNewline: 'normalize',
    /** Off: only max_message_size limits an attachment. */
    maxAttachmentSize: undefined,
  },
  /** Guessing, flooding and slow-client limits of every listener; README "Security" compares each with Postfix. */
  limits: {
    connections: 500,
    connectionsPerAddress: 50,
    idleTimeoutMs: 300_000,
    commandTimeoutMs: 60_000,
    dataTimeoutMs: 600_000,
    errorsPerSession: 20,
    recipientsPerMessage: 1000,
    auth: { failuresPerAddress: 10, failuresPerLogin: 20, windowMs: 900_000, lockoutMs: 900_000, delayMs: 1000, maxDelayMs: 15_000 },
  },
  delivery: 'queue',
  queue: {
    /** Relative to the YAML file; SENDAS_QUEUE_DIR (set by the Docker image) wins over it. */
    dir: './var/queue',
    retryMs: [60_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000],
    maxAgeMs: 2 * 86_400_000,
  },
  /** Relative to the YAML file; SENDAS_STATE_DIR wins over it. */
  stateDir: './var/state',
  http: { host: '127.0.0.1', port: 9025 },
  log: { level: 'info', redact: false },
  /** The delivery history (state_dir/history.sqlite): events older than this are pruned. */
  history: { keepMs: 30 * 86_400_000 },
  policy: { from: 'rewrite', unknownSender: 'reject' },
  /** `cluster:` (src/cluster/): Redis keys start with the prefix; a replica's connection leases and its registry entry outlive it by at most the TTL. */
  cluster: { keyPrefix: 'sendas', leaseTtlMs: 15_000 },
  /** The relay's background DNS check of the From domains: at start, after each reload, and this often. */
  deliverability: { check: true, intervalMs: 6 * 3_600_000 },
  /** The header fields a DKIM signature covers when `dkim[].headers` is left out (RFC 6376 §5.4.1's advice). */
  dkim: {
    headers: ['From', 'To', 'Cc', 'Subject', 'Date', 'Message-ID', 'Reply-To', 'Sender', 'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding', 'In-Reply-To', 'References'],
    /** RSA keys below this still sign but `check` warns: several receivers ignore them. */
    recommendedRsaBits: 2048,
    minRsaBits: 1024,
  },
  server: {
    type: 'smtp',
    security: 'starttls',
    grant: 'client_credentials',
    rejectUnauthorized: true,
    alternateCooldownMs: 60_000,
    /** Concurrent upstream transactions per account where no preset says otherwise. */
    connections: 5,
    /** type graph: a copy in the mailbox's Sent Items, as Graph's sendMail does by default. */
    saveToSentItems: true,
  },
} as const;

/** The port a server listens on for each kind of security, when `port:` is not given. */
export const PORT_BY_SECURITY: Readonly<Record<Security, number>> = { none: 25, starttls: 587, tls: 465 };

/** Microsoft Graph: the default `graph_url`, and the office365 preset's. */
export const MICROSOFT_GRAPH_URL = 'https://graph.microsoft.com';
