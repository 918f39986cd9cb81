/**
 * `sendas oauth login` as ops run it: the compiled CLI in a real process against the local OAuth
 * 2.0 server (test/support/oauth-server.ts). The device flow runs end to end (the test plays the
 * user: it reads the code the CLI prints and approves or denies it), and a TokenProvider then
 * gets an access token with what was stored, as the relay would.
 *
 * The browser flow's "browser" is fetch() against the loopback callback the CLI prints. The test
 * OAuth server has no /authorize and no authorization_code grant: against it the flow is tested up
 * to the code exchange request (refused with unsupported_grant_type); a small token endpoint in
 * this file, which checks the PKCE verifier, redirect URI and client secret, covers the rest.
 *
 * The CLI is dist/, or a private build when dist/ is older than the sources (support/cli.ts).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compiledCli, runProcess, type ProcessResult } from '../support/cli.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizeEndpoint, deviceEndpoint, resolveLoginAccount } from '../../src/cli/oauth-login.js';
import { loadConfigFile } from '../../src/config/load.js';
import type { ConfigSnapshot } from '../../src/config/types.js';
import { accountFor, serverAccount, type Account } from '../../src/config/account.js';
import { silentLogger } from '../../src/log.js';
import { refreshTokenFile, TokenProvider } from '../../src/oauth/tokens.js';
import { startOAuthServer, type OAuthServer } from '../support/oauth-server.js';


/** Distinctive secrets, so a leak in any output is visible. */
const CLIENT_ID = 'sendas-app';
const CLIENT_SECRET = 'client-Kp47-secret';
const LEGACY_PW = 'legacy-Wr83-secret';
const ENV = { OAUTH_CLIENT_SECRET: CLIENT_SECRET, LEGACY_PW };
const STUB_REFRESH_TOKEN = `rt_stub_${Date.now().toString(36)}Zq`;
const STUB_ACCESS_TOKEN = `at_stub_${Date.now().toString(36)}Yx`;
const STUB_CODE = 'code-from-the-browser-Jd62';

let tmp: string;
let cli: string;
let oauth: OAuthServer;
/** Device codes expire after 1 s here. */
let hasty: OAuthServer;
let stub: Server;
let stubUrl: string;
/** What the stub token endpoint received, and the challenge the CLI sent to the browser. */
const stubSeen: { params: URLSearchParams; challenge: string | undefined }[] = [];
let expectedChallenge: string | undefined;
let config: string;
let hastyConfig: string;
let snapshot: ConfigSnapshot;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'sendas-oauth-login-'));
  cli = await compiledCli(tmp);

  oauth = await startOAuthServer({ clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET }] });
  hasty = await startOAuthServer({ clients: [{ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET }], deviceCodeTtlSeconds: 1 });

  // a token endpoint that redeems one authorization code, checking PKCE (S256) as a real one does
  stub = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      const params = new URLSearchParams(body);
      stubSeen.push({ params, challenge: expectedChallenge });
      const verifier = params.get('code_verifier') ?? '';
      const ok =
        req.method === 'POST' &&
        req.url === '/token' &&
        req.headers['content-type'] === 'application/x-www-form-urlencoded' &&
        params.get('grant_type') === 'authorization_code' &&
        params.get('code') === STUB_CODE &&
        params.get('client_id') === CLIENT_ID &&
        params.get('client_secret') === CLIENT_SECRET &&
        /^http:\/\/127\.0\.0\.1:\d+\/callback$/.test(params.get('redirect_uri') ?? '') &&
        /^[A-Za-z0-9._~-]{43,128}$/.test(verifier) &&
        createHash('sha256').update(verifier).digest('base64url') === expectedChallenge;
      const answer = ok
        ? { token_type: 'Bearer', expires_in: 3600, access_token: STUB_ACCESS_TOKEN, refresh_token: STUB_REFRESH_TOKEN, scope: 'https://mail.example/' }
        : { error: 'invalid_grant', error_description: 'PKCE verification failed or bad code' };
      res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise<void>((done) => stub.listen(0, '127.0.0.1', done));
  stubUrl = `http://127.0.0.1:${(stub.address() as AddressInfo).port}`;

  const xoauthServer = (name: string, username: string, grant: string, tokenUrl: string, extra = '') => `  - name: ${name}
    host: 127.0.0.1
    port: 2525
    security: none
    auth: xoauth2
    username: ${username}${extra}
    oauth:
      client_id: ${CLIENT_ID}
      client_secret: {env: OAUTH_CLIENT_SECRET}
      grant: ${grant}
      token_url: ${tokenUrl}
`;
  config = join(tmp, 'relay.yaml');
  writeFileSync(
    config,
    `listen:
  host: 127.0.0.1
  port: 0
state_dir: ./state
servers:
${xoauthServer('main', 'relay@acme.example', 'refresh_token', oauth.tokenUrl, '\n    default: true')}${xoauthServer('app', 'app@acme.example', 'client_credentials', oauth.tokenUrl)}${xoauthServer('stub', 'bob@acme.example', 'refresh_token', `${stubUrl}/token`)}  - name: pw
    host: 127.0.0.1
    port: 2525
    security: none
    username: legacy@acme.example
    password: {env: LEGACY_PW}
channels:
  - name: sales
    address: sales@acme.example
  - name: support
    address: support@acme.example
    server: app
    override:
      auth: xoauth2
  - name: legacy
    address: legacy-channel@acme.example
    server: pw
    override:
      password: {env: LEGACY_PW}
agents:
  - name: alice
    address: alice@acme.example
    override:
      auth: xoauth2
  - name: carol
    address: carol@acme.example
    override:
      auth: xoauth2
`,
  );
  hastyConfig = join(tmp, 'hasty.yaml');
  writeFileSync(
    hastyConfig,
    `state_dir: ./hasty-state
servers:
${xoauthServer('main', 'relay@acme.example', 'refresh_token', hasty.tokenUrl)}`,
  );
  snapshot = await loadConfigFile(config, { env: ENV });
}, 120_000);

