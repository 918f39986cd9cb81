/**
 * `sendas test` for the accounts the product is for: XOAUTH2 with an app token
 * (client_credentials, `preset: office365`), XOAUTH2 with refresh tokens (a server account and an
 * identity's override; rotated tokens kept in state_dir), and Microsoft Graph. The compiled CLI
 * in a real process, against local token, SMTP and Graph stand-ins. The tests run one after the
 * other so each can count the token requests it caused.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compiledCli, runProcess, type ProcessResult } from '../support/cli.js';
import { startOAuthServer, type OAuthServer } from '../support/oauth-server.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { startGraphServer, type GraphServer } from '../support/graph-server.js';

const SECRETS = {
  APP_SECRET: 'app-Kx71-secret',
  WRONG_SECRET: 'wrong-Pz33-secret',
  DESK_RT: 'rt-desk-Qm12-secret',
  DESK2_RT: 'rt-desk2-Vb45-secret',
  REVOKED_RT: 'rt-revoked-Hn08-secret',
} as const;
const APP = { clientId: 'sendas-app', clientSecret: SECRETS.APP_SECRET };
const TENANT = 'contoso.onmicrosoft.com';

let tmp: string;
let cli: string;
let config: string;
let oauth: OAuthServer;
let m365: TestUpstream;
let gmail: TestUpstream;
let graph: GraphServer;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'sendas-test-oauth-'));
  cli = await compiledCli(tmp);
  oauth = await startOAuthServer({
    clients: [APP],
    rotateRefreshTokens: true,
    refreshTokens: { [SECRETS.DESK_RT]: 'desk@acme.example', [SECRETS.DESK2_RT]: 'desk2@acme.example' },
  });
  // accepts a token the OAuth server issued: an app token for any mailbox, a user token for its user
  const validToken = (user: string, token: string) => {
    const t = oauth.validate(token);
    return Boolean(t && (t.user === null || t.user === user));
  };
  m365 = await startTestUpstream({
    xoauth2: validToken,
    refuseAuth: (user) =>
      user === 'blocked@contoso.example'
        ? { code: 535, message: '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.' }
        : undefined,
  });
  gmail = await startTestUpstream({ xoauth2: validToken });
  graph = await startGraphServer({
    validateToken: (token) => {
      const t = oauth.validate(token);
      return { ok: Boolean(t), appOnly: t?.user === null, user: t?.user ?? null };
    },
    users: ['relay@contoso.example'],
  });
  const tokenUrl = `${oauth.url}/${TENANT}/oauth2/v2.0/token`;
  const m365Server = (name: string, username: string, secret: string) => `
  - name: ${name}
    preset: office365
    host: 127.0.0.1
    port: ${m365.port}
    security: none
    username: ${username}
    oauth:
      tenant: ${TENANT}
      client_id: ${APP.clientId}
      client_secret: {env: ${secret}}
      token_url: ${tokenUrl}`;
  const gmailServer = (name: string, username: string, rt: string) => `
  - name: ${name}
    preset: gmail
    host: 127.0.0.1
    port: ${gmail.port}
    security: none
    username: ${username}
    oauth:
      client_id: ${APP.clientId}
      client_secret: {env: APP_SECRET}
      token_url: ${oauth.tokenUrl}
      refresh_token: {env: ${rt}}`;
  const graphServer = (name: string, secret: string, address = 'relay@contoso.example') => `
  - name: ${name}
    type: graph
    preset: office365
    graph_url: ${graph.url}
    address: ${address}
    oauth:
      tenant: ${TENANT}
      client_id: ${APP.clientId}
      client_secret: {env: ${secret}}
      token_url: ${tokenUrl}`;
  config = join(tmp, 'relay.yaml');
  writeFileSync(
    config,
    `listen:
  host: 127.0.0.1
  port: 0
state_dir: ./state
servers:${m365Server('m365', 'relay@contoso.example', 'APP_SECRET').replace('preset:', 'default: true\n    preset:')}${m365Server('m365-wrong', 'relay@contoso.example', 'WRONG_SECRET')}${m365Server('m365-blocked', 'blocked@contoso.example', 'APP_SECRET')}${gmailServer('gmail', 'desk@acme.example', 'DESK_RT')}${gmailServer('gmail-revoked', 'gone@acme.example', 'REVOKED_RT')}${graphServer('graph', 'APP_SECRET')}${graphServer('graph-wrong', 'WRONG_SECRET')}${m365Server('m365-none', 'x', 'APP_SECRET').replace('\n    username: x', '')}${graphServer('graph-nobody', 'APP_SECRET', 'nobody@contoso.example')}
channels:
  - name: desk2
    address: desk2@acme.example
    server: gmail
    override:
      username: desk2@acme.example
      oauth: {refresh_token: {env: DESK2_RT}}
  - name: team
    address: team@contoso.example
    server: m365-none
    override: {username: team@contoso.example}
`,
  );
}, 120_000);

afterAll(async () => {
  await Promise.all([oauth?.close(), m365?.close(), gmail?.close(), graph?.close()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** `sendas test` with the secrets in its environment; returns what it printed and how many token requests it made. */
