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
 *   "(no login)", {passwordPath} (for xoauth2: where the OAuth credential lives), {mailbox} the
 *   account's mailbox (the envelope sender), {serverPath} e.g. "servers[0]", {recipient}
 *   "recipient ADDRESS" or "every recipient", {message}, {originalCode}. `{a|b|words}` is the first of a and b that is known, else "words".
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
  /** The fix instead of `fix` when the account signs in with an OAuth token (xoauth2): app permissions, not a password. */
  readonly oauthFix?: string;
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
/** A refused sign-in, whatever the upstream's code: temporary, so the messages wait while ops fix it (the reply quotes the upstream's). */
const SIGN_IN = { code: 451, enhanced: '4.7.0' } as const;

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
  // Microsoft 365, "Enable or disable SMTP AUTH in Exchange Online":
  // https://learn.microsoft.com/exchange/clients-and-mobile-in-exchange-online/authenticated-client-smtp-submission
  // "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant" (or
  // for the mailbox, or by security defaults). Temporary, as every refused sign-in (Postfix's
  // smtp_sasl_auth_soft_bounce): the messages wait while ops turn it on.
  {
    name: 'microsoft: SMTP AUTH disabled (5.7.139)',
    when: { basic: [535], enhanced: /^5\.7\.139$/ },
    kind: 'auth',
    status: SIGN_IN,
    text: '{where} refused the sign-in of {login}: SMTP AUTH is disabled for this mailbox or tenant{quoted}',
    fix:
      'SMTP AUTH is disabled for this mailbox or tenant: Set-CASMailbox -Identity {login} -SmtpClientAuthenticationDisabled $false ' +
      '(tenant-wide: Set-TransportConfig -SmtpClientAuthenticationDisabled $false; security defaults turn it off too). ' +
      'From the end of December 2026 Exchange Online also turns basic authentication for SMTP AUTH off by default: move {serverPath} to OAuth (preset: office365) or type: graph',
    oauthFix:
      'SMTP AUTH is disabled for this mailbox or tenant: Set-CASMailbox -Identity {login} -SmtpClientAuthenticationDisabled $false ' +
      '(tenant-wide: Set-TransportConfig -SmtpClientAuthenticationDisabled $false; security defaults turn it off too), or send through Microsoft Graph (type: graph)',
  },
  // Microsoft 365 once basic authentication is gone for SMTP AUTH ("Exchange Online to retire Basic
  // auth for Client Submission (SMTP AUTH)"): "550 5.7.30 Basic authentication is not supported for
  // Client Submission." https://techcommunity.microsoft.com/t5/exchange-team-blog/exchange-online-to-retire-basic-auth-for-client-submission-smtp/ba-p/4114750
  {
    name: 'microsoft: basic authentication retired (5.7.30)',
    when: { enhanced: /^5\.7\.30$/ },
    kind: 'auth',
    status: SIGN_IN,
    text: '{where} refused the password sign-in of {login}: basic authentication is not supported{quoted}',
    fix: 'Exchange Online no longer takes passwords for SMTP AUTH: sign {serverPath} in with OAuth (preset: office365, oauth: client_id, client_secret, tenant) or use type: graph',
  },
  // "535 5.7.3 Authentication unsuccessful" (Microsoft 365) and "535-5.7.8 Username and Password not
  // accepted" (Gmail, https://support.google.com/a/answer/3726730). With an OAuth token, Microsoft
  // answers 5.7.3 when the app lacks SMTP.SendAsApp, its Exchange service principal or the mailbox
  // permission: https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
  {
    name: 'authentication unsuccessful (5.7.3, 5.7.8)',
    when: { basic: [535, 534], enhanced: /^5\.7\.(3|8|9)$/ },
    kind: 'auth',
    status: SIGN_IN,
    text: '{where} refused the sign-in of {login}{quoted}; check {passwordPath}',
    fix: 'the password at {passwordPath} is wrong or expired, or {login} is not the login (Gmail with 2-Step Verification takes an app password only; Microsoft 365: SMTP AUTH must be on for the mailbox)',
    oauthFix:
      'the upstream refused the access token for {login}: for Microsoft 365 give the app the SMTP.SendAsApp permission (Office 365 Exchange Online) with admin consent, ' +
      'register its service principal in Exchange (New-ServicePrincipal -AppId <client id> -ObjectId <enterprise app object id>) and give it the mailbox ' +
      '(Add-MailboxPermission -Identity {login} -User <service principal id> -AccessRights FullAccess); for Gmail the token needs the scope https://mail.google.com/ ({passwordPath})',
  },
  // Microsoft 365 NDR "5.7.60 SMTP; Client does not have permissions to send as this sender"
  // (SendAsDenied): https://learn.microsoft.com/exchange/mail-flow-best-practices/non-delivery-reports-in-exchange-online/non-delivery-reports-in-exchange-online
  // Send As: https://learn.microsoft.com/powershell/module/exchange/add-recipientpermission
  // Gmail: "Send emails from a different address or alias", https://support.google.com/mail/answer/22370
  // Kept permanent, as the upstream says (Postfix honours a 5xx): the sender learns at once, and
  // the notice carries the fix for the mail administrator.
  {
    name: 'send as denied (5.7.60, SendAsDenied)',
    when: { enhanced: /^5\.7\.60$/ },
    kind: 'sender',
    status: { upstream: '7.60' },
    text: '{where} refused the sender {mailbox} for account {account}{quoted}',
    fix:
      'grant {account} Send As on {mailbox}: Add-RecipientPermission -Identity {mailbox} -Trustee {account} -AccessRights SendAs (Exchange Online, effective within an hour); ' +
      'for Gmail add {mailbox} under "Send mail as" in the settings of {account}; or give the identity an override with the mailbox\'s own login',
    oauthFix:
      'grant the app Send As on {mailbox}: Add-RecipientPermission -Identity {mailbox} -Trustee <the app\'s service principal> -AccessRights SendAs ' +
      '(Exchange Online, effective within an hour); for Gmail add {mailbox} under "Send mail as" in the settings of {account}',
  },
  // Microsoft 365 "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException" after
  // DATA: the sending mailbox is over its quota (a copy of each message goes to its Sent Items).
  // https://learn.microsoft.com/exchange/mail-flow-best-practices/non-delivery-reports-in-exchange-online/non-delivery-reports-in-exchange-online
  // Temporary: the account's mailbox, not the recipient's, so ops can free it while messages wait.
  // At RCPT TO a 5.2.2 is the recipient's mailbox, left to the recipient row below.
  {
    name: 'sending mailbox full (5.2.2)',
    when: { command: ['DATA'], enhanced: /^5\.2\.2$/ },
    kind: 'refused',
    status: { upstream: '2.2', temporary: true },
    text: '{where} refused the message: the mailbox of {account} is full{quoted}',
    fix: 'the mailbox {account} is over its quota, Sent Items included: empty Sent Items / Deleted Items or raise its quota (Set-Mailbox -Identity {account} -ProhibitSendQuota …)',
  },
  // Gmail: "421 4.7.28 … unusual rate of unsolicited mail" and "421 4.7.0 Try again later, closing
  // connection", https://support.google.com/a/answer/3726730. A rate, not a broken host: no failover
  // (another host of the same provider counts the same account), the message waits.
  {
    name: 'gmail: rate (421 4.7.28)',
    when: { basic: [421, 451, 450], enhanced: /^4\.7\.28$/ },
    kind: 'throttled',
    status: THROTTLED,
    text: '{where} is limiting the rate of {account}{quoted}',
    fix: 'the provider is throttling {account} for its sending rate: the messages wait and go out later; lower rate: on {serverPath} or spread the identities over more accounts',
  },
  {
    name: 'gmail: try again later (421 4.7.0)',
    when: { basic: [421], enhanced: /^4\.7\.0$/, reply: /gsmtp|try again later/i },
    kind: 'throttled',
    status: THROTTLED,
    text: '{where} is throttling{quoted}',
    fix: 'Gmail asks to slow down: the messages wait and go out later; lower rate: on {serverPath} if it repeats',
  },
  // Gmail "550 5.4.5 Daily user sending limit exceeded" / "Daily sending quota exceeded":
  // https://support.google.com/a/answer/166852 (Workspace: 2,000 messages a day per user, rolling
  // 24 h; the account can send again within 1 to 24 hours). Waited for, never bounced: the
  // account is held until the window frees.
  {
    name: 'gmail: daily sending quota (5.4.5)',
    when: { enhanced: /^5\.4\.5$/ },
    kind: 'quota',
    status: { upstream: '4.5', temporary: true },
    account: 'hold',
    text: '{where} refused {account}: daily sending quota exceeded{quoted}',
    fix: 'Google Workspace allows 2,000 messages and 10,000 recipients a day per user (rolling 24 h; consumer Gmail and trial accounts fewer): the account is held and its messages wait until the quota frees; spread the identities over more accounts with overrides',
  },
  // Gmail "454 4.7.0 Too many login attempts, please try again later.":
  // https://support.google.com/a/answer/3726730. The account signs in too often: fewer sessions.
  {
    name: 'gmail: too many login attempts (454 4.7.0)',
    when: { basic: [454], reply: /too many login attempts/i },
    kind: 'throttled',
    status: { code: 451, enhanced: '4.7.0' },
    account: 'backoff',
    text: '{where} refused the sign-in of {login}: too many login attempts{quoted}',
    fix: '{login} signs in too often (each new connection signs in): the relay opens fewer connections for it for a while; check that no other system signs in with the same account',
  },
  // Microsoft 365 "530 5.7.57 Client not authenticated to send mail" and Gmail "530 5.7.0
  // Authentication Required" (RFC 4954 §6): the upstream wants SMTP AUTH and got none.
  // https://learn.microsoft.com/exchange/mail-flow-best-practices/how-to-set-up-a-multifunction-device-or-application-to-send-email-using-microsoft-365-or-office-365
  {
    name: 'authentication required (530, 5.7.57)',
    when: { basic: [530] },
    kind: 'auth',
    status: SIGN_IN,
    text: '{where} requires a sign-in before sending{quoted}',
    fix: 'the upstream takes mail only after SMTP AUTH: give {serverPath} `auth:` with the account (username and password, or oauth: with preset office365 / gmail); `auth: none` signs in with nothing',
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
