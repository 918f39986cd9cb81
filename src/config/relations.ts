import { addressKey } from '../mail/address.js';
import { effectiveAuth, PASSWORD_METHODS } from './auth.js';
import { DEFAULTS } from './defaults.js';
import { closest, type ReportIssue } from './issues.js';
import { PRESETS } from './presets.js';
import { asArray, isRecord } from './raw.js';
import type { AuthMethod, ConfigWarning } from './types.js';

/**
 * Rules that span keys: one default server, unique names and addresses, references between
 * servers, channels, agents and clients, what an auth method needs. They read the document before
 * validation, so a file with schema problems still gets these reported in the same run.
 */

interface RawServerView {
  index: number;
  name: string | undefined;
  isDefault: boolean;
}

/** Reports the problems through `at`; returns the warnings (allowed, but worth saying at start). */
export function checkRelations(raw: Record<string, unknown>, at: ReportIssue): ConfigWarning[] {
  const warnings: ConfigWarning[] = [];
  const servers = asArray(raw.servers);
  const serverViews: RawServerView[] = servers.map((s, index) => ({
    index,
    name: isRecord(s) && typeof s.name === 'string' ? s.name : undefined,
    isDefault: isRecord(s) && s.default === true,
  }));

  const serverNames = new Map<string, number>();
  for (const s of serverViews) {
    if (s.name === undefined) continue;
    const first = serverNames.get(s.name);
    if (first !== undefined) at(['servers', s.index, 'name'], `duplicate server name "${s.name}" (already used by servers[${first}])`);
    else serverNames.set(s.name, s.index);
  }

  const defaults = serverViews.filter((s) => s.isDefault);
  if (servers.length > 1 && defaults.length === 0) {
    at(['servers'], 'no server is the default: set `default: true` on exactly one server');
  }
  if (defaults.length > 1) {
    for (const s of defaults.slice(1)) {
      at(['servers', s.index, 'default'], `only one server can be the default, and servers[${defaults[0]!.index}] ("${defaults[0]!.name}") already is`);
    }
  }

  servers.forEach((s, i) => {
    if (!isRecord(s)) return;
    const auth = effectiveAuth(s);
    const type = typeof s.type === 'string' ? s.type.toLowerCase() : DEFAULTS.server.type;
    const security = typeof s.security === 'string' ? s.security.toLowerCase() : DEFAULTS.server.security;
    const oauth = isRecord(s.oauth) ? s.oauth : undefined;
    if (type === 'smtp' && s.host === undefined) at(['servers', i], 'needs `host:` (or a `preset:`)');
    if (PASSWORD_METHODS.has(auth) && s.username === undefined) {
      at(['servers', i], `auth is ${auth} but no username is set: add \`username:\` or set \`auth: none\``);
    }
    if (PASSWORD_METHODS.has(auth) && s.password === undefined) {
      at(['servers', i], `auth is ${auth} but no password is set: add \`password:\` (a string, {env: NAME} or {file: PATH})`);
    }
    if (type !== 'graph' && s.save_to_sent_items !== undefined) {
      // over SMTP the mailbox's own settings decide; nothing in the submission can say it
      at(['servers', i, 'save_to_sent_items'], 'applies to type graph only (over SMTP, Exchange and Gmail keep their own copy as the mailbox is set up)');
    }
    if ((auth === 'xoauth2' || type === 'graph') && !oauth) {
      at(['servers', i], `${type === 'graph' ? 'type graph' : 'auth xoauth2'} needs \`oauth:\` (client_id, client_secret, grant; token_url or preset office365 with tenant)`);
    }
    if (oauth) {
      const grant = typeof oauth.grant === 'string' ? oauth.grant.toLowerCase() : DEFAULTS.server.grant;
      if (oauth.token_url === undefined) {
        at(['servers', i, 'oauth'], s.preset === 'office365' ? 'needs `tenant:` (e.g. contoso.onmicrosoft.com) or `token_url:`' : 'needs `token_url:` (or a `preset:`)');
      }
      if (grant === 'client_credentials' && oauth.client_secret === undefined) {
        at(['servers', i, 'oauth'], 'grant client_credentials needs `client_secret:`');
      }
      if (type === 'graph' && grant !== 'client_credentials') {
        at(['servers', i, 'oauth', 'grant'], 'type graph sends with the app token: use grant client_credentials');
      }
    }
    // no username and no address: a server without an account of its own, valid while every
    // identity on it overrides (checked with the identities below)
    if (s.address === undefined && typeof s.username === 'string' && !s.username.includes('@')) {
      at(['servers', i, 'username'], `"${s.username}" is not an email address, so set \`address:\` to the account's mailbox`);
    }
    // a password or token in plain text: fine on this host, refused towards any other unless written explicitly
    if (type === 'smtp' && auth !== 'none' && auth !== 'cram-md5' && security === 'none') {
      const host = typeof s.host === 'string' ? s.host : '';
      if (!isLoopbackHost(host) && s.allow_plaintext_auth !== true) {
        at(['servers', i, 'security'], `auth ${auth} with security: none would send the ${auth === 'xoauth2' ? 'access token' : 'password'} in plain text to ${host}; use starttls or tls, or set \`allow_plaintext_auth: true\` on this server`);
      } else {
        warnings.push({
          path: `servers[${i}]`,
          message: `server "${String(s.name)}" sends its ${auth === 'xoauth2' ? 'access token' : 'password'} in plain text (auth ${auth} with security: none)${isLoopbackHost(host) ? ' to this host' : ', allowed by allow_plaintext_auth'}`,
        });
      }
    }
    if (isRecord(s.tls) && s.tls.reject_unauthorized === false) {
      warnings.push({ path: `servers[${i}].tls.reject_unauthorized`, message: `server "${String(s.name)}" accepts any TLS certificate: its password can be intercepted` });
    }
  });

  const identityNames = new Map<string, string>();
  const identityAddresses = new Map<string, string>();
  for (const kind of ['channels', 'agents'] as const) {
    asArray(raw[kind]).forEach((item, i) => {
      if (!isRecord(item)) return;
      const here = `${kind}[${i}]`;
      if (typeof item.name === 'string') {
        const first = identityNames.get(item.name);
        if (first !== undefined) at([kind, i, 'name'], `duplicate name "${item.name}" (already used by ${first}; channels and agents share one set of names)`);
        else identityNames.set(item.name, here);
      }
      if (typeof item.address === 'string') {
        const key = addressKey(item.address);
        const first = identityAddresses.get(key);
        if (first !== undefined) at([kind, i, 'address'], `address ${item.address} is already used by ${first} (addresses are compared case-insensitively)`);
        else identityAddresses.set(key, here);
      }
      if (typeof item.server === 'string' && !serverNames.has(item.server)) {
        const hint = closest(item.server, [...serverNames.keys()]);
        at([kind, i, 'server'], `unknown server "${item.server}"${hint ? ` (did you mean "${hint}"?)` : ''}; servers are: ${[...serverNames.keys()].join(', ') || '(none)'}`);
      }
      const override = item.override;
      const serverName = typeof item.server === 'string' ? item.server : defaults[0]?.name ?? serverViews[0]?.name;
      const server = servers.find((s) => isRecord(s) && s.name === serverName);
      if (override === undefined && isRecord(server) && !hasOwnAccount(server)) {
        const label = `${kind === 'channels' ? 'channel' : 'agent'} "${String(item.name)}"`;
        at([kind, i], `${label} sends with server "${String(serverName)}"'s own account, and that server has none: give ${label} an \`override:\` with its own account, or set \`address:\` (and the sign-in) on servers[${servers.indexOf(server)}]`);
      }
      const overrideAuth = isRecord(override) && typeof override.auth === 'string' ? (override.auth.toLowerCase() as AuthMethod) : undefined;
      if (overrideAuth === 'xoauth2' && !(isRecord(server) && isRecord(server.oauth))) {
        at([kind, i, 'override', 'auth'], `auth xoauth2 needs \`oauth:\` on server "${String(serverName)}" (client_id, client_secret, token_url or preset)`);
      }
      if (override !== undefined && (override === null || (isRecord(override) && override.password === undefined))) {
        const method = overrideAuth ?? (isRecord(server) ? effectiveAuth(server) : 'login');
        if (PASSWORD_METHODS.has(method)) {
          warnings.push({
            path: `${here}.override`,
            message: `${kind === 'channels' ? 'channel' : 'agent'} "${String(item.name)}" overrides the server account but has no password: its messages are refused until \`${here}.override.password\` is set`,
          });
        }
      }
    });
  }

  // the default server's own account also sends for unknown senders and sends the failure notices
  const defaultIndex = defaults[0]?.index ?? (servers.length === 1 ? 0 : undefined);
  const defaultServer = defaultIndex === undefined ? undefined : servers[defaultIndex];
  if (isRecord(defaultServer) && !hasOwnAccount(defaultServer)) {
    const policy = isRecord(raw.policy) ? raw.policy : undefined;
    if (typeof policy?.unknown_sender === 'string' && policy.unknown_sender.toLowerCase() === 'default') {
      at(['policy', 'unknown_sender'], `unknown_sender: default sends with the default server's own account, and servers[${defaultIndex}] has none: set \`address:\` (and the sign-in) on servers[${defaultIndex}], or use unknown_sender: reject`);
    }
    const delivery = typeof raw.delivery === 'string' ? raw.delivery.toLowerCase() : DEFAULTS.delivery;
    if (delivery !== 'passthrough') {
      warnings.push({
        path: `servers[${defaultIndex}]`,
        message: `the default server "${String(defaultServer.name)}" has no account of its own, so no failure notice can be sent for a message that fails in the queue: set \`address:\` (and the sign-in) on it to have notices sent`,
      });
    }
  }

  const clientNames = new Map<string, number>();
  asArray(raw.clients).forEach((c, i) => {
    if (!isRecord(c)) return;
    if (typeof c.username === 'string') {
      const first = clientNames.get(c.username);
      if (first !== undefined) at(['clients', i, 'username'], `duplicate client username "${c.username}" (already clients[${first}])`);
      else clientNames.set(c.username, i);
    }
    asArray(c.send_as).forEach((n, j) => {
      if (typeof n === 'string' && !identityNames.has(n)) {
        const hint = closest(n, [...identityNames.keys()]);
        at(['clients', i, 'send_as', j], `"${n}" is not the name of a channel or agent${hint ? ` (did you mean "${hint}"?)` : ''}`);
      }
    });
  });
  return warnings;
}

