/**
 * `sendas test`: the "Test" button of admin consoles. Signs in upstream with exactly the account
 * the relay would use for a server, channel or agent — passwords, XOAUTH2 tokens from the relay's
 * own token provider (and the refresh tokens kept in its state directory), Microsoft Graph — and
 * optionally sends a short test message with From and envelope sender aligned the way the relay
 * aligns them. Each step is named, so a failure says where it happened and what to change.
 * Never prints a secret.
 */
import { hostname } from 'node:os';
import nodemailer from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport';
import { serverOf, type ConfigSnapshot, type IdentityConfig, type IdentityKind } from '../config/types.js';
import { credentialPath, upstreamContext } from '../transport/send.js';
import { classifyUpstreamError, type UpstreamErrorLike } from '../errors/classify.js';
import { RelayError, oneLine } from '../errors/relay-error.js';
import { accountFor, hasOwnAccount, serverAccount, type Account } from '../config/account.js';
import { isPlainAddress } from '../mail/address.js';
import { formatMailbox, type Mailbox } from '../mail/mailbox.js';
import { poolOptions, type TransportTuning } from '../transport/options.js';
import { TokenProvider, type AccessToken } from '../oauth/tokens.js';
import { silentLogger } from '../log.js';
import { testGraph } from './test-graph.js';

/** What to test: a server's own account, or the account a channel or agent sends with. */
export type TestTarget = { readonly kind: 'server' | IdentityKind; readonly name: string };

export interface TestOptions {
  /** Also send a test message to this address. */
  readonly to?: string;
  /** EHLO name; the host name, as the relay uses. */
  readonly helo?: string;
  readonly now?: () => Date;
  /** For the token endpoint and Graph (tests); the global fetch by default. */
  readonly fetch?: typeof fetch;
}

/** Short timeouts: someone is waiting at a terminal. */
const TEST_TUNING: Omit<TransportTuning, 'helo'> = {
  maxConnections: 1,
  connectionTimeoutMs: 10_000,
  socketTimeoutMs: 30_000,
};

const TEST_DISPLAY_NAME = 'sendas test';

/** The steps of a test, as the output names them. */
export type TestStep = 'account' | 'connect' | 'token endpoint' | 'sign-in' | 'sign-in with the token' | 'MAIL FROM / Send As' | 'RCPT' | 'DATA' | 'Graph mailbox' | 'Graph sendMail';

export type TestResolution =
  | { readonly ok: true; readonly account: Account; readonly identity: IdentityConfig | undefined }
  /** The target names nothing in the config: a usage error (exit 2). */
  | { readonly ok: false; readonly usage: string }
  /** The relay would refuse to send with it (override without password). */
  | { readonly ok: false; readonly refusal: RelayError };

/** The account the relay would use for the target, resolved with the relay's own code. */
export function resolveTestAccount(snapshot: ConfigSnapshot, target: TestTarget): TestResolution {
  if (target.kind === 'server') {
    const server = snapshot.serversByName.get(target.name);
    if (!server) {
      return { ok: false, usage: `unknown server "${target.name}"; servers are: ${snapshot.servers.map((s) => s.name).join(', ')}` };
    }
    if (!hasOwnAccount(server)) {
      const on = snapshot.identities.filter((i) => serverOf(snapshot, i) === server).map((i) => `--${i.kind} ${i.name}`);
      return { ok: false, usage: `server "${server.name}" has no account of its own: every identity on it signs in with its own, so test one of them${on.length > 0 ? ` (${on.join(', ')})` : ''}` };
    }
    // the default server's account is exactly what accountFor builds for "no identity"
    const account = serverAccount(server);
    if (account instanceof RelayError) return { ok: false, refusal: account };
    return { ok: true, account, identity: undefined };
  }
  const identity = snapshot.identitiesByName.get(target.name);
  if (!identity || identity.kind !== target.kind) {
    const known = snapshot.identities.filter((i) => i.kind === target.kind).map((i) => i.name);
    const plural = `${target.kind}s`;
    const other = identity ? ` ("${target.name}" is ${article(identity.kind)} ${identity.kind}: use --${identity.kind} ${target.name})` : '';
    return {
      ok: false,
      usage: `unknown ${target.kind} "${target.name}"${other}; ${plural} are: ${known.length > 0 ? known.join(', ') : '(none)'}`,
    };
  }
  const account = accountFor(snapshot, identity);
  if (account instanceof RelayError) return { ok: false, refusal: account };
  return { ok: true, account, identity };
}

