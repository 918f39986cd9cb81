import type { AccountReaction, ErrorKind, SmtpStatus } from './relay-error.js';

/**
 * The rule table for failures talking to an upstream, in the spirit of ZoneMTA's bounce rules:
 * each row says what a failure looks like and what it means. classifyUpstreamError takes the
 * first row that matches, so a row goes above the more general ones it refines.
 *
 * A row matches when every field it names matches (fields it leaves out match anything):
 * - `code`, `originalCode`, `command`, `timeoutType`, `message`: what nodemailer reports (its
 *   error code such as ECONNECTION, the system or OpenSSL code under it, the SMTP command in
 *   flight, which of its timers fired, its own message);
 * - `basic`, `enhanced`, `reply`: what the upstream answered (the reply code, its RFC 3463 code,
 *   the reply text as one line); `replied: false` only when it answered no 4xx/5xx at all.
 *
 * and then gives:
 * - `kind`: the one classification everybody reads (log, queue list, notices, metrics);
 * - `status`: the reply sendas gives (a fixed one, or the upstream's own class and codes);
 *   4xx means the message waits for another attempt, 5xx that it fails;
 * - `unreachable`: the host could not be used at all, so failover moves to the alternate. A
 *   connection that was made and then dropped is not: the host answered;
 * - `text`: the reason, a template: {where} "upstream NAME (HOST:PORT)", {reply} and {quoted}
 *   (": " + reply, or nothing), {account} the login or "(none)", {login} the login or
 *   "(no login)", {passwordPath}, {recipient} "recipient ADDRESS" or "every recipient",
 *   {message}, {originalCode}. `{a|b|words}` is the first of a and b that is known, else "words".
 */
export interface UpstreamRule {
  /** Says which case the row is, in tests and in reviews. */
  readonly name: string;
  readonly when: RuleMatch;
  readonly kind: ErrorKind;
  readonly status: RuleStatus;
  readonly unreachable?: boolean;
  readonly text: string;
  /** What ops can do about it (same templates as `text`), e.g. the PowerShell line that turns SMTP AUTH on. */
  readonly fix?: string;
  /** What it means for the account beyond this message (relay-error.ts AccountReaction). */
  readonly account?: AccountReaction;
}

export interface RuleMatch {
  readonly code?: readonly string[];
  readonly originalCode?: RegExp;
  readonly command?: readonly string[];
  readonly timeoutType?: readonly string[];
  readonly message?: RegExp;
  readonly basic?: readonly (number | '4xx' | '5xx')[];
  readonly enhanced?: RegExp;
  readonly reply?: RegExp;
  readonly replied?: boolean;
}

export type RuleStatus =
  /** This reply whatever the upstream said; with `keepEnhanced`, the upstream's enhanced code when it has one of the same class. */
  | (SmtpStatus & { readonly keepEnhanced?: boolean })
  /**
   * The upstream's own class (4xx stays 4xx) on a code that means the same coming from sendas,
   * its enhanced code, else CLASS.`upstream`. `temporary` sets the class whatever the upstream
   * said (a daily quota answered with 5xx is still worth waiting for).
   */
  | { readonly upstream: string; readonly temporary?: boolean };

/** nodemailer's code for a worker thread that stopped mid-transaction (see classify.ts). */
export const THREAD_EXITED = 'ETHREADEXITED';

const TLS_CODES = /^(CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO_SELF_SIGNED|HOSTNAME_MISMATCH|ERR_TLS_|ERR_SSL_|EPROTO$)/;
const SOCKET = ['ECONNECTION', 'ESOCKET'];
const THROTTLED = { code: 451, enhanced: '4.7.0', keepEnhanced: true } as const;
const LOST = { code: 451, enhanced: '4.4.2' } as const;

/**
 * Rows about one provider's replies, e.g. Microsoft 365's
 *   { name: 'microsoft: sender thread limit', when: { basic: [432], reply: /STOREDRV\.ClientSubmit; sender thread limit exceeded/ },
 *     kind: 'throttled', status: { code: 451, enhanced: '4.3.2' }, text: '{where} is throttling{quoted}' }
 * They come first: a provider's words are more specific than any general row.
 */
export const PROVIDER_RULES: readonly UpstreamRule[] = [
  // Microsoft 365, a 4th concurrent SMTP submission for one mailbox: the host is fine, the account
  // backs off (no failover). "Only three concurrent connections to our service per mailbox will be
  // allowed. Additional connections will be rejected with … 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded":
  // https://techcommunity.microsoft.com/t5/exchange-team-blog/changes-coming-to-the-smtp-authenticated-submission-client/ba-p/607825
  // https://learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/smtp-submission-improvements
  {
    name: 'microsoft: sender thread limit',
    when: { basic: [432], reply: /STOREDRV\.ClientSubmit; sender thread limit exceeded/i },
    kind: 'throttled',
    status: { code: 451, enhanced: '4.3.2' },
    account: 'backoff',
    text: '{where} refused a concurrent submission for {account}: more than 3 at once for one mailbox{quoted}',
    fix: 'keep the server at `connections: 3` or fewer (the office365 preset does); other programs sending as {account} count too',
  },
  // Microsoft 365, the mailbox's recipient rate limit (10,000 recipients per rolling 24 h) used up:
  // "Exceeding the per day limit generates the following error message: 554 5.2.0
  // STOREDRV.Submission.Exception:SubmissionQuotaExceededException". Worth waiting for, never a bounce:
  // https://learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/smtp-submission-improvements
  {
    name: 'microsoft: submission quota',
    when: { basic: ['5xx', '4xx'], reply: /SubmissionQuotaExceededException/i },
    kind: 'quota',
    status: { upstream: '2.0', temporary: true },
    account: 'hold',
    text: '{where} says {account} has used its sending quota (recipients per 24 h){quoted}',
    fix: 'the messages wait until the rolling 24 h window frees room; set `daily: {recipients: N}` on the server to what the mailbox may send (10000 by default) so sendas stays under it',
  },
];

