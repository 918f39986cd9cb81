/**
 * `sendas test` as ops run it: the compiled CLI in a real process against test upstreams that
 * check each account's password (plain, and STARTTLS with the test CA).
 *
 * The CLI is dist/, or a private build when dist/ is older than the sources (support/cli.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { compiledCli, runProcess, type ProcessResult } from '../support/cli.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startTestUpstream, TEST_TLS, type ReceivedMessage, type TestUpstream } from '../support/upstream.js';


/** Distinctive secrets, so a leak in any output is visible. */
const SECRETS = {
  MAIN_PW: 'main-Qv38-secret',
  SUPPORT_PW: 'support-Lm52-secret',
  SECURE_PW: 'secure-Tg19-secret',
  ALICE_PW: 'alice-Nc74-secret',
  MISMATCH_PW: 'mismatch-Hw06-secret',
  THROTTLED_PW: 'throttled-Ds41-secret',
} as const;
/** Written into the YAML itself (inline), and wrong for its login. */
const WRONG_PW = 'wrong-Xe93-inline';
/** Read from a file next to the YAML. */
const FILE_PW = 'file-Bu27-secret';

let tmp: string;
let cli: string;
let plain: TestUpstream;
let secure: TestUpstream;
let config: string;
let deadPort: number;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'sendas-test-send-'));
  cli = await compiledCli(tmp);

  plain = await startTestUpstream({
    accounts: [
      { username: 'relay@acme.example', password: SECRETS.MAIN_PW },
      { username: 'support@acme.example', password: SECRETS.SUPPORT_PW },
      { username: 'legacy@acme.example', password: FILE_PW },
      { username: 'mismatch@acme.example', password: SECRETS.MISMATCH_PW },
      { username: 'throttled@acme.example', password: SECRETS.THROTTLED_PW },
    ],
    requireSenderMatchesLogin: true,
    refuseRecipients: { 'nobody@customer.example': { code: 550, message: '5.1.1 No such user here' } },
    refuseSenders: (_from, login) => (login === 'throttled@acme.example' ? { code: 451, message: '4.7.1 Too many messages, slow down' } : undefined),
  });
  secure = await startTestUpstream({
    security: 'starttls',
    requireTlsForAuth: true,
    accounts: [
      { username: 'tls-relay@acme.example', password: SECRETS.SECURE_PW },
      { username: 'alice@acme.example', password: SECRETS.ALICE_PW },
    ],
    requireSenderMatchesLogin: true,
  });
  deadPort = await freePort();

  writeFileSync(join(tmp, 'legacy.secret'), `${FILE_PW}\n`);
  config = join(tmp, 'relay.yaml');
  writeFileSync(
    config,
    `listen:
  host: 127.0.0.1
  port: 0
servers:
  - name: main
    default: true
    host: 127.0.0.1
    port: ${plain.port}
    security: none
    username: relay@acme.example
    password: {env: MAIN_PW}
  - name: secure
    host: 127.0.0.1
    port: ${secure.port}
    security: starttls
    username: tls-relay@acme.example
    password: {env: SECURE_PW}
    tls:
      ca: {file: ${TEST_TLS.caPath}}
  - name: untrusted
    host: 127.0.0.1
    port: ${secure.port}
    security: starttls
    username: tls-relay@acme.example
    password: {env: SECURE_PW}
  - name: wrongpw
    host: 127.0.0.1
    port: ${plain.port}
    security: none
    username: relay@acme.example
    password: ${WRONG_PW}
  - name: dead
    host: 127.0.0.1
    port: ${deadPort}
    security: none
    username: relay@acme.example
    password: {env: MAIN_PW}
  - name: legacy
    host: 127.0.0.1
    port: ${plain.port}
    security: none
    username: legacy@acme.example
    password: {file: legacy.secret}
  - name: mismatch
    host: 127.0.0.1
    port: ${plain.port}
    security: none
    username: mismatch@acme.example
    password: {env: MISMATCH_PW}
    address: shared@acme.example
  - name: throttled
    host: 127.0.0.1
    port: ${plain.port}
    security: none
    username: throttled@acme.example
    password: {env: THROTTLED_PW}
channels:
  - name: support
    address: support@acme.example
    display_name: Acme Support
    override:
      password: {env: SUPPORT_PW}
  - name: sales
    address: sales@acme.example
    display_name: Sales Team
  - name: nopass
    address: nopass@acme.example
    override:
agents:
  - name: alice
    address: alice@acme.example
    display_name: Alice Martin
    server: secure
    override:
      password: {env: ALICE_PW}
`,
  );
}, 120_000);