/**
 * What to do about a failure: the classification's own fix (a provider's reply, the token
 * endpoint) when it has one, else one per kind.
 */
export function fixFor(error: RelayError, account: Account, to: string | undefined): string {
  if (error.fix) return error.fix;
  const { server } = account;
  switch (error.kind) {
    case 'auth':
      return account.method === 'xoauth2'
        ? `the upstream refused the access token for ${account.username ?? account.address}: check the app's permissions for this mailbox and ${credentialPath(account)}`
        : `the password at ${account.passwordPath} is wrong or expired (or ${account.username ?? '(no login)'} is not the right login); for Microsoft 365, SMTP AUTH must be enabled for the mailbox`;
    case 'tls':
      return `trust the upstream's CA with ${server.path}.tls.ca: {file: …}, or check that the host name ${server.host} is the one in its certificate`;
    case 'network':
      return server.type === 'graph'
        ? `check ${server.path}.graph_url (${server.graphUrl}) and the proxy or firewall on the way`
        : `check ${server.path}.host, port and security (${server.host}:${server.port} ${server.security}) and firewalls on the way; \`security: tls\` needs port 465, \`starttls\` 587`;
    case 'sender':
      return `the account ${account.username ?? account.address} may not send as ${account.address}: give the identity an override with the mailbox's own login, or grant Send As upstream`;
    case 'recipient':
      return `check --to ${to ?? ''}`.trimEnd();
    case 'throttled':
      return 'the upstream is throttling this account: wait and try again';
    default:
      return `the upstream said: ${error.upstreamReply ?? oneLine(error.message)}`;
  }
}

/** Where an SMTP failure happened, from the command nodemailer had in flight. */
export function smtpStepOf(raw: unknown, account: Account): TestStep {
  const { code, command } = (raw ?? {}) as UpstreamErrorLike;
  if (code === 'EAUTH' || command?.startsWith('AUTH')) return account.method === 'xoauth2' ? 'sign-in with the token' : 'sign-in';
  if (command === 'MAIL FROM') return 'MAIL FROM / Send As';
  if (command === 'RCPT TO') return 'RCPT';
  if (command === 'DATA' || code === 'EMESSAGE') return 'DATA';
  return 'connect';
}

/** The test's output: one line each, and FAILED with the step, the classification and the fix. */
export class TestReport {
  constructor(private readonly out: { write(text: string): unknown }) {}

  line(text: string): void {
    this.out.write(`${text}\n`);
  }

  failed(step: TestStep, e: RelayError, fix: string | undefined): number {
    this.line(`FAILED at ${step}: ${e.status.code} ${e.status.enhanced} ${e.kind}: ${oneLine(e.message)}`);
    if (fix) this.line(`fix: ${fix}`);
    return 1;
  }
}

/**
 * Runs the test and writes human-readable lines to `out`. Returns the exit code: 0 signed in
 * (and the message was accepted), 1 failed, 2 the target or --to is not usable.
 */