async function sendasTest(args: readonly string[]): Promise<ProcessResult & { tokenRequests: number }> {
  const before = oauth.requests.length;
  const r = await runProcess(process.execPath, [cli, 'test', '--config', config, ...args], { cwd: tmp, env: { PATH: process.env.PATH, ...SECRETS } }, 60_000);
  const text = `${r.stdout}${r.stderr}`;
  for (const secret of [...Object.values(SECRETS), ...oauth.issued.map((t) => t.accessToken), ...oauth.refreshTokens.map((t) => t.refreshToken)]) {
    expect(text).not.toContain(secret);
  }
  return { ...r, tokenRequests: oauth.requests.length - before };
}

describe('sendas test with OAuth accounts', { timeout: 90_000 }, () => {
  it('preset office365, client_credentials, right secret: asks the token endpoint once and signs in with the token', async () => {
    const r = await sendasTest(['--server', 'm365']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.tokenRequests).toBe(1);
    expect(oauth.requests.at(-1)).toMatchObject({ grant: 'client_credentials', clientId: APP.clientId, ok: true, tenant: TENANT });
    expect(r.stdout).toContain(
      "login: relay@contoso.example (the server's account, auth xoauth2, grant client_credentials: app token for client sendas-app, secret from servers[0].oauth.client_secret)\n",
    );
    expect(r.stdout).toMatch(/\nOK: access token from http:\/\/127\.0\.0\.1:\d+\/contoso\.onmicrosoft\.com\/oauth2\/v2\.0\/token \(grant client_credentials, valid \d+ s\)\n/);
    expect(r.stdout).toContain('OK: signed in as relay@contoso.example with the token\n');
    expect(r.stdout).not.toContain('password');
    expect(m365.xoauth2Attempts.at(-1)).toMatchObject({ username: 'relay@contoso.example', ok: true });
  });

  it('with --to, the test message goes out with the app token as the mailbox', async () => {
    const to = 'ops-m365@customer.example';
    const r = await sendasTest(['--server', 'm365', '--to', to]);
    expect(r.code).toBe(0);
    expect(r.tokenRequests).toBe(1);
    const got = m365.messages.filter((m) => m.rcptTo.includes(to));
    expect(got).toHaveLength(1);
    expect(got[0]!.login).toBe('relay@contoso.example');
    expect(got[0]!.mailFrom).toBe('relay@contoso.example');
  });

  it('a wrong client secret: FAILED at the token endpoint with invalid_client and the client_secret key, asked once', async () => {
    const r = await sendasTest(['--server', 'm365-wrong']);
    expect(r.code).toBe(1);
    expect(r.tokenRequests).toBe(1);
    expect(oauth.requests.at(-1)).toMatchObject({ grant: 'client_credentials', ok: false, error: 'invalid_client' });
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.at(-2)).toMatch(/^FAILED at token endpoint: 451 4\.7\.0 auth: OAuth token endpoint refused account relay@contoso\.example \(invalid_client/);
    expect(lines.at(-1)).toBe('fix: client secret wrong or expired: servers[1].oauth.client_secret (create a new one for client sendas-app, or check servers[1].oauth.client_id)');
    expect(r.stdout).not.toContain('.password');
    expect(r.stdout).not.toContain('OK: signed in');
  });

  it('535 5.7.139 from the upstream: FAILED at sign-in with the token, and the Set-CASMailbox fix', async () => {
    const r = await sendasTest(['--server', 'm365-blocked']);
    expect(r.code).toBe(1);
    expect(r.tokenRequests).toBe(1);
    expect(r.stdout).toContain('OK: access token from ');
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.at(-2)).toMatch(/^FAILED at sign-in with the token: 451 4\.7\.0 auth: upstream m365-blocked \(127\.0\.0\.1:\d+\) refused the sign-in of blocked@contoso\.example: SMTP AUTH is disabled for this mailbox or tenant: 535 5\.7\.139 /);
    expect(lines.at(-1)).toMatch(/^fix: SMTP AUTH is disabled for this mailbox or tenant: Set-CASMailbox -Identity blocked@contoso\.example -SmtpClientAuthenticationDisabled \$false \(tenant-wide: Set-TransportConfig -SmtpClientAuthenticationDisabled \$false/);
  });

  it('refresh_token, server account: signs in, and the rotated refresh token is kept in state_dir and used next time', async () => {
    const first = await sendasTest(['--server', 'gmail']);
    expect(first.code).toBe(0);
    expect(first.tokenRequests).toBe(1);
    expect(first.stdout).toContain("login: desk@acme.example (the server's account, auth xoauth2, grant refresh_token: refresh token from the state directory or servers[3].oauth.refresh_token)\n");
    expect(first.stdout).toContain('OK: signed in as desk@acme.example with the token\n');
    expect(readdirSync(join(tmp, 'state', 'oauth'))).toContain('gmail_desk@acme.example.json');
    // the YAML's refresh token was rotated away: only the one in state_dir still works
    const second = await sendasTest(['--server', 'gmail']);
    expect(second.code).toBe(0);
    expect(second.tokenRequests).toBe(1);
    expect(oauth.requests.at(-1)).toMatchObject({ grant: 'refresh_token', ok: true });
  });

  it("refresh_token, an identity's override: signs in with the identity's own token", async () => {
    const r = await sendasTest(['--channel', 'desk2', '--to', 'ops-desk2@customer.example']);
    expect(r.code).toBe(0);
    expect(r.tokenRequests).toBe(1);
    expect(r.stdout).toContain("login: desk2@acme.example (the identity's own account, auth xoauth2, grant refresh_token: refresh token from the state directory or channels[0].override.oauth.refresh_token)\n");
    const got = gmail.messages.filter((m) => m.rcptTo.includes('ops-desk2@customer.example'));
    expect(got.map((m) => [m.login, m.mailFrom])).toEqual([['desk2@acme.example', 'desk2@acme.example']]);
  });

  it('refresh_token refused (invalid_grant): FAILED at the token endpoint with the exact `sendas oauth login` command', async () => {
    const r = await sendasTest(['--server', 'gmail-revoked']);
    expect(r.code).toBe(1);
    expect(r.tokenRequests).toBe(1);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.at(-2)).toMatch(/^FAILED at token endpoint: 451 4\.7\.0 auth: OAuth token endpoint refused account gone@acme\.example \(invalid_grant/);
    expect(lines.at(-1)).toBe(`fix: the refresh token of gone@acme.example expired or was revoked: run \`sendas oauth login --config ${config} --account servers[4]\``);
  });
});

