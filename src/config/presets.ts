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
  },
  gmail: {
    host: 'smtp.gmail.com',
    port: 587,
    security: 'starttls',
    auth: 'xoauth2',
    grant: 'refresh_token',
    tokenUrl: 'https://oauth2.googleapis.com/token',
    scope: { client_credentials: 'https://mail.google.com/', refresh_token: 'https://mail.google.com/', graph: 'https://mail.google.com/' },
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