export async function testCommand(
  snapshot: ConfigSnapshot,
  target: TestTarget,
  opts: TestOptions,
  out: { write(text: string): unknown },
  err: { write(text: string): unknown },
): Promise<number> {
  if (opts.to !== undefined && !isPlainAddress(opts.to)) {
    err.write(`sendas test: --to ${opts.to} is not a plain email address such as someone@example.com\n`);
    return 2;
  }
  const resolution = resolveTestAccount(snapshot, target);
  const report = new TestReport(out);
  if (!resolution.ok) {
    if ('usage' in resolution) {
      err.write(`sendas test: ${resolution.usage}\n`);
      return 2;
    }
    report.line(`testing ${target.kind} ${target.name}`);
    return report.failed('account', resolution.refusal, resolution.refusal.fix);
  }
  const { account, identity } = resolution;
  const { server } = account;

  const who = identity ? `${identity.kind} ${identity.name} (${identity.address})` : `server ${server.name}'s own account`;
  report.line(`testing ${who}`);
  for (const w of snapshot.warnings) {
    const paths = [server.path, identity?.path].filter((p): p is string => p !== undefined);
    if (paths.some((p) => w.path === p || w.path.startsWith(`${p}.`))) report.line(`warning: ${w.path}: ${w.message}`);
  }
  const whose = account.via === 'override' ? "the identity's own account" : "the server's account";
  if (server.type === 'graph') {
    report.line(`connecting to Microsoft Graph ${server.graphUrl} (server ${server.name}, mailbox ${account.username ?? account.address})`);
  } else {
    const tlsNote = server.security === 'none' ? '' : server.tls.ca ? ', extra CA from tls.ca' : '';
    const verifyNote = server.security !== 'none' && !server.tls.rejectUnauthorized ? ', certificate NOT verified' : '';
    report.line(`connecting to ${server.host}:${server.port} (server ${server.name}, security ${server.security}${tlsNote}${verifyNote})`);
  }
  report.line(loginLine(account, whose));

  let token: AccessToken | undefined;
  let tokens: TokenProvider | undefined;
  if (account.method === 'xoauth2' && account.oauth) {
    // the relay's own provider and state directory: a rotated refresh token is used (and kept) as the relay would
    tokens = new TokenProvider({
      stateDir: () => snapshot.stateDir,
      secretKey: () => snapshot.secretKey,
      logger: silentLogger(),
      loginHint: `sendas oauth login --config ${snapshot.file}`,
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
    });
    try {
      token = await tokens.get(account);
    } catch (e) {
      const error = e instanceof RelayError ? e : new RelayError('internal', { code: 451, enhanced: '4.3.0' }, (e as Error).message);
      return report.failed('token endpoint', error, fixFor(error, account, opts.to));
    }
    const seconds = Math.max(0, Math.round((token.expiresAt - token.obtainedAt) / 1000));
    report.line(`OK: access token from ${account.oauth.tokenUrl} (grant ${account.oauth.grant}, valid ${seconds} s)`);
  }

  const now = (opts.now ?? (() => new Date()))();
  const helo = opts.helo ?? hostname();
  const message = testMessage(account, identity, whose, now, helo);
  if (server.type === 'graph') {
    if (!tokens) {
      const e = new RelayError('config', { code: 554, enhanced: '5.3.5' }, `server ${server.name} is type graph but does not sign in with an OAuth app token`);
      return report.failed('account', e, `give ${server.path} \`oauth:\` with grant client_credentials (and no \`auth:\` other than xoauth2)`);
    }
    return testGraph({ account, tokens, to: opts.to, message, report, fix: (e) => fixFor(e, account, opts.to), ...(opts.fetch ? { fetch: opts.fetch } : {}) });
  }
  return testSmtp(account, token, opts.to, message, helo, report);
}