afterAll(async () => {
  await Promise.all([plain?.close(), secure?.close()]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

type Result = ProcessResult;

function run(cmd: string, args: readonly string[], opts: { cwd: string; env: NodeJS.ProcessEnv }, timeout = 30_000): Promise<Result> {
  return runProcess(cmd, args, opts, timeout);
}

/** `sendas test --config FILE ARGS`, with only PATH and the secrets in its environment; checks that no secret is printed. */
async function sendasTest(args: readonly string[]): Promise<Result> {
  const r = await run(process.execPath, [cli, 'test', '--config', config, ...args], { cwd: tmp, env: { PATH: process.env.PATH, ...SECRETS } });
  expectNoSecrets(`${r.stdout}${r.stderr}`);
  return r;
}

function expectNoSecrets(text: string): void {
  for (const secret of [...Object.values(SECRETS), WRONG_PW, FILE_PW]) {
    expect(text).not.toContain(secret);
    // what AUTH LOGIN puts on the wire
    expect(text).not.toContain(Buffer.from(secret).toString('base64'));
  }
}

/** The messages the upstream accepted for a recipient. */
function receivedFor(upstream: TestUpstream, rcpt: string): ReceivedMessage[] {
  return upstream.messages.filter((m) => m.rcptTo.includes(rcpt));
}

describe.concurrent('sendas test', () => {
  it('signs in with the default server account and says where and as whom', async () => {
    const r = await sendasTest(['--server', 'main']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')).toEqual([
      "testing server main's own account",
      `warning: servers[0]: server "main" sends its password in plain text (auth login with security: none) to this host`,
      `connecting to 127.0.0.1:${plain.port} (server main, security none)`,
      "login: relay@acme.example (the server's account, auth login, password from servers[0].password)",
      'OK: signed in as relay@acme.example',
      '',
    ]);
    expect(plain.authAttempts).toContainEqual({ username: 'relay@acme.example', ok: true });
  });

  it('signs in with a named, non-default server account (password from a file)', async () => {
    const r = await sendasTest(['--server', 'legacy']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("login: legacy@acme.example (the server's account, auth login, password from servers[5].password)\n");
    expect(r.stdout).toContain('OK: signed in as legacy@acme.example\n');
  });

  it("signs in with a channel's own account (override)", async () => {
    const r = await sendasTest(['--channel', 'support']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('testing channel support (support@acme.example)\n');
    expect(r.stdout).toContain("login: support@acme.example (the identity's own account, auth login, password from channels[0].override.password)\n");
    expect(r.stdout).toContain('OK: signed in as support@acme.example\n');
  });

  it('uses the server account for a channel without override', async () => {
    const r = await sendasTest(['--channel', 'sales']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("login: relay@acme.example (the server's account, auth login, password from servers[0].password)\n");
  });

  it('upgrades with STARTTLS and verifies the upstream against tls.ca (agent on its own server)', async () => {
    const r = await sendasTest(['--agent', 'alice']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`connecting to 127.0.0.1:${secure.port} (server secure, security starttls, extra CA from tls.ca)\n`);
    expect(r.stdout).toContain('OK: signed in as alice@acme.example\n');
  });

  it("with --to, sends one test message with the channel's account as login, envelope sender and From", async () => {
    const to = 'ops-support@customer.example';
    const r = await sendasTest(['--channel', 'support', '--to', to]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`sending a test message to ${to}: From Acme Support <support@acme.example>, envelope from <support@acme.example>\n`);
    expect(r.stdout).toMatch(/\nOK: test message accepted by the upstream: 250 2\.0\.0 OK queued as [0-9a-f]+\n$/);
    const got = receivedFor(plain, to);
    expect(got).toHaveLength(1);
    const msg = got[0]!;
    expect(msg.login).toBe('support@acme.example');
    expect(msg.mailFrom).toBe('support@acme.example');
    expect(msg.rcptTo).toEqual([to]);
    const parsed = await simpleParser(msg.raw);
    expect(parsed.from?.value).toEqual([{ name: 'Acme Support', address: 'support@acme.example' }]);
    expect(parsed.subject).toBe('sendas test: channel support via main');
    expect(parsed.text).toContain('Server:   main (127.0.0.1:');
    expect(parsed.text).toContain("Login:    support@acme.example (the identity's own account)");
    expect(parsed.text).toContain('From:     Acme Support <support@acme.example>');
    expect(parsed.text).toMatch(/Sent at:  \d{4}-\d\d-\d\dT/);
    expectNoSecrets(msg.raw.toString('latin1'));
  });

  it('with --to for a server, sends as the server account with the display name "sendas test"', async () => {
    const to = 'ops-main@customer.example';
    const r = await sendasTest(['--server', 'main', '--to', to]);
    expect(r.code).toBe(0);
    const got = receivedFor(plain, to);
    expect(got).toHaveLength(1);
    expect(got[0]!.login).toBe('relay@acme.example');
    expect(got[0]!.mailFrom).toBe('relay@acme.example');
    const parsed = await simpleParser(got[0]!.raw);
    expect(parsed.from?.value).toEqual([{ name: 'sendas test', address: 'relay@acme.example' }]);
    expect(parsed.subject).toBe('sendas test: server main via main');
  });

  it('with --to over STARTTLS, the message goes over TLS with the agent account', async () => {
    const to = 'ops-alice@customer.example';
    const r = await sendasTest(['--agent', 'alice', '--to', to]);
    expect(r.code).toBe(0);
    const got = receivedFor(secure, to);
    expect(got).toHaveLength(1);
    expect(got[0]!.secure).toBe(true);
    expect(got[0]!.login).toBe('alice@acme.example');
    expect(got[0]!.mailFrom).toBe('alice@acme.example');
    const parsed = await simpleParser(got[0]!.raw);
    expect(parsed.from?.value).toEqual([{ name: 'Alice Martin', address: 'alice@acme.example' }]);
    expect(parsed.subject).toBe('sendas test: agent alice via secure');
  });

  it('wrong password: exit 1, FAILED with kind auth and a fix naming the key path', async () => {
    const r = await sendasTest(['--server', 'wrongpw']);
    expect(r.code).toBe(1);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.at(-2)).toBe(
      `FAILED at sign-in: 451 4.7.0 auth: upstream wrongpw (127.0.0.1:${plain.port}) refused the sign-in of relay@acme.example: 535 5.7.8 Authentication credentials invalid; check servers[3].password`,
    );
    expect(lines.at(-1)).toBe(
      'fix: the password at servers[3].password is wrong or expired, or relay@acme.example is not the login (Gmail with 2-Step Verification takes an app password only; Microsoft 365: SMTP AUTH must be on for the mailbox)',
    );
    expect(r.stdout).not.toContain('OK:');
  });

  it('unreachable port: exit 1, FAILED with kind network and what to check', async () => {
    const r = await sendasTest(['--server', 'dead']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`FAILED at connect: 451 4.4.1 network: Cannot connect to upstream dead (127.0.0.1:${deadPort}): connection refused\n`);
    expect(r.stdout).toContain(
      `fix: check servers[4].host, port and security (127.0.0.1:${deadPort} none) and firewalls on the way; \`security: tls\` needs port 465, \`starttls\` 587\n`,
    );
  });

  it('STARTTLS without the CA: exit 1, FAILED with kind tls and the tls.ca key', async () => {
    const r = await sendasTest(['--server', 'untrusted']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`\\nFAILED at connect: 451 4\\.7\\.5 tls: TLS with upstream untrusted \\(127\\.0\\.0\\.1:${secure.port}\\) failed: .+\\n`));
    expect(r.stdout).toContain("fix: trust the upstream's CA with servers[2].tls.ca: {file: …}, or check that the host name 127.0.0.1 is the one in its certificate\n");
    // the password never went over the unverified connection (no other test signs in as tls-relay)
    expect(secure.authAttempts.filter((a) => a.username === 'tls-relay@acme.example')).toEqual([]);
  });

  it('a sender the account may not use: FAILED with kind sender', async () => {
    const r = await sendasTest(['--server', 'mismatch', '--to', 'ops-mismatch@customer.example']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('OK: signed in as mismatch@acme.example\n');
    expect(r.stdout).toMatch(/\nFAILED at MAIL FROM \/ Send As: 550 5\.7\.60 sender: upstream mismatch .* refused the sender shared@acme\.example for account mismatch@acme\.example: 550 5\.7\.60 SMTP; Client does not have permissions/);
    expect(r.stdout).toContain(
      'fix: grant mismatch@acme.example Send As on shared@acme.example: Add-RecipientPermission -Identity shared@acme.example -Trustee mismatch@acme.example -AccessRights SendAs',
    );
    expect(receivedFor(plain, 'ops-mismatch@customer.example')).toEqual([]);
  });

  it('a refused recipient: FAILED with kind recipient and "check --to"', async () => {
    const r = await sendasTest(['--server', 'main', '--to', 'nobody@customer.example']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/\nFAILED at RCPT: 550 5\.1\.1 recipient: upstream main .* refused recipient nobody@customer\.example: 550 5\.1\.1 No such user here\n/);
    expect(r.stdout).toContain('fix: check --to nobody@customer.example\n');
  });

  it('a throttled account: FAILED with kind throttled, wait and try again', async () => {
    const r = await sendasTest(['--server', 'throttled', '--to', 'ops-throttled@customer.example']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/\nFAILED at MAIL FROM \/ Send As: 451 4\.7\.1 throttled: upstream throttled .* is throttling: 451 4\.7\.1 Too many messages, slow down\n/);
    expect(r.stdout).toContain('fix: the upstream is throttling this account: wait and try again\n');
  });

  it("a channel whose override has no password: exit 1 with the relay's refusal sentence", async () => {
    const r = await sendasTest(['--channel', 'nopass']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(
      'testing channel nopass\n' +
        'FAILED at account: 554 5.3.5 config: channel "nopass" (nopass@acme.example) has no email password configured: it overrides the server account, so an admin must set channels[2].override.password before it can send\n',
    );
  });

  it('an unknown channel: exit 2 listing the known channels', async () => {
    const r = await sendasTest(['--channel', 'suport']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('sendas test: unknown channel "suport"; channels are: support, sales, nopass\n');
  });

  it('a name of the other kind: exit 2 saying which option to use', async () => {
    const r = await sendasTest(['--channel', 'alice']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('sendas test: unknown channel "alice" ("alice" is an agent: use --agent alice); channels are: support, sales, nopass\n');
  });

  it('an unknown server: exit 2 listing the servers', async () => {
    const r = await sendasTest(['--server', 'nowhere']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('sendas test: unknown server "nowhere"; servers are: main, secure, untrusted, wrongpw, dead, legacy, mismatch, throttled\n');
  });

  it('exit 2 without exactly one of --server/--channel/--agent, or with a --to that is no address', async () => {
    const none = await sendasTest([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toBe('sendas test: pass exactly one of --server NAME, --channel NAME, --agent NAME (and optionally --to ADDR)\n');
    const two = await sendasTest(['--server', 'main', '--agent', 'alice']);
    expect(two.code).toBe(2);
    const badTo = await sendasTest(['--server', 'main', '--to', 'Ops <ops@customer.example>']);
    expect(badTo.code).toBe(2);
    expect(badTo.stderr).toBe('sendas test: --to Ops <ops@customer.example> is not a plain email address such as someone@example.com\n');
  });
});