/** A server with a username or an address signs in and sends as an account of its own. */
function hasOwnAccount(server: Record<string, unknown>): boolean {
  return server.username !== undefined || server.address !== undefined;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * `preset: office-365`: said once, with the likely name, before schema and relations run. The
 * preset would have filled in host, port, security, auth and the OAuth endpoint, so the problems
 * of their absence are follow-ons: `isFollowOn` tells load.ts which to leave out.
 */
export function checkPresetNames(raw: Record<string, unknown>, at: ReportIssue): { isFollowOn: (path: readonly (string | number)[]) => boolean } {
  const known = Object.keys(PRESETS);
  const unknown = new Set<number>();
  asArray(raw.servers).forEach((s, i) => {
    if (!isRecord(s) || s.preset === undefined) return;
    if (typeof s.preset === 'string' && known.includes(s.preset.toLowerCase())) return;
    const written = typeof s.preset === 'string' ? s.preset : JSON.stringify(s.preset);
    const hint = typeof s.preset === 'string' ? closest(s.preset.replace(/[\s_-]/g, ''), known) : undefined;
    at(['servers', i, 'preset'], `unknown preset "${written}"${hint ? `; did you mean "${hint}"?` : ''} (known: ${known.join(', ')})`);
    unknown.add(i);
  });
  const PRESET_FILLS = new Set(['preset', 'security', 'oauth', 'port', 'auth']);
  return {
    isFollowOn: (path) => {
      const [top, index, key] = path;
      if (top !== 'servers' || typeof index !== 'number' || !unknown.has(index)) return false;
      return key === undefined || (typeof key === 'string' && PRESET_FILLS.has(key) && path.length <= 3);
    },
  };
}
