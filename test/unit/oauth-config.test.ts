import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { accountFor } from '../../src/config/account.js';
import { poolOptions } from '../../src/transport/options.js';

const FILE = '/etc/sendas/relay.yaml';
const parse = (yaml: string) => parseConfig(yaml, FILE, { env: { M365_SECRET: 'app-secret' } });
const problems = (yaml: string): string[] => {
  try {
    parse(yaml);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  throw new Error('expected a ConfigError');
};

describe('presets and OAuth settings', () => {
  it('preset office365 fills host, port, security, auth, token URL (with the tenant) and the app-only scope', () => {
    const s = parse(`servers:
  - name: m365
    preset: office365
    username: relay@contoso.com
    oauth:
      tenant: contoso.onmicrosoft.com
      client_id: 00000000-0000-0000-0000-000000000000
      client_secret: {env: M365_SECRET}
`);
    const server = s.servers[0]!;
    expect([server.host, server.port, server.security, server.auth]).toEqual(['smtp.office365.com', 587, 'starttls', 'xoauth2']);
    expect(server.oauth).toMatchObject({
      grant: 'client_credentials',
      tokenUrl: 'https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token',
      scope: 'https://outlook.office365.com/.default',
    });
    expect(server.oauth?.clientSecret?.reveal()).toBe('app-secret');
  });

  it('preset gmail uses refresh tokens; explicit keys win over the preset', () => {
    const s = parse(`servers:
  - name: gmail
    preset: gmail
    port: 465
    security: tls
    username: relay@example.com
    oauth:
      client_id: cid
      client_secret: cs
      scope: https://mail.google.com/ openid
`);
    const server = s.servers[0]!;
    expect([server.host, server.port, server.security]).toEqual(['smtp.gmail.com', 465, 'tls']);
    expect(server.oauth).toMatchObject({ grant: 'refresh_token', tokenUrl: 'https://oauth2.googleapis.com/token', scope: 'https://mail.google.com/ openid' });
  });

  it('preset office365 with type graph targets Graph with the Graph scope', () => {
    const s = parse(`servers:
  - name: graph
    preset: office365
    type: graph
    username: relay@contoso.com
    oauth: {tenant: contoso.onmicrosoft.com, client_id: cid, client_secret: cs}
`);
    expect(s.servers[0]).toMatchObject({ type: 'graph', graphUrl: 'https://graph.microsoft.com', host: '' });
    expect(s.servers[0]!.oauth?.scope).toBe('https://graph.microsoft.com/.default');
  });

  it('an override with auth xoauth2 and its own refresh token signs in as itself with the server app', () => {
    const s = parse(`servers:
  - name: gmail
    preset: gmail
    username: relay@example.com
    oauth: {client_id: cid, client_secret: cs, refresh_token: rt-server}
agents:
  - name: alice
    address: alice@example.com
    override:
      oauth: {refresh_token: rt-alice}
`);
    const account = accountFor(s, s.identitiesByName.get('alice'));
    if (account instanceof Error) throw account;
    expect([account.method, account.username, account.oauth?.refreshToken?.reveal(), account.oauthPath]).toEqual(['xoauth2', 'alice@example.com', 'rt-alice', 'agents[0].override.oauth.refresh_token']);
    const options = poolOptions(account, { helo: 'relay.test', maxConnections: 5, connectionTimeoutMs: 1, socketTimeoutMs: 1 });
    expect(options.auth).toMatchObject({ type: 'OAuth2', user: 'alice@example.com' });
    expect(JSON.stringify(options)).not.toContain('rt-alice');
  });

  it('reports what an OAuth server is missing', () => {
    expect(
      problems(`servers:
  - name: m365
    default: true
    preset: office365
    username: relay@contoso.com
    oauth: {client_id: cid}
  - name: bare
    host: smtp.example.com
    auth: xoauth2
    username: relay@example.com
`),
    ).toEqual([
      'servers[0].oauth: needs `tenant:` (e.g. contoso.onmicrosoft.com) or `token_url:`',
      'servers[0].oauth: grant client_credentials needs `client_secret:`',
      'servers[1]: auth xoauth2 needs `oauth:` (client_id, client_secret, grant; token_url or preset office365 with tenant)',
    ]);
  });

  it('an oauth block or type graph makes xoauth2 the default sign-in', () => {
    const s = parse(`servers:
  - name: graph
    type: graph
    username: relay@contoso.com
    oauth: {client_id: cid, client_secret: cs, token_url: https://login.example/token}
`);
    expect(s.servers[0]!.auth).toBe('xoauth2');
  });

  it('type graph must use the app token', () => {
    expect(
      problems(`servers:
  - name: graph
    type: graph
    username: relay@contoso.com
    oauth: {client_id: cid, grant: refresh_token, token_url: https://login.example/token}
`),
    ).toEqual(['servers[0].oauth.grant: type graph sends with the app token: use grant client_credentials']);
  });

  it('refuses a bearer token in plain text to another host too', () => {
    expect(
      problems(`servers:
  - name: m365
    host: smtp.contoso.com
    security: none
    auth: xoauth2
    username: relay@contoso.com
    oauth: {client_id: cid, client_secret: cs, token_url: https://login.example/token}
`),
    ).toEqual([
      'servers[0].security: auth xoauth2 with security: none would send the access token in plain text to smtp.contoso.com; use starttls or tls, or set `allow_plaintext_auth: true` on this server',
    ]);
  });

  it('passes TLS servername, min_version and the proxy to the transport', () => {
    const s = parse(`servers:
  - name: main
    host: 10.0.0.5
    username: relay@example.com
    password: pw
    proxy: socks5://127.0.0.1:1080
    tls: {servername: smtp.example.com, min_version: TLSv1.3}
`);
    const account = accountFor(s, undefined);
    if (account instanceof Error) throw account;
    const options = poolOptions(account, { helo: 'relay.test', maxConnections: 5, connectionTimeoutMs: 1, socketTimeoutMs: 1 });
    expect(options.tls).toMatchObject({ servername: 'smtp.example.com', minVersion: 'TLSv1.3', rejectUnauthorized: true });
    expect(options.proxy).toBe('socks5://127.0.0.1:1080');
    expect(problems(s.file && `servers:\n  - name: main\n    host: h.example\n    username: a@b.example\n    password: x\n    proxy: ftp://nope\n`)).toEqual([
      'servers[0].proxy: must be socks5://host:port or http://host:port',
    ]);
  });
});