afterAll(async () => {
  await Promise.all([oauth?.close(), hasty?.close(), stub && new Promise<void>((done) => stub.close(() => done()))]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

type Result = ProcessResult;

function run(cmd: string, args: readonly string[], opts: { cwd: string; env: NodeJS.ProcessEnv }): Promise<Result> {
  return runProcess(cmd, args, opts);
}

interface Running {
  readonly exited: Promise<Result>;
  /** Resolves with the first match of `re` in stdout so far or still to come. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

function start(cmd: string, args: readonly string[], opts: { cwd: string; env: NodeJS.ProcessEnv }, timeoutMs = 90_000): Running {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    for (const l of [...listeners]) l();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const exited = new Promise<Result>((done) => {
    child.on('close', (code) => {
      clearTimeout(killer);
      for (const l of [...listeners]) l();
      done({ code, stdout, stderr });
    });
  });
  let closed = false;
  void exited.then(() => (closed = true));
  return {
    exited,
    waitFor(re, waitMs = 15_000) {
      return new Promise((done, fail) => {
        const timer = setTimeout(() => {
          listeners.delete(check);
          fail(new Error(`no ${re} in the output within ${waitMs} ms:\n${stdout}${stderr}`));
        }, waitMs);
        const check = () => {
          const m = re.exec(stdout);
          if (m) {
            clearTimeout(timer);
            listeners.delete(check);
            done(m);
          } else if (closed || child.exitCode !== null) {
            clearTimeout(timer);
            listeners.delete(check);
            fail(new Error(`the CLI exited (${child.exitCode}) without printing ${re}:\n${stdout}${stderr}`));
          }
        };
        listeners.add(check);
        check();
      });
    },
  };
}

/** `sendas oauth login --config FILE ARGS`, with only PATH and the secrets in its environment. */
function login(args: readonly string[], file = config): Running {
  return start(process.execPath, [cli, 'oauth', 'login', '--config', file, ...args], { cwd: tmp, env: { PATH: process.env.PATH, ...ENV } });
}

/** Everything the CLI must never print: the secrets and every token and device code issued. */
function expectNoSecrets(r: Result): void {
  const text = `${r.stdout}${r.stderr}`;
  const servers = [oauth, hasty];
  const values = [
    CLIENT_SECRET,
    LEGACY_PW,
    STUB_REFRESH_TOKEN,
    STUB_ACCESS_TOKEN,
    STUB_CODE,
    ...servers.flatMap((s) => s.refreshTokens.map((t) => t.refreshToken)),
    ...servers.flatMap((s) => s.issued.map((t) => t.accessToken)),
    ...servers.flatMap((s) => s.deviceCodes.map((d) => d.deviceCode)),
    ...stubSeen.map((s) => s.params.get('code_verifier') ?? ''),
  ].filter((v) => v !== '');
  for (const v of values) expect(text).not.toContain(v);
}

const CODE_LINE = /To sign in, open (http\S+) and enter the code ([A-Z]{4}-[A-Z]{4})\n/;

function accountOf(name: string): Account {
  const identity = snapshot.identitiesByName.get(name);
  if (identity) return accountFor(snapshot, identity) as Account;
  return serverAccount(snapshot.serversByName.get(name)!);
}

function stateOf(account: Account): { file: string; json: { account: string; refresh_token: string; origin: string | null } } {
  const file = refreshTokenFile(snapshot.stateDir, account);
  return { file, json: JSON.parse(readFileSync(file, 'utf8')) as { account: string; refresh_token: string; origin: string | null } };
}

describe.concurrent('sendas oauth login --flow device', () => {
  it("signs an agent's own account in, stores the refresh token (0600) and the relay's TokenProvider uses it", async () => {
    const p = login(['--account', 'alice']);
    const [, url, userCode] = await p.waitFor(CODE_LINE);
    expect(url).toBe(`${oauth.url}/device`);
    oauth.approveDevice(userCode!, 'alice@acme.example');
    const r = await p.exited;
    expectNoSecrets(r);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);

    const account = accountOf('alice');
    const { file, json } = stateOf(account);
    expect(file).toBe(join(tmp, 'state', 'oauth', 'main_alice@acme.example.json'));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(json.account).toBe('main/alice@acme.example');
    expect(json.origin).toBeNull();
    const known = oauth.refreshTokens.find((t) => t.refreshToken === json.refresh_token);
    expect(known).toMatchObject({ user: 'alice@acme.example', clientId: CLIENT_ID, valid: true });

    expect(r.stdout).toBe(
      [
        'signing in agent alice (alice@acme.example) with its own account alice@acme.example, server main, OAuth client sendas-app',
        `To sign in, open ${oauth.url}/device and enter the code ${userCode}`,
        'Sign in as alice@acme.example. Waiting up to 15 min for the sign-in…',
        `OK: signed in; the refresh token for agent alice (alice@acme.example) with its own account alice@acme.example (account main/alice@acme.example) is stored in ${file} (mode 0600)`,
        'the relay uses it from its next token request, no restart or reload needed',
        ...(process.getuid?.() === 0 ? ['note: written as root: if the relay runs as another user, give that user the file (chown)'] : []),
        '',
      ].join('\n'),
    );
    // the device code request and the polls went to the derived endpoints with the right client
    const device = oauth.deviceCodes.find((d) => d.userCode === userCode)!;
    expect(device).toMatchObject({ clientId: CLIENT_ID, state: 'redeemed', user: 'alice@acme.example' });
    expect(oauth.requests.filter((q) => q.grant === 'urn:ietf:params:oauth:grant-type:device_code' && q.ok)).not.toHaveLength(0);

    // what the relay does: a TokenProvider reading the same state directory gets a token for alice
    const tokens = new TokenProvider({ stateDir: () => snapshot.stateDir, logger: silentLogger() });
    const access = await tokens.get(account);
    expect(oauth.validate(access.token)).toMatchObject({ user: 'alice@acme.example', clientId: CLIENT_ID });
  });

  it("a channel without override signs its server's account in (the account the relay would use)", async () => {
    const p = login(['--account', 'sales']);
    const [, , userCode] = await p.waitFor(CODE_LINE);
    oauth.approveDevice(userCode!, 'relay@acme.example');
    const r = await p.exited;
    expectNoSecrets(r);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("signing in channel sales (sales@acme.example), which sends with server main's own account relay@acme.example, server main");
    const account = accountOf('main');
    const { file, json } = stateOf(account);
    expect(r.stdout).toContain(`(account main/relay@acme.example) is stored in ${file} (mode 0600)\n`);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(oauth.refreshTokens.find((t) => t.refreshToken === json.refresh_token)?.user).toBe('relay@acme.example');
    const access = await new TokenProvider({ stateDir: () => snapshot.stateDir, logger: silentLogger() }).get(account);
    expect(oauth.validate(access.token)?.user).toBe('relay@acme.example');
  });

  it('the user declines: exit 1 with the reason, nothing stored', async () => {
    const p = login(['--account', 'carol']);
    const [, , userCode] = await p.waitFor(CODE_LINE);
    oauth.denyDevice(userCode!);
    const r = await p.exited;
    expectNoSecrets(r);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('FAILED: the sign-in was declined (access_denied): access_denied (The end user denied the authorization request.)\n');
    expect(r.stdout).toContain('fix: run the command again and accept the request as carol@acme.example\n');
    expect(existsSync(refreshTokenFile(snapshot.stateDir, accountOf('carol')))).toBe(false);
  });

  it('nobody signs in before the code expires: exit 1 saying it expired', async () => {
    const p = login(['--account', 'main'], hastyConfig);
    const [, , userCode] = await p.waitFor(CODE_LINE);
    const r = await p.exited;
    expectNoSecrets(r);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`\\nFAILED: the code ${userCode} expired before the sign-in was completed \\(expired_token[^\\n]*\\)\\n`));
    expect(r.stdout).toContain('fix: run the command again and complete the sign-in within 1 s\n');
    expect(existsSync(join(tmp, 'hasty-state', 'oauth'))).toBe(false);
  });

  it('--open-timeout bounds the wait: exit 1', async () => {
    const r = await login(['--account', 'carol', '--open-timeout', '1']).exited;
    expectNoSecrets(r);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('Waiting up to 1 s for the sign-in…\n');
    expect(r.stdout).toMatch(/\nFAILED: no sign-in within 1 s \(--open-timeout\); the code [A-Z]{4}-[A-Z]{4} is no longer waited for\n/);
  });

  it('a wrong device endpoint: exit 1 saying what to pass', async () => {
    const r = await login(['--account', 'carol', '--device-url', `${oauth.url}/nowhere`]).exited;
    expectNoSecrets(r);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`FAILED: the device authorization endpoint ${oauth.url}/nowhere refused: not_found (no endpoint at /nowhere)\n`);
    expect(r.stdout).toContain(`fix: ${oauth.url}/nowhere is no device authorization endpoint: pass --device-url URL, or use --flow browser\n`);
  });
});

