import { MICROSOFT_GRAPH_URL } from './defaults.js';
import { isRecord } from './raw.js';

/**
 * Provider presets: what `preset:` fills in on a server. Explicit keys in the YAML always win.
 * The README has the same table.
 */
export interface Preset {
  readonly host: string;
  readonly port: number;
  readonly security: 'starttls' | 'tls';
  readonly auth: 'xoauth2';
  readonly grant: 'client_credentials' | 'refresh_token';
  /** {tenant} is replaced by oauth.tenant. */
  readonly tokenUrl: string;
  readonly scope: { readonly client_credentials: string; readonly refresh_token: string; readonly graph: string };
  readonly graphUrl?: string;
  /** Per account (mailbox) limits, by `type:` (see LIMITS below). */
  readonly limits: { readonly smtp: PresetLimits; readonly graph: PresetLimits };
}

/** The provider's own limits per mailbox, as the keys of the same name on a server. */
export interface PresetLimits {
  readonly connections?: number;
  readonly rate?: string;
  readonly max_recipients?: number;
  readonly daily?: { readonly messages?: number; readonly recipients?: number };
}

export const PRESETS: Readonly<Record<'office365' | 'gmail', Preset>> = {
  office365: {
    host: 'smtp.office365.com',
    port: 587,
    security: 'starttls',
    auth: 'xoauth2',
    grant: 'client_credentials',
    tokenUrl: 'https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token',
    scope: {
      // app-only SMTP: one app token serves every mailbox the app may send as
      client_credentials: 'https://outlook.office365.com/.default',
      refresh_token: 'https://outlook.office.com/SMTP.Send offline_access',
      graph: 'https://graph.microsoft.com/.default',
    },
    graphUrl: MICROSOFT_GRAPH_URL,
    limits: {
      // SMTP AUTH submission, per mailbox: 3 concurrent connections (the 4th gets "432 4.3.2
      // STOREDRV.ClientSubmit; sender thread limit exceeded"), 30 messages a minute, 10,000
      // recipients per day (then "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException"):
      //   https://learn.microsoft.com/en-us/exchange/troubleshoot/send-emails/smtp-submission-improvements
      //   https://techcommunity.microsoft.com/t5/exchange-team-blog/changes-coming-to-the-smtp-authenticated-submission-client/ba-p/607825
      // 500 recipients per message, the recipient rate limit over a rolling 24 hours:
      //   https://learn.microsoft.com/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits#sending-limits-1
      smtp: { connections: 3, rate: '30/min', max_recipients: 500, daily: { recipients: 10_000 } },
      // Graph's Outlook limit: 4 concurrent requests per app per mailbox (429 beyond, Retry-After honoured):
      //   https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits
      graph: { connections: 4 },
    },
  },
  gmail: {
    host: 'smtp.gmail.com',
    port: 587,
    security: 'starttls',
    auth: 'xoauth2',
    grant: 'refresh_token',
    tokenUrl: 'https://oauth2.googleapis.com/token',
    scope: { client_credentials: 'https://mail.google.com/', refresh_token: 'https://mail.google.com/', graph: 'https://mail.google.com/' },
    // Google Workspace, per user over a rolling 24 hours: 2,000 messages, 10,000 recipients in total,
    // 100 recipients per message sent through smtp.gmail.com; over a limit the user can't send for up
    // to 24 h: https://support.google.com/a/answer/166852. Consumer Gmail is lower (about 500 a day:
    // https://ggappslegacy.com/gmail-doesnt-send-email-messages/): README says to override `daily`.
    limits: { smtp: { max_recipients: 100, daily: { messages: 2_000, recipients: 10_000 } }, graph: {} },
  },
};

/** The raw server mapping with the preset's values filled in where the YAML says nothing. */
export function withPreset(raw: Record<string, unknown>): Record<string, unknown> {
  const name = typeof raw.preset === 'string' ? raw.preset.toLowerCase() : undefined;
  if (name !== 'office365' && name !== 'gmail') return raw;
  const preset = PRESETS[name];
  const graph = typeof raw.type === 'string' && raw.type.toLowerCase() === 'graph';
  const out: Record<string, unknown> = { ...raw };
  if (!graph) {
    out.host ??= preset.host;
    out.port ??= preset.port;
    out.security ??= preset.security;
  }
  out.auth ??= preset.auth;
  fillLimits(out, preset.limits[graph ? 'graph' : 'smtp']);
  if (graph && preset.graphUrl) out.graph_url ??= preset.graphUrl;
  if (isRecord(raw.oauth)) {
    const oauth: Record<string, unknown> = { ...raw.oauth };
    oauth.grant ??= preset.grant;
    const grant = String(oauth.grant).toLowerCase() === 'refresh_token' ? 'refresh_token' : 'client_credentials';
    if (oauth.token_url === undefined && (name !== 'office365' || typeof oauth.tenant === 'string')) {
      oauth.token_url = preset.tokenUrl.replace('{tenant}', encodeURIComponent(String(oauth.tenant ?? '')));
    }
    oauth.scope ??= graph ? preset.scope.graph : preset.scope[grant];
    out.oauth = oauth;
  }
  return out;
}

/** The preset's limits where the YAML names none; `daily:` is filled key by key, `false` (off) is kept. */
function fillLimits(out: Record<string, unknown>, limits: PresetLimits): void {
  if (limits.connections !== undefined) out.connections ??= limits.connections;
  if (limits.rate !== undefined) out.rate ??= limits.rate;
  if (limits.max_recipients !== undefined) out.max_recipients ??= limits.max_recipients;
  if (limits.daily === undefined) return;
  if (out.daily === undefined || out.daily === null) out.daily = { ...limits.daily };
  else if (isRecord(out.daily)) out.daily = { ...limits.daily, ...out.daily };
}