/** The connection itself: nodemailer's codes, before or without a reply. */
export const CONNECTION_RULES: readonly UpstreamRule[] = [
  // what the thread was doing is unknown; the host was reached, so no failover for it
  { name: 'thread stopped', when: { code: [THREAD_EXITED] }, kind: 'network', status: LOST, text: 'Connection lost with {where}: {message}' },
  { name: 'dns', when: { code: ['EDNS'] }, kind: 'network', status: { code: 451, enhanced: '4.4.3' }, unreachable: true, text: 'Cannot resolve {where}: {originalCode|message|DNS lookup failed}' },
  // the socket timer starts once connected: the host answered, then went quiet
  { name: 'timeout in session', when: { code: ['ETIMEDOUT'], timeoutType: ['SOCKET_TIMEOUT'] }, kind: 'network', status: { code: 451, enhanced: '4.4.1' }, text: 'Timed out talking to {where}' },
  { name: 'timeout', when: { code: ['ETIMEDOUT'] }, kind: 'network', status: { code: 451, enhanced: '4.4.1' }, unreachable: true, text: 'Timed out talking to {where}' },
  // certificate problems surface as socket errors carrying OpenSSL's code
  { name: 'certificate', when: { code: SOCKET, replied: false, originalCode: TLS_CODES }, kind: 'tls', status: { code: 451, enhanced: '4.7.5' }, unreachable: true, text: 'TLS with {where} failed: {message|certificate not accepted} ({originalCode})' },
  { name: 'connection refused', when: { code: SOCKET, replied: false, originalCode: /^ECONNREFUSED$/ }, kind: 'network', status: { code: 451, enhanced: '4.4.1' }, unreachable: true, text: 'Cannot connect to {where}: connection refused' },
  { name: 'connection refused (message)', when: { code: SOCKET, replied: false, message: /ECONNREFUSED/ }, kind: 'network', status: { code: 451, enhanced: '4.4.1' }, unreachable: true, text: 'Cannot connect to {where}: connection refused' },
  // connected, then dropped: a reset, or a close nodemailer saw after the greeting (a close
  // before it reaches us as the pool's "maximum number of retries", below)
  { name: 'reset', when: { code: SOCKET, replied: false, originalCode: /^(ECONNRESET|EPIPE|ECONNABORTED)$/ }, kind: 'network', status: LOST, text: 'Connection lost with {where}: {message}' },
  { name: 'closed', when: { code: ['ECONNECTION'], replied: false, message: /^Connection closed unexpectedly/ }, kind: 'network', status: LOST, text: 'Connection lost with {where}: {message}' },
  { name: 'connect', when: { code: SOCKET, replied: false }, kind: 'network', status: { code: 451, enhanced: '4.4.1' }, unreachable: true, text: 'Cannot connect to {where}: {message|connection failed}' },
  { name: 'tls', when: { code: ['ETLS'] }, kind: 'tls', status: { code: 451, enhanced: '4.7.5' }, unreachable: true, text: 'TLS with {where} failed: {message|handshake failed}' },
  // our side's failure, as Postfix's smtp_sasl_auth_soft_bounce: temporary, so the client keeps the message
  { name: 'sign-in', when: { code: ['EAUTH'] }, kind: 'auth', status: { code: 451, enhanced: '4.7.0' }, text: '{where} refused the sign-in of {login}{quoted}; check {passwordPath}' },
  // nodemailer also uses EMESSAGE for any refusal after DATA; only its own size check has no reply
  { name: 'size (client)', when: { code: ['EMESSAGE'], replied: false }, kind: 'size', status: { code: 552, enhanced: '5.3.4' }, text: '{where} does not accept a message this large ({message|})' },
];

/** The upstream's replies, most specific first. */
export const REPLY_RULES: readonly UpstreamRule[] = [
  { name: '421', when: { basic: [421] }, kind: 'throttled', status: THROTTLED, unreachable: true, text: '{where} is throttling{quoted}' },
  { name: 'rate limited', when: { basic: ['4xx'], enhanced: /^4\.7\./ }, kind: 'throttled', status: THROTTLED, text: '{where} is throttling{quoted}' },
  { name: 'sender', when: { command: ['MAIL FROM'] }, kind: 'sender', status: { upstream: '7.1' }, text: '{where} refused the sender for account {account}{quoted}' },
  { name: 'recipient', when: { command: ['RCPT TO'] }, kind: 'recipient', status: { upstream: '1.1' }, text: '{where} refused {recipient}{quoted}' },
  { name: 'too large', when: { basic: [552, 523] }, kind: 'size', status: { upstream: '3.4' }, text: '{where} refused the message as too large{quoted}' },
  { name: 'too large (enhanced)', when: { enhanced: /^5\.(3\.4|2\.3)$/ }, kind: 'size', status: { upstream: '3.4' }, text: '{where} refused the message as too large{quoted}' },
  { name: 'refused', when: { basic: ['4xx', '5xx'] }, kind: 'refused', status: { upstream: '0.0' }, text: '{where} refused the message{quoted}' },
];

/** Matches anything: what none of the rows above foresaw. */
export const FALLBACK_RULE: UpstreamRule = { name: 'other', when: {}, kind: 'network', status: { code: 451, enhanced: '4.4.0' }, text: 'Delivery through {where} failed: {message}' };

export const UPSTREAM_RULES: readonly UpstreamRule[] = [...PROVIDER_RULES, ...CONNECTION_RULES, ...REPLY_RULES, FALLBACK_RULE];