describe.concurrent('sendas oauth login --flow browser', () => {
  /** Reads the authorize URL the CLI printed and checks what a browser would be sent with. */
  async function authorizeUrl(p: Running): Promise<URL> {
    const [, href] = await p.waitFor(/\n {2}(http\S+)\n/);
    const url = new URL(href!);
    const q = url.searchParams;
    expect(q.get('client_id')).toBe(CLIENT_ID);
    expect(q.get('response_type')).toBe('code');
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get('state')).toMatch(/^[A-Za-z0-9_-]{16,}$/);
    expect(q.get('redirect_uri')).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    return url;
  }

  /** What the browser does after the sign-in: follow the redirect to the loopback callback. */
  function redirect(url: URL, params: Record<string, string>): Promise<Response> {
    const callback = new URL(url.searchParams.get('redirect_uri')!);
    for (const [k, v] of Object.entries(params)) callback.searchParams.set(k, v);
    return fetch(callback, { signal: AbortSignal.timeout(10_000) });
  }

  it('ignores strangers, then exchanges the code at the token URL with PKCE (the test server refuses the grant: exit 1)', async () => {
    const p = login(['--account', 'alice', '--flow', 'browser', '--authorize-url', `${oauth.url}/authorize`]);
    const url = await authorizeUrl(p);
    expect(`${url.origin}${url.pathname}`).toBe(`${oauth.url}/authorize`);
    expect(url.searchParams.get('login_hint')).toBe('alice@acme.example');
    const state = url.searchParams.get('state')!;
    const redirectUri = url.searchParams.get('redirect_uri')!;
    expect((await p.waitFor(/Open this URL in a browser on this machine and sign in as alice@acme\.example:\n/))[0]).toBeTruthy();

    const wrongState = await redirect(url, { code: 'forged', state: 'not-the-state' });
    expect(wrongState.status).toBe(400);
    expect(await wrongState.text()).toContain('does not belong to the sign-in');
    const elsewhere = await fetch(redirectUri.replace('/callback', '/favicon.ico'));
    expect(elsewhere.status).toBe(404);

    const before = oauth.requests.length;
    const answer = await redirect(url, { code: 'a-code-the-test-server-never-issued', state });
    expect(answer.status).toBe(502);
    expect(answer.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await answer.text()).toContain('Sign-in failed');
    const r = await p.exited;
    expectNoSecrets(r);
    expect(r.stdout).not.toContain('a-code-the-test-server-never-issued');
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`FAILED: the token endpoint ${oauth.tokenUrl} refused the authorization code: unsupported_grant_type`);
    expect(r.stdout).toContain('fix: this authorization server does not take authorization codes: use --flow device\n');
    // the exchange request reached the token endpoint, authenticated as the configured client
    expect(oauth.requests.slice(before)).toContainEqual(expect.objectContaining({ grant: 'authorization_code', clientId: CLIENT_ID, ok: false, error: 'unsupported_grant_type' }));
  });

  it('stores the refresh token from a token endpoint that checks PKCE S256, redirect URI and client secret', async () => {
    const p = login(['--account', 'stub', '--flow', 'browser', '--authorize-url', `${stubUrl}/authorize`]);
    const url = await authorizeUrl(p);
    expectedChallenge = url.searchParams.get('code_challenge')!;
    const answer = await redirect(url, { code: STUB_CODE, state: url.searchParams.get('state')! });
    expect(answer.status).toBe(200);
    expect(await answer.text()).toContain('sendas stored the sign-in of bob@acme.example. You can close this tab.');
    const r = await p.exited;
    expectNoSecrets(r);
    expect(r.code).toBe(0);
    const seen = stubSeen.at(-1)!.params;
    expect(seen.get('redirect_uri')).toBe(url.searchParams.get('redirect_uri'));
    const { file, json } = stateOf(accountOf('stub'));
    expect(json).toMatchObject({ account: 'stub/bob@acme.example', refresh_token: STUB_REFRESH_TOKEN, origin: null });
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(r.stdout).toContain(`OK: signed in; the refresh token for server stub's own account bob@acme.example (account stub/bob@acme.example) is stored in ${file} (mode 0600)\n`);
  });

  it('declined in the browser: exit 1 with the reason', async () => {
    const p = login(['--account', 'carol', '--flow', 'browser', '--authorize-url', `${oauth.url}/authorize`]);
    const url = await authorizeUrl(p);
    const answer = await redirect(url, { error: 'access_denied', error_description: 'The user declined.', state: url.searchParams.get('state')! });
    expect(answer.status).toBe(400);
    const r = await p.exited;
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('FAILED: the sign-in was declined in the browser (access_denied: The user declined.)\n');
  });

  it('no browser comes back within --open-timeout: exit 1', async () => {
    const r = await login(['--account', 'carol', '--flow', 'browser', '--authorize-url', `${oauth.url}/authorize`, '--open-timeout', '1']).exited;
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/\nFAILED: no sign-in came back to http:\/\/127\.0\.0\.1:\d+\/callback within 1 s \(--open-timeout\)\n/);
  });
});

