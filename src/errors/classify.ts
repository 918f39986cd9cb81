import { RelayError, oneLine, type ErrorKind, type SmtpStatus } from './relay-error.js';

/** The shape of the errors nodemailer's SMTP client produces. */
export interface UpstreamErrorLike {
  message?: string;
  code?: string;
  originalCode?: string;
  command?: string;
  response?: string;
  responseCode?: number;
  recipient?: string;
}

/** Which upstream, with which account: named in every upstream failure so ops know where to look. */
export interface UpstreamContext {
  readonly serverName: string;
  readonly host: string;
  readonly port: number;
  readonly login: string | undefined;
  /** Where the password for this login lives in the YAML. */
  readonly passwordPath: string;
}

const TLS_ERROR = /^(CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO_SELF_SIGNED|HOSTNAME_MISMATCH|ERR_TLS_|ERR_SSL_|EPROTO$)/;

const ENHANCED_IN_REPLY = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/;

/** The enhanced status code the upstream put in its reply, if any. */
export function enhancedCodeOf(reply: string | undefined): string | undefined {
  return reply ? ENHANCED_IN_REPLY.exec(reply.trim())?.[1] : undefined;
}

/**
 * Classifies a failure talking to the upstream. The result carries the reply the client
 * gets: the upstream's own code and enhanced code where it gave one (its words are quoted), and
 * for failures of our own side (cannot connect, sign-in refused) a temporary 4xx so the client
 * keeps the message and tries again once ops fixed it, as Postfix does by default for SASL
 * failures (smtp_sasl_auth_soft_bounce).
 */
export function classifyUpstreamError(raw: unknown, ctx: UpstreamContext): RelayError {
  // already classified where it happened (e.g. the OAuth token endpoint, passed through nodemailer)
  if (raw instanceof RelayError) return raw;
  const err = (raw ?? {}) as UpstreamErrorLike;
  const where = `upstream ${ctx.serverName} (${ctx.host}:${ctx.port})`;
  const reply = err.response ? oneLine(err.response) : undefined;
  const code = err.responseCode;
  const quoted = reply ? `: ${reply}` : '';
  const make = (kind: ErrorKind, status: SmtpStatus, text: string) => new RelayError(kind, status, text, { upstreamReply: reply, cause: raw });
  const passthroughStatus = (fallback: string): SmtpStatus => upstreamStatus(code, reply, fallback);

  switch (err.code) {
    case 'EDNS':
      return make('network', { code: 451, enhanced: '4.4.3' }, `Cannot resolve ${where}: ${err.originalCode ?? err.message ?? 'DNS lookup failed'}`);
    case 'ETIMEDOUT':
      return make('network', { code: 451, enhanced: '4.4.1' }, `Timed out talking to ${where}`);
    case 'ECONNECTION':
    case 'ESOCKET': {
      if (code && code >= 400) break; // the server said something before closing: handled below
      // certificate problems surface as socket errors carrying OpenSSL's code
      if (TLS_ERROR.test(err.originalCode ?? '')) {
        return make('tls', { code: 451, enhanced: '4.7.5' }, `TLS with ${where} failed: ${oneLine(err.message ?? 'certificate not accepted')} (${err.originalCode})`);
      }
      const why = /ECONNREFUSED/.test(err.message ?? '') || err.originalCode === 'ECONNREFUSED' ? 'connection refused' : oneLine(err.message ?? 'connection failed');
      return make('network', { code: 451, enhanced: '4.4.1' }, `Cannot connect to ${where}: ${why}`);
    }
    case 'ETLS':
      return make('tls', { code: 451, enhanced: '4.7.5' }, `TLS with ${where} failed: ${oneLine(err.message ?? 'handshake failed')}`);
    case 'EAUTH':
      return make(
        'auth',
        { code: 451, enhanced: '4.7.0' },
        `${where} refused the sign-in of ${ctx.login ?? '(no login)'}${quoted}; check ${ctx.passwordPath}`,
      );
    case 'EMESSAGE':
      // nodemailer also uses EMESSAGE for any refusal after DATA; only its own size check has no reply
      if (!code) return make('size', { code: 552, enhanced: '5.3.4' }, `${where} does not accept a message this large (${oneLine(err.message ?? '')})`);
      break;
  }

  if (code === 421 || (code !== undefined && code < 500 && /^4\.7\./.test(enhancedCodeOf(reply) ?? ''))) {
    return make('throttled', { code: 451, enhanced: enhancedCodeOf(reply) ?? '4.7.0' }, `${where} is throttling${quoted}`);
  }
  if (err.command === 'MAIL FROM') {
    return make('sender', passthroughStatus('7.1'), `${where} refused the sender for account ${ctx.login ?? '(none)'}${quoted}`);
  }
  if (err.command === 'RCPT TO') {
    return make('recipient', passthroughStatus('1.1'), `${where} refused ${err.recipient ? `recipient ${err.recipient}` : 'every recipient'}${quoted}`);
  }
  if (code === 552 || code === 523 || /^5\.3\.4$|^5\.2\.3$/.test(enhancedCodeOf(reply) ?? '')) {
    return make('size', passthroughStatus('3.4'), `${where} refused the message as too large${quoted}`);
  }
  if (code !== undefined && code >= 400) {
    return make('refused', passthroughStatus('0.0'), `${where} refused the message${quoted}`);
  }
  return make('network', { code: 451, enhanced: '4.4.0' }, `Delivery through ${where} failed: ${oneLine(err.message ?? String(raw))}`);
}

/**
 * The reply code to pass an upstream refusal on with. 4xx and 5xx are kept apart; codes that
 * would mean something else coming from us (421 closes *our* session, 535 is about *our* AUTH)
 * are mapped to their plain equivalents.
 */
function upstreamStatus(code: number | undefined, reply: string | undefined, detailFallback: string): SmtpStatus {
  const temporary = code !== undefined && code < 500;
  const basic = temporary ? ([450, 451, 452].includes(code) ? code : 451) : code !== undefined && [550, 551, 552, 553, 554].includes(code) ? code : 550;
  const enhanced = enhancedCodeOf(reply);
  const cls = temporary ? '4' : '5';
  return { code: basic, enhanced: enhanced && enhanced[0] === cls ? enhanced : `${cls}.${detailFallback}` };
}
