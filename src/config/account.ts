import { PASSWORD_METHODS } from './auth.js';
import type { Secret } from './secret.js';
import { serverOf, type AuthMethod, type ConfigSnapshot, type IdentityConfig, type OAuthConfig, type ServerConfig } from './types.js';
import { RelayError } from '../errors/relay-error.js';
import { wireAddress } from '../mail/address.js';

/** The upstream account a message is sent with: which server, which login, which mailbox. */
export interface Account {
  readonly server: ServerConfig;
  /** `override`: the identity's own login; `server`: the server's own account. */
  readonly via: 'override' | 'server';
  /** How it signs in: the override's `auth`, else the server's. */
  readonly method: AuthMethod;
  /** For xoauth2: the server's OAuth client, with the account's own refresh token where it has one. */
  readonly oauth: OAuthConfig | undefined;
  /** Where this account's refresh token would be configured, for messages. */
  readonly oauthPath: string | undefined;
  readonly username: string | undefined;
  readonly password: Secret | undefined;
  /** The account's mailbox: the final From and envelope sender (ASCII domain). */
  readonly address: string;
  /** Stable name for pooling and logs: "main/support@acme.example". Never includes a secret. */
  readonly key: string;
  /** Where ops fix this account's password, e.g. "channels[0].override.password". */
  readonly passwordPath: string;
  /**
   * The config entry the account is built from besides `server`: the overriding identity, else the
   * server itself. Config objects never change (a reload builds new ones), so (server, origin)
   * stands for the account's settings: the pools cache what they compute from an account under it.
   */
  readonly origin: IdentityConfig | ServerConfig;
}

/**
 * The account for an identity, or for the default server's own account when `identity` is
 * undefined (unknown_sender: default). Evaluated against the snapshot at hand, so moving
 * `default: true` moves every identity that doesn't name a server.
 */
export function accountFor(snapshot: ConfigSnapshot, identity: IdentityConfig | undefined): Account | RelayError {
  const server = identity ? serverOf(snapshot, identity) : snapshot.defaultServer;
  if (identity?.override) {
    const { username, password } = identity.override;
    const method = identity.override.auth ?? server.auth;
    if (password === undefined && PASSWORD_METHODS.has(method)) {
      return new RelayError(
        'config',
        { code: 554, enhanced: '5.3.5' },
        `${identity.kind} "${identity.name}" (${identity.address}) has no email password configured: it overrides the server account, so an admin must set ${identity.path}.override.password before it can send`,
      );
    }
    return {
      server,
      via: 'override',
      method,
      oauth: server.oauth ? { ...server.oauth, refreshToken: identity.override.refreshToken } : undefined,
      oauthPath: `${identity.path}.override.oauth.refresh_token`,
      username,
      password,
      address: wireAddress(identity.address),
      key: `${server.name}/${username}`,
      passwordPath: `${identity.path}.override.password`,
      origin: identity,
    };
  }
  if (!hasOwnAccount(server)) {
    // relations.ts refuses such a config at load; a reload may still move an identity onto it
    const who = identity ? `${identity.kind} "${identity.name}" (${identity.address}) sends` : 'a message without identity (unknown_sender: default, or a failure notice) is sent';
    return new RelayError('config', { code: 554, enhanced: '5.3.5' }, `${who} with server "${server.name}"'s own account, and that server has none`, {
      fix: identity ? `give ${identity.path} an \`override:\` with its own account, or set ${server.path}.address (and the sign-in)` : `set ${server.path}.address (and the sign-in)`,
    });
  }
  return serverAccount(server);
}

/** A server with a username or an address has an account of its own; one without is used only by identities that override. */
export function hasOwnAccount(server: ServerConfig): boolean {
  return server.address !== '';
}

/**
 * A server's own account (the "server configuration" identities use when they don't override).
 * Built once per server object (config objects never change; a reload brings new ones): every
 * message of an identity without override asks for it.
 */
export function serverAccount(server: ServerConfig): Account {
  let account = serverAccounts.get(server);
  if (!account) serverAccounts.set(server, (account = buildServerAccount(server)));
  return account;
}

const serverAccounts = new WeakMap<ServerConfig, Account>();

function buildServerAccount(server: ServerConfig): Account {
  return {
    server,
    via: 'server',
    method: server.auth,
    oauth: server.oauth,
    oauthPath: `${server.path}.oauth.refresh_token`,
    username: server.username,
    password: server.password,
    address: wireAddress(server.address),
    key: `${server.name}/${server.username ?? server.address}`,
    passwordPath: `${server.path}.password`,
    origin: server,
  };
}