describe.concurrent('sendas oauth login: accounts that need no login, usage errors (exit 2)', () => {
  it('a client_credentials account: exit 2 explaining the app secret is used and no login is needed', async () => {
    for (const name of ['support', 'app']) {
      const r = await login(['--account', name]).exited;
      expectNoSecrets(r);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('with grant client_credentials: the relay gets app tokens with the app\'s client secret (servers[1].oauth.client_secret)');
      expect(r.stderr).toContain('no login is needed\n');
    }
    expect(oauth.deviceCodes.filter((d) => d.clientId !== CLIENT_ID)).toEqual([]);
  });

  it('a password account: exit 2, no OAuth login needed', async () => {
    const r = await login(['--account', 'legacy']).exited;
    expectNoSecrets(r);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'sendas oauth login: channel legacy (legacy-channel@acme.example) with its own account legacy-channel@acme.example signs in with a password (auth login), not xoauth2: no OAuth login is needed (set auth: xoauth2 at channels[2].override.auth / servers[3].auth to use OAuth)\n',
    );
  });

  it('an unknown account name: exit 2 listing the known ones', async () => {
    const r = await login(['--account', 'alcie']).exited;
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      `sendas oauth login: unknown account "alcie": not a channel, agent or server of ${config}; channels: sales, support, legacy; agents: alice, carol; servers: main, app, stub, pw\n`,
    );
  });

  it('bad calls: exit 2 before anything is requested', async () => {
    const base = [process.execPath, cli, 'oauth'] as const;
    const call = (args: string[]) => run(base[0], [base[1], base[2], ...args], { cwd: tmp, env: { PATH: process.env.PATH, ...ENV } });
    const [noAccount, badFlow, badTimeout, noSub, otherSub, unknownOption] = await Promise.all([
      call(['login', '--config', config]),
      call(['login', '--config', config, '--account', 'alice', '--flow', 'pigeon']),
      call(['login', '--config', config, '--account', 'alice', '--open-timeout', '5m']),
      call(['--config', config]),
      call(['logout', '--config', config]),
      call(['login', '--config', config, '--account', 'alice', '--scope', 'x']),
    ]);
    expect(noAccount).toMatchObject({ code: 2, stderr: 'sendas oauth login: pass --account NAME (a channel, agent or server name)\n' });
    expect(badFlow).toMatchObject({ code: 2, stderr: 'sendas oauth login: --flow must be device or browser, not "pigeon"\n' });
    expect(badTimeout).toMatchObject({ code: 2, stderr: 'sendas oauth login: --open-timeout must be a number of seconds (at least 1), not "5m"\n' });
    expect(noSub.code).toBe(2);
    expect(noSub.stderr).toContain('use `sendas oauth login --config FILE --account NAME');
    expect(otherSub.code).toBe(2);
    expect(otherSub.stderr).toContain('sendas oauth: unknown: logout;');
    expect(unknownOption.code).toBe(2);
    expect(unknownOption.stderr).toContain("Unknown option '--scope'");
  });

  it('the usage lists oauth login', async () => {
    const r = await run(process.execPath, [cli, '--help'], { cwd: tmp, env: { PATH: process.env.PATH } });
    expect(r.stdout).toContain('  oauth    login --config FILE --account NAME [--flow device|browser] [--open-timeout SECONDS]\n');
  });
});

