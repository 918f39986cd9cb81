import { ThreadExitedError } from '../threads/thread-exited.js';
import { RelayError, oneLine, type SmtpStatus } from './relay-error.js';
import { THREAD_EXITED, UPSTREAM_RULES, type RuleMatch, type RuleStatus, type UpstreamRule } from './upstream-rules.js';

/** The shape of the errors nodemailer's SMTP client produces. */
export interface UpstreamErrorLike {
  message?: string;
  code?: string;
  originalCode?: string;
  command?: string;
  response?: string;
  responseCode?: number;
  recipient?: string;
  /** Which of nodemailer's timers fired (CONNECT_TIMEOUT, GREETING_TIMEOUT, SOCKET_TIMEOUT…). */
  timeoutType?: string;
}

/** Which upstream, with which account: named in every upstream failure so ops know where to look. */
export interface UpstreamContext {
  readonly serverName: string;
  readonly host: string;
  readonly port: number;
  readonly login: string | undefined;
  /** Where the password for this login lives in the YAML (for xoauth2: where its OAuth credential does). */
  readonly passwordPath: string;
  /** How the account signs in: a row's `oauthFix` is for xoauth2 accounts. */
  readonly method?: string;
  /** The account's mailbox, the envelope sender it sends as. */
  readonly mailbox?: string;
  /** The server's key path, e.g. "servers[0]". */
  readonly serverPath?: string;
}

const ENHANCED_IN_REPLY = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/;

/** The enhanced status code the upstream put in its reply, if any. */
export function enhancedCodeOf(reply: string | undefined): string | undefined {
  return reply ? ENHANCED_IN_REPLY.exec(reply.trim())?.[1] : undefined;
}

/** What the rows of the table are matched against. */
interface Facts {
  readonly err: UpstreamErrorLike;
  readonly basic: number | undefined;
  readonly enhanced: string | undefined;
  readonly reply: string | undefined;
}

/**
 * Classifies a failure talking to the upstream by the first row of UPSTREAM_RULES that matches
 * (see upstream-rules.ts). The result carries the reply the client gets, whether the message may
 * be tried again (4xx) and whether the host counts as unreachable for failover.
 */
export function classifyUpstreamError(raw: unknown, ctx: UpstreamContext): RelayError {
  // already classified where it happened (e.g. the OAuth token endpoint, passed through nodemailer)
  if (raw instanceof RelayError) return raw;
  const err: UpstreamErrorLike = raw instanceof ThreadExitedError ? { code: THREAD_EXITED, message: raw.message } : ((raw ?? {}) as UpstreamErrorLike);
  const reply = err.response ? oneLine(err.response) : undefined;
  const facts: Facts = { err, basic: err.responseCode, enhanced: enhancedCodeOf(reply), reply };
  const rule = ruleFor(facts);
  return new RelayError(rule.kind, statusOf(rule.status, facts), reasonOf(rule.text, facts, ctx, raw), {
    upstreamReply: reply,
    cause: raw,
    unreachable: rule.unreachable ?? false,
    ...(fixTemplate(rule, ctx) ? { fix: reasonOf(fixTemplate(rule, ctx)!, facts, ctx, raw) } : {}),
    ...(rule.account ? { account: rule.account } : {}),
  });
}

/** The row that decides a failure (exported for tests: which row a sample hits). */
export function upstreamRuleFor(raw: UpstreamErrorLike): UpstreamRule {
  const reply = raw.response ? oneLine(raw.response) : undefined;
  return ruleFor({ err: raw, basic: raw.responseCode, enhanced: enhancedCodeOf(reply), reply });
}

function fixTemplate(rule: UpstreamRule, ctx: UpstreamContext): string | undefined {
  return ctx.method === 'xoauth2' ? rule.oauthFix ?? rule.fix : rule.fix;
}

function ruleFor(f: Facts): UpstreamRule {
  for (const rule of UPSTREAM_RULES) if (matches(rule.when, f)) return rule;
  // unreachable: the table ends with a row that matches anything
  throw new Error('no upstream rule matched');
}

function matches(when: RuleMatch, f: Facts): boolean {
  const { err } = f;
  if (when.code && !when.code.includes(err.code ?? '')) return false;
  if (when.command && !when.command.includes(err.command ?? '')) return false;
  if (when.timeoutType && !when.timeoutType.includes(err.timeoutType ?? '')) return false;
  if (when.originalCode && !when.originalCode.test(err.originalCode ?? '')) return false;
  if (when.message && !when.message.test(err.message ?? '')) return false;
  if (when.replied !== undefined && when.replied !== (f.basic !== undefined && f.basic >= 400)) return false;
  if (when.basic && !when.basic.some((b) => basicMatches(b, f.basic))) return false;
  if (when.enhanced && !when.enhanced.test(f.enhanced ?? '')) return false;
  if (when.reply && !when.reply.test(f.reply ?? '')) return false;
  return true;
}

function basicMatches(want: number | '4xx' | '5xx', basic: number | undefined): boolean {
  if (basic === undefined) return false;
  if (want === '4xx') return basic >= 400 && basic < 500;
  if (want === '5xx') return basic >= 500 && basic < 600;
  return basic === want;
}

function statusOf(status: RuleStatus, f: Facts): SmtpStatus {
  if (!('upstream' in status)) {
    const own = f.enhanced;
    return { code: status.code, enhanced: status.keepEnhanced && own && own[0] === String(status.code)[0] ? own : status.enhanced };
  }
  // codes that would mean something else coming from us (421 closes *our* session, 535 is about
  // *our* AUTH) become their plain equivalents
  const temporary = status.temporary ?? (f.basic !== undefined && f.basic < 500);
  const code = temporary ? (f.basic === 450 || f.basic === 451 || f.basic === 452 ? f.basic : 451) : f.basic !== undefined && f.basic >= 550 && f.basic <= 554 ? f.basic : 550;
  const cls = temporary ? '4' : '5';
  const own = f.enhanced;
  if (own && own[0] === cls) return { code, enhanced: own };
  // a class the row overrides keeps the upstream's detail: 5.2.0 waited for is 4.2.0
  return { code, enhanced: own && status.temporary !== undefined ? `${cls}${own.slice(1)}` : `${cls}.${status.upstream}` };
}

function reasonOf(template: string, f: Facts, ctx: UpstreamContext, raw: unknown): string {
  const { err } = f;
  const known: Record<string, string | undefined> = {
    where: `upstream ${ctx.serverName} (${ctx.host}:${ctx.port})`,
    reply: f.reply,
    quoted: f.reply ? `: ${f.reply}` : '',
    account: ctx.login ?? '(none)',
    login: ctx.login ?? '(no login)',
    passwordPath: ctx.passwordPath,
    mailbox: ctx.mailbox ?? ctx.login ?? '(none)',
    serverPath: ctx.serverPath ?? `server ${ctx.serverName}`,
    recipient: err.recipient ? `recipient ${err.recipient}` : 'every recipient',
    message: err.message ? oneLine(err.message) : raw === undefined || raw === null || typeof raw === 'object' ? undefined : String(raw),
    originalCode: err.originalCode,
  };
  return template.replace(/\{([^}]*)\}/g, (_all, alternatives: string) => {
    for (const name of alternatives.split('|')) {
      if (!(name in known)) return name;
      const value = known[name];
      if (value !== undefined && value !== '') return value;
    }
    return '';
  });
}