describe('sendas test on a server without an account of its own', { timeout: 90_000 }, () => {
  it('tests the identities on it with their own accounts; the server itself has none to test', async () => {
    const r = await sendasTest(['--channel', 'team']);
    expect(r.code).toBe(0);
    expect(r.tokenRequests).toBe(1);
    expect(r.stdout).toContain("login: team@contoso.example (the identity's own account, auth xoauth2, grant client_credentials: app token for client sendas-app, secret from servers[7].oauth.client_secret)\n");
    expect(r.stdout).toContain('OK: signed in as team@contoso.example with the token\n');
    const server = await sendasTest(['--server', 'm365-none']);
    expect(server.code).toBe(2);
    expect(server.tokenRequests).toBe(0);
    expect(server.stderr).toBe('sendas test: server "m365-none" has no account of its own: every identity on it signs in with its own, so test one of them (--channel team)\n');
  });
});

describe('sendas test with Microsoft Graph', { timeout: 90_000 }, () => {
  it('right secret: gets the app token once, proves the mailbox with GET /users/{mailbox}', async () => {
    const lookups = graph.userLookups.length;
    const r = await sendasTest(['--server', 'graph']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.tokenRequests).toBe(1);
    expect(r.stdout).toContain(`connecting to Microsoft Graph ${graph.url} (server graph, mailbox relay@contoso.example)\n`);
    expect(r.stdout).toContain("login: relay@contoso.example (the server's account, Microsoft Graph, grant client_credentials: app token for client sendas-app, secret from servers[5].oauth.client_secret)\n");
    expect(r.stdout).toContain('OK: the app token is accepted and mailbox relay@contoso.example exists\n');
    expect(graph.userLookups.slice(lookups)).toEqual([expect.objectContaining({ status: 200, mailbox: 'relay@contoso.example' })]);
    expect(graph.messages).toHaveLength(0);
  });

  it('with --to, a real sendMail as the mailbox', async () => {
    const r = await sendasTest(['--server', 'graph', '--to', 'ops-graph@customer.example']);
    expect(r.code).toBe(0);
    expect(r.tokenRequests).toBe(1);
    expect(r.stdout).toMatch(/\nOK: test message accepted by Microsoft Graph: 202 /);
    const sent = await graph.nextMessage();
    expect(sent.mailbox).toBe('relay@contoso.example');
    const parsed = await simpleParser(sent.mime);
    expect(parsed.to).toMatchObject({ value: [{ address: 'ops-graph@customer.example' }] });
    expect(parsed.from?.value).toEqual([{ name: 'sendas test', address: 'relay@contoso.example' }]);
    expect(parsed.subject).toBe('sendas test: server graph via graph');
  });

  it('a mailbox the tenant does not have: FAILED at Graph mailbox, naming the address key', async () => {
    const r = await sendasTest(['--server', 'graph-nobody']);
    expect(r.code).toBe(1);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.at(-2)).toMatch(/^FAILED at Graph mailbox: 550 5\.1\.0 sender: Microsoft Graph \(graph-nobody, 127\.0\.0\.1:\d+\) for mailbox nobody@contoso\.example: no such mailbox in the tenant \(404 Request_ResourceNotFound/);
    expect(lines.at(-1)).toBe('fix: check the address of the account (servers[8].address)');
  });

  it('a wrong client secret: FAILED at the token endpoint with the client_secret key', async () => {
    const lookups = graph.userLookups.length;
    const r = await sendasTest(['--server', 'graph-wrong']);
    expect(r.code).toBe(1);
    expect(r.tokenRequests).toBe(1);
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('fix: client secret wrong or expired: servers[6].oauth.client_secret (create a new one for client sendas-app, or check servers[6].oauth.client_id)');
    expect(graph.userLookups.length).toBe(lookups);
  });
});