describe('account names and endpoints (in-process)', () => {
  it('resolves names like the relay: identity, server, kind:NAME, and the key paths the relay hints at', () => {
    const key = (name: string) => {
      const r = resolveLoginAccount(snapshot, name);
      return r.ok ? r.account.key : `error: ${r.message}`;
    };
    expect(key('alice')).toBe('main/alice@acme.example');
    expect(key('agents[0]')).toBe('main/alice@acme.example');
    expect(key('agent:alice')).toBe('main/alice@acme.example');
    expect(key('channel:alice')).toMatch(/^error: unknown account "channel:alice"/);
    expect(key('main')).toBe('main/relay@acme.example');
    expect(key('servers[0]')).toBe('main/relay@acme.example');
    expect(key('server:stub')).toBe('stub/bob@acme.example');
    expect(key('sales')).toBe('main/relay@acme.example');
    expect(key('servers[9]')).toMatch(/^error: unknown account/);
  });

  it('derives the device and authorize endpoints from the token URL', () => {
    const ms = 'https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token';
    expect(deviceEndpoint(ms)).toBe('https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode');
    expect(authorizeEndpoint(ms)).toBe('https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize');
    expect(deviceEndpoint('https://oauth2.googleapis.com/token')).toBe('https://oauth2.googleapis.com/device/code');
    expect(authorizeEndpoint('https://oauth2.googleapis.com/token')).toBe('https://accounts.google.com/o/oauth2/v2/auth');
    expect(deviceEndpoint('http://127.0.0.1:8080/token')).toBe('http://127.0.0.1:8080/devicecode');
    expect(authorizeEndpoint('http://127.0.0.1:8080/token')).toBeUndefined();
    expect(deviceEndpoint('https://idp.example/oauth/access')).toBeUndefined();
  });
});