async function testSmtp(account: Account, token: AccessToken | undefined, to: string | undefined, message: TestMessage, helo: string, report: TestReport): Promise<number> {
  const { server } = account;
  const tuning: TransportTuning = { ...TEST_TUNING, helo };
  // the token obtained above, also when nodemailer asks again after a refusal: one token request per test
  const provision = token ? (_user: string, _renew: boolean, cb: (err: Error | null, t?: string, expires?: number) => void) => cb(null, token.token, token.expiresAt) : undefined;
  const { maxConnections: _m, maxMessages: _n, ...single } = poolOptions(account, tuning, undefined, provision);
  const transporter = nodemailer.createTransport({ ...single, pool: false } as SMTPTransport.Options);
  const ctx = upstreamContext(account);
  const fail = (raw: unknown): number => {
    const e = raw instanceof RelayError ? raw : classifyUpstreamError(raw, ctx);
    return report.failed(smtpStepOf(raw, account), e, fixFor(e, account, to));
  };

  try {
    try {
      await transporter.verify();
    } catch (e) {
      return fail(e);
    }
    if (server.auth === 'none' && account.method === 'none') report.line('OK: connected; no sign-in (auth none)');
    else report.line(`OK: signed in as ${account.username ?? account.address}${token ? ' with the token' : ''}`);
    if (to === undefined) return 0;

    report.line(`sending a test message to ${to}: From ${formatMailbox(message.from)}, envelope from <${account.address}>`);
    let info: SMTPTransport.SentMessageInfo;
    try {
      info = await transporter.sendMail({
        from: { name: message.from.name, address: message.from.address },
        to,
        envelope: { from: account.address, to: [to] },
        subject: message.subject,
        text: message.text,
        date: message.date,
        headers: { 'Auto-Submitted': 'auto-generated' },
      });
    } catch (e) {
      // every recipient refused: report the upstream's refusal of that recipient, as the relay does
      const { command, rejectedErrors } = (e ?? {}) as { command?: string; rejectedErrors?: unknown[] };
      return fail(command === 'RCPT TO' && rejectedErrors?.length ? rejectedErrors[0] : e);
    }
    const rejected = (info as { rejectedErrors?: unknown[] }).rejectedErrors ?? [];
    if (rejected.length > 0) return fail(rejected[0]);
    report.line(`OK: test message accepted by the upstream: ${oneLine(info.response ?? '')}`);
    return 0;
  } finally {
    transporter.close();
  }
}

function loginLine(account: Account, whose: string): string {
  const { server } = account;
  const user = account.username ?? account.address;
  if (account.method === 'none') return `login: none (auth none; sending as ${account.address}, ${whose})`;
  if (account.method !== 'xoauth2' || !account.oauth) return `login: ${account.username ?? '(none)'} (${whose}, auth ${account.method}, password from ${account.passwordPath})`;
  const o = account.oauth;
  const credential =
    o.grant === 'client_credentials'
      ? `app token for client ${o.clientId}, secret from ${server.path}.oauth.client_secret`
      : `refresh token from the state directory or ${account.via === 'override' && account.oauth.refreshToken ? account.oauthPath : `${server.path}.oauth.refresh_token`}`;
  return `login: ${user} (${whose}, ${server.type === 'graph' ? 'Microsoft Graph' : 'auth xoauth2'}, grant ${o.grant}: ${credential})`;
}

/** The test message, the same for SMTP and Graph. */
export interface TestMessage {
  readonly from: Mailbox;
  readonly subject: string;
  readonly text: string;
  readonly date: Date;
}

function testMessage(account: Account, identity: IdentityConfig | undefined, whose: string, now: Date, helo: string): TestMessage {
  const { server } = account;
  const from: Mailbox = { name: identity?.displayName ?? TEST_DISPLAY_NAME, address: account.address };
  const label = identity ? `${identity.kind} ${identity.name}` : `server ${server.name}`;
  const where = server.type === 'graph' ? `Microsoft Graph ${server.graphUrl}` : `${server.host}:${server.port}, security ${server.security}`;
  const text = [
    'This is a test message from sendas.',
    '',
    `Sent as:  ${identity ? `${identity.kind} ${identity.name} (${identity.address})` : `server ${server.name}'s own account`}`,
    `Server:   ${server.name} (${where})`,
    `Login:    ${account.method === 'none' ? 'none (auth none)' : `${account.username ?? account.address} (${whose})`}`,
    `From:     ${formatMailbox(from)}`,
    `Envelope: <${account.address}>`,
    `Sent at:  ${now.toISOString()} by \`sendas test\` on ${helo}`,
    '',
    'If this arrived, the relay can send with this account.',
    '',
  ].join('\r\n');
  return { from, subject: `sendas test: ${label} via ${server.name}`, text, date: now };
}

function article(kind: IdentityKind): string {
  return kind === 'agent' ? 'an' : 'a';
}
