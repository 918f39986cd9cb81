/**
 * `sendas test`: the "Test" button of admin consoles. Signs in upstream with exactly the account
 * the relay would use for a server, channel or agent, and optionally sends a short test message
 * with From and envelope sender aligned the way the relay aligns them. Never prints a secret.
 */
import { hostname } from 'node:os';
import nodemailer from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport';
import type { ConfigSnapshot, IdentityConfig, IdentityKind } from '../config/types.js';
import { upstreamContext } from '../transport/send.js';
import { classifyUpstreamError } from '../errors/classify.js';
import { RelayError, oneLine } from '../errors/relay-error.js';
import { accountFor, serverAccount, type Account } from '../config/account.js';
import { isPlainAddress } from '../mail/address.js';
import { formatMailbox, type Mailbox } from '../mail/mailbox.js';
import { poolOptions, type TransportTuning } from '../transport/options.js';

export const TEST_USAGE = `  test     --config FILE (--server NAME | --channel NAME | --agent NAME) [--to ADDR]
                                          sign in upstream with that account (and send a test message to ADDR)`;

/** What to test: a server's own account, or the account a channel or agent sends with. */
export type TestTarget = { readonly kind: 'server' | IdentityKind; readonly name: string };

export interface TestOptions {
  /** Also send a test message to this address. */
  readonly to?: string;
  /** EHLO name; the host name, as the relay uses. */
  readonly helo?: string;
  readonly now?: () => Date;
}

/** Short timeouts: someone is waiting at a terminal. */
const TEST_TUNING: Omit<TransportTuning, 'helo'> = {
  maxConnections: 1,
  connectionTimeoutMs: 10_000,
  socketTimeoutMs: 30_000,
};

const TEST_DISPLAY_NAME = 'sendas test';

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

/** What to do about a failure, per kind: the line under "FAILED:". */
export function fixFor(error: RelayError, account: Account, to: string | undefined): string {
  const { server } = account;
  switch (error.kind) {
    case 'auth':
      return `the password at ${account.passwordPath} is wrong or expired (or ${account.username ?? '(no login)'} is not the right login); for Microsoft 365, SMTP AUTH must be enabled for the mailbox`;
    case 'tls':
      return `trust the upstream's CA with ${server.path}.tls.ca: {file: …}, or check that the host name ${server.host} is the one in its certificate`;
    case 'network':
      return `check ${server.path}.host, port and security (${server.host}:${server.port} ${server.security}) and firewalls on the way; \`security: tls\` needs port 465, \`starttls\` 587`;
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
  if (!resolution.ok) {
    if ('usage' in resolution) {
      err.write(`sendas test: ${resolution.usage}\n`);
      return 2;
    }
    const r = resolution.refusal;
    out.write(`testing ${target.kind} ${target.name}\n`);
    out.write(`FAILED: ${r.status.code} ${r.status.enhanced} ${r.kind}: ${r.message}\n`);
    return 1;
  }
  const { account, identity } = resolution;
  const { server } = account;
  const line = (text: string) => out.write(`${text}\n`);

  const who = identity ? `${identity.kind} ${identity.name} (${identity.address})` : `server ${server.name}'s own account`;
  line(`testing ${who}`);
  for (const w of snapshot.warnings) {
    const paths = [server.path, identity?.path].filter((p): p is string => p !== undefined);
    if (paths.some((p) => w.path === p || w.path.startsWith(`${p}.`))) line(`warning: ${w.path}: ${w.message}`);
  }
  const tlsNote = server.security === 'none' ? '' : server.tls.ca ? ', extra CA from tls.ca' : '';
  const verifyNote = server.security !== 'none' && !server.tls.rejectUnauthorized ? ', certificate NOT verified' : '';
  line(`connecting to ${server.host}:${server.port} (server ${server.name}, security ${server.security}${tlsNote}${verifyNote})`);
  const whose = account.via === 'override' ? "the identity's own account" : "the server's account";
  if (server.auth === 'none') line(`login: none (auth none; sending as ${account.address}, ${whose})`);
  else line(`login: ${account.username ?? '(none)'} (${whose}, auth ${server.auth}, password from ${account.passwordPath})`);

  const tuning: TransportTuning = { ...TEST_TUNING, helo: opts.helo ?? hostname() };
  const { maxConnections: _m, maxMessages: _n, ...single } = poolOptions(account, tuning);
  const transporter = nodemailer.createTransport({ ...single, pool: false } as SMTPTransport.Options);
  const ctx = upstreamContext(account);
  const fail = (raw: unknown): number => {
    const e = raw instanceof RelayError ? raw : classifyUpstreamError(raw, ctx);
    line(`FAILED: ${e.status.code} ${e.status.enhanced} ${e.kind}: ${oneLine(e.message)}`);
    line(`fix: ${fixFor(e, account, opts.to)}`);
    return 1;
  };

  try {
    try {
      await transporter.verify();
    } catch (e) {
      return fail(e);
    }
    line(server.auth === 'none' ? `OK: connected; no sign-in (auth none)` : `OK: signed in as ${account.username ?? ''}`);
    if (opts.to === undefined) return 0;

    const from: Mailbox = { name: identity?.displayName ?? TEST_DISPLAY_NAME, address: account.address };
    const now = (opts.now ?? (() => new Date()))();
    const label = identity ? `${identity.kind} ${identity.name}` : `server ${server.name}`;
    line(`sending a test message to ${opts.to}: From ${formatMailbox(from)}, envelope from <${account.address}>`);
    const text = [
      'This is a test message from sendas.',
      '',
      `Sent as:  ${identity ? `${identity.kind} ${identity.name} (${identity.address})` : `server ${server.name}'s own account`}`,
      `Server:   ${server.name} (${server.host}:${server.port}, security ${server.security})`,
      `Login:    ${server.auth === 'none' ? 'none (auth none)' : `${account.username ?? ''} (${whose})`}`,
      `From:     ${formatMailbox(from)}`,
      `Envelope: <${account.address}>`,
      `Sent at:  ${now.toISOString()} by \`sendas test\` on ${tuning.helo}`,
      '',
      'If this arrived, the relay can send with this account.',
      '',
    ].join('\r\n');
    let info: SMTPTransport.SentMessageInfo;
    try {
      info = await transporter.sendMail({
        from: { name: from.name, address: from.address },
        to: opts.to,
        envelope: { from: account.address, to: [opts.to] },
        subject: `sendas test: ${label} via ${server.name}`,
        text,
        date: now,
        headers: { 'Auto-Submitted': 'auto-generated' },
      });
    } catch (e) {
      // every recipient refused: report the upstream's refusal of that recipient, as the relay does
      const { command, rejectedErrors } = (e ?? {}) as { command?: string; rejectedErrors?: unknown[] };
      return fail(command === 'RCPT TO' && rejectedErrors?.length ? rejectedErrors[0] : e);
    }
    const rejected = (info as { rejectedErrors?: unknown[] }).rejectedErrors ?? [];
    if (rejected.length > 0) return fail(rejected[0]);
    line(`OK: test message accepted by the upstream: ${oneLine(info.response ?? '')}`);
    return 0;
  } finally {
    transporter.close();
  }
}

function article(kind: IdentityKind): string {
  return kind === 'agent' ? 'an' : 'a';
}
