/**
 * The `sendas` command as ops run it: the compiled CLI in a real process, its exit code, stdout
 * and stderr. `check` and `explain` never touch the network, so no upstream is needed.
 *
 * The CLI is dist/ as `npm test` built it, or a private build when dist/ is older than the
 * sources (support/cli.ts compiledCli), so this file never tests a stale build.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compiledCli, runProcess, type ProcessResult } from '../support/cli.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURES = join(REPO, 'test/fixtures/config');
const GOOD = join(FIXTURES, 'good.yaml');
const BROKEN = join(FIXTURES, 'broken.yaml');
const POLICY_REJECT = join(FIXTURES, 'policy-reject.yaml');

/** The secrets good.yaml and policy-reject.yaml read from the environment: distinctive, so a leak is visible. */
const SECRETS = {
  CRM_RELAY_PASSWORD: 'crm-Zq81-secret',
  HELPDESK_RELAY_PASSWORD: 'helpdesk-Kp27-secret',
  MAIN_SMTP_PASSWORD: 'main-Wx45-secret',
  LEGACY_SMTP_PASSWORD: 'legacy-Rt93-secret',
  ALICE_PASSWORD: 'alice-Hy66-secret',
  SUPPORT_PASSWORD: 'support-Jb12-secret',
} as const;
const FILE_SECRET = readFileSync(join(FIXTURES, 'support.secret'), 'utf8').trim();

let tmp: string;
let cli: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'sendas-cli-test-'));
  cli = await compiledCli(tmp);
}, 60_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

type Result = ProcessResult;

function run(cmd: string, args: readonly string[], opts: { cwd: string; env: NodeJS.ProcessEnv }, timeout = 10_000): Promise<Result> {
  return runProcess(cmd, args, opts, timeout);
}

/**
 * Runs `sendas ARGS` with only PATH and the given variables in its environment — in particular
 * no SENDAS_CONFIG unless a test sets one.
 */
function sendas(args: readonly string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<Result> {
  return run(process.execPath, [cli, ...args], { cwd: opts.cwd ?? REPO, env: { PATH: process.env.PATH, ...SECRETS, ...opts.env } });
}

function expectNoSecrets(text: string): void {
  for (const value of [...Object.values(SECRETS), FILE_SECRET]) expect(text).not.toContain(value);
}

/** The "servers:" block of a check report: one header line per server and its "used by" lines. */
function serversSection(stdout: string): string[] {
  const lines = stdout.split('\n');
  const start = lines.indexOf('servers:');
  const end = lines.indexOf('warnings:');
  expect(start).toBeGreaterThan(0);
  return lines.slice(start + 1, end === -1 ? undefined : end).filter((l) => l !== '');
}

describe.concurrent('sendas check', () => {
  it('exits 0 and lists each server with the channels and agents using it, then the warnings', async () => {
    const r = await sendas(['check', '--config', GOOD]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(new RegExp(`^${GOOD.replace(/[.]/g, '\\.')}: OK \\(version [0-9a-f]{12}\\)$`));
    expect(lines).toContain('listen 127.0.0.1:2525 no TLS, AUTH only from allow, relaying without login from 127.0.0.0/8, ::1, max message size 10MB');
    expect(lines).toContain('delivery queue');
    // the queue directory is relative to the config file when not absolute
    expect(lines).toContain(`queue ${dirname(GOOD)}/var/queue (default: ./var/queue beside the config file): retry after 1m, 5m, 15m, 30m, 1h, 2h, 4h (the last repeats), give up after 2d`);
    expect(lines).toContain('clients: crm (send as sales, billing), helpdesk (send as anyone)');
    expect(lines).toContain('policy: from rewrite, unknown sender reject');
    expect(serversSection(r.stdout)).toEqual([
      '  main (default): smtp.acme.example:587 starttls, auth login as relay@acme.example, account relay@acme.example',
      '    limits per account: 5 connections, no rate limit, no daily budget',
      // support, sales, alice and dave name no server: they follow the default
      '    used by 2 channels: support, sales',
      '    used by 2 agents: alice, dave',
      '    with their own account (override): support, alice, dave',
      '  legacy: mail.legacy.example:25 none, auth login as legacy@legacy.example, account legacy@legacy.example',
      '    limits per account: 5 connections, no rate limit, no daily budget',
      '    used by 1 channel: billing',
      '    used by 1 agent: bob',
    ]);
    const warnings = lines.slice(lines.indexOf('warnings:') + 1).filter((l) => l !== '');
    expect(warnings).toEqual([
      '  servers[1]: server "legacy" sends its password in plain text (auth login with security: none), allowed by allow_plaintext_auth',
      '  agents[2].override: agent "dave" overrides the server account but has no password: its messages are refused until `agents[2].override.password` is set',
    ]);
    expectNoSecrets(r.stdout);
  });

  it('moves the identities without `server` along when `default: true` moves', async () => {
    const text = readFileSync(GOOD, 'utf8');
    const moved = text.replace('  - name: main\n    default: true\n', '  - name: main\n').replace('  - name: legacy\n', '  - name: legacy\n    default: true\n');
    expect(moved).not.toBe(text);
    const dir = mkdtempSync(join(tmp, 'moved-'));
    writeFileSync(join(dir, 'relay.yaml'), moved);
    cpSync(join(FIXTURES, 'support.secret'), join(dir, 'support.secret'));

    const r = await sendas(['check', '--config', join(dir, 'relay.yaml')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(serversSection(r.stdout)).toEqual([
      '  main: smtp.acme.example:587 starttls, auth login as relay@acme.example, account relay@acme.example',
      '    limits per account: 5 connections, no rate limit, no daily budget',
      '    used by 0 channels',
      '    used by 0 agents',
      '  legacy (default): mail.legacy.example:25 none, auth login as legacy@legacy.example, account legacy@legacy.example',
      '    limits per account: 5 connections, no rate limit, no daily budget',
      '    used by 3 channels: support, sales, billing',
      '    used by 3 agents: alice, bob, dave',
      '    with their own account (override): support, alice, dave',
    ]);
  });

  it('says when no server signs in and no client is configured', async () => {
    const dir = mkdtempSync(join(tmp, 'open-'));
    writeFileSync(join(dir, 'relay.yaml'), 'servers:\n  - name: mx\n    host: mx.internal.example\n    security: none\n    address: noreply@internal.example\nagents:\n  - name: bot\n    address: bot@internal.example\n');
    const r = await sendas(['check', '--config', join(dir, 'relay.yaml')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('\nclients: (none: only listen.allow may relay)\n');
    expect(serversSection(r.stdout)).toEqual([
      '  mx (default): mx.internal.example:25 none, no sign-in, account noreply@internal.example',
      '    limits per account: 5 connections, no rate limit, no daily budget',
      '    used by 0 channels',
      '    used by 1 agent: bot',
    ]);
    expect(r.stdout).not.toContain('warnings:');
  });

  it('exits 1 on a broken file and prints every problem with file:line:col and key path on stderr', async () => {
    const r = await sendas(['check', '--config', BROKEN]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      `${BROKEN}: 9 problems in the configuration`,
      `  ${BROKEN}:2:11 listen.allow[0]: must be an IP address or a CIDR range such as 192.168.0.0/16 or ::1`,
      `  ${BROKEN}:3:21 listen.max_message_size: "25XB" is not a size: write a number of bytes or a number with KB, MB or GB (e.g. 25MB)`,
      `  ${BROKEN}:5:3 servers: no server is the default: set \`default: true\` on exactly one server`,
      `  ${BROKEN}:5:5 servers[0]: auth is login but no password is set: add \`password:\` (a string, {env: NAME} or {file: PATH})`,
      `  ${BROKEN}:7:5 servers[0].securty: unknown key "securty" (did you mean "security"?); known keys here: name, default, type, preset, host, port, security, auth, username, password, address, oauth, tls, allow_plaintext_auth, proxy, graph_url, save_to_sent_items, alternate, max_recipients, rate, connections, daily`,
      `  ${BROKEN}:14:13 channels[0].server: unknown server "nowhere"; servers are: main, backup`,
      `  ${BROKEN}:16:5 agents[0]: agent "support" sends with server "backup"'s own account, and that server has none: give agent "support" an \`override:\` with its own account, or set \`address:\` (and the sign-in) on servers[1]`,
      `  ${BROKEN}:16:11 agents[0].name: duplicate name "support" (already used by channels[0]; channels and agents share one set of names)`,
      `  ${BROKEN}:17:14 agents[0].address: address SUPPORT@acme.example is already used by channels[0] (addresses are compared case-insensitively)`,
    ]);
  });

  it('exits 1 naming a missing environment variable, without printing any secret', async () => {
    const r = await sendas(['check', '--config', GOOD], { env: { MAIN_SMTP_PASSWORD: '' } });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`${GOOD}: 1 problem in the configuration\n  ${GOOD}:24:15 servers[0].password: environment variable MAIN_SMTP_PASSWORD is empty\n`);
    expectNoSecrets(r.stderr);
  });

  it('exits 1 naming a configuration file that does not exist', async () => {
    const missing = join(tmp, 'nowhere/relay.yaml');
    const r = await sendas(['check', '--config', missing]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`${missing}: 1 problem in the configuration\n  ${missing} cannot read the configuration file (no such file)\n`);
  });

  it('reads the file named by SENDAS_CONFIG, relative to the working directory', async () => {
    const r = await sendas(['check'], { env: { SENDAS_CONFIG: 'good.yaml' }, cwd: FIXTURES });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith(`${GOOD}: OK (version `)).toBe(true);
    expect(r.stdout).toContain('    used by 2 channels: support, sales\n');
  });

  it('prefers --config over SENDAS_CONFIG', async () => {
    const r = await sendas(['check', '--config', GOOD], { env: { SENDAS_CONFIG: BROKEN } });
    expect(r.code).toBe(0);
    const r2 = await sendas(['check', '-c', BROKEN], { env: { SENDAS_CONFIG: GOOD } });
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain(`${BROKEN}: 9 problems in the configuration`);
  });

  it('exits 2 with a clear message when there is no configuration at all', async () => {
    const r = await sendas(['check']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('sendas: no configuration: pass --config FILE or set SENDAS_CONFIG\n');
    const r2 = await sendas(['check'], { env: { SENDAS_CONFIG: '' } });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toBe('sendas: no configuration: pass --config FILE or set SENDAS_CONFIG\n');
  });

  it('exits 2 on an unknown command, or none', async () => {
    const r = await sendas(['chek', '--config', GOOD]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^sendas: unknown command "chek"\nusage: sendas <command>/);
    const none = await sendas([]);
    expect(none.code).toBe(2);
    expect(none.stdout).toContain('usage: sendas <command> [options]');
  });

  // BUG (src/cli/main.ts): parseArgs throws on an unknown option or a positional argument; the
  // throw lands in main()'s generic catch, which exits 1 — the code `check` uses for "the
  // configuration is invalid". Every other usage mistake exits 2, so a deploy gate running
  // `sendas check relay.yaml` (forgot --config) reports a broken config instead of a bad call.
  it('refuses an unknown option or a stray argument, saying which, without checking anything', async () => {
    const stray = await sendas(['check', GOOD]);
    expect(stray.stdout).toBe('');
    expect(stray.stderr.startsWith(`sendas check: Unexpected argument '${GOOD}'. This command does not take positional arguments\n`)).toBe(true);
    expect(stray.stderr).toContain('usage: sendas <command>');
    expect(stray.code).not.toBe(0);
    const unknown = await sendas(['check', '--config', GOOD, '--verbose']);
    expect(unknown.stdout).toBe('');
    expect(unknown.stderr.startsWith("sendas check: Unknown option '--verbose'\n")).toBe(true);
    expect(unknown.code).not.toBe(0);
  });
  it('treats an unknown option or a stray argument as a usage error (exit 2)', async () => {
    const [stray, unknown] = await Promise.all([sendas(['check', GOOD]), sendas(['check', '--config', GOOD, '--verbose'])]);
    expect([stray.code, unknown.code]).toEqual([2, 2]);
  });
});

describe.concurrent('sendas explain', () => {
  const explain = (args: readonly string[], config = GOOD) => sendas(['explain', '--config', config, ...args]);

  it('shows identity, server, upstream login, final From and Reply-To for an overriding channel', async () => {
    const r = await explain(['--from', 'support@acme.example']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'identity:       channel support (support@acme.example), matched by header-from',
        'server:         main (default) smtp.acme.example:587 starttls',
        "upstream login: support@acme.example (the identity's own account, auth login)",
        'limits:         5 connections, no rate limit, no daily budget (account main/support@acme.example)',
        'From:           Acme Support <support@acme.example> (was support@acme.example)',
        'Reply-To:       (not added)',
        'envelope from:  <support@acme.example>',
        'result:         relayed',
        '',
      ].join('\n'),
    );
    expectNoSecrets(r.stdout);
  });

  it('rewrites From to the server account for a channel without override, keeping the original as Reply-To', async () => {
    const r = await explain(['--from', 'Sales Team <Sales@Acme.Example>']);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines).toContain('identity:       channel sales (sales@acme.example), matched by header-from');
    expect(lines).toContain("upstream login: relay@acme.example (the server's account, auth login)");
    expect(lines).toContain('From:           Sales Team <relay@acme.example> (was Sales Team <Sales@Acme.Example>)');
    expect(lines).toContain('Reply-To:       Sales Team <Sales@Acme.Example> (added: the original From)');
    expect(lines).toContain('envelope from:  <relay@acme.example>');
  });

  it('uses the server named by the identity', async () => {
    const r = await explain(['--from', 'bob@legacy.example']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('identity:       agent bob (bob@legacy.example), matched by header-from\n');
    expect(r.stdout).toContain('server:         legacy mail.legacy.example:25 none\n');
    expect(r.stdout).toContain("upstream login: legacy@legacy.example (the server's account, auth login)\n");
  });

  it('exits 3 with "refused: 550 5.7.1" for a sender that is no channel or agent (unknown_sender: reject)', async () => {
    const r = await explain(['--from', 'someone@else.example']);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('refused: 550 5.7.1 Sender someone@else.example is not a channel or agent of this relay, so it has no account to send with\n');
  });

  it('refuses with 550 5.7.1 when the login may not send as the identity (send_as)', async () => {
    const r = await explain(['--from', 'support@acme.example', '--login', 'crm']);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('refused: 550 5.7.1 Login crm may not send as channel "support" (support@acme.example); it may send as: sales, billing\n');
    // the same login may send as an identity on its list, and a login without send_as as anyone
    expect((await explain(['--from', 'billing@legacy.example', '--login', 'crm'])).code).toBe(0);
    expect((await explain(['--from', 'support@acme.example', '--login', 'helpdesk'])).code).toBe(0);
  });

  it('refuses at AUTH a login that is not in clients', async () => {
    const r = await explain(['--from', 'sales@acme.example', '--login', 'intruder']);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('refused at AUTH: intruder is not a login in clients (535 5.7.8)\n');
  });

  it('refuses with 554 5.3.5 an identity whose override has no password, saying what to set', async () => {
    const r = await explain(['--from', 'dave@acme.example']);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe(
      'refused: 554 5.3.5 agent "dave" (dave@acme.example) has no email password configured: it overrides the server account, so an admin must set agents[2].override.password before it can send\n',
    );
  });

  it('falls back to the envelope sender when the From names nobody', async () => {
    const r = await explain(['--from', 'Printer <scanner@printer.example>', '--envelope', 'billing@legacy.example']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'identity:       channel billing (billing@legacy.example), matched by envelope-from',
        'server:         legacy mail.legacy.example:25 none',
        "upstream login: legacy@legacy.example (the server's account, auth login)",
        'limits:         5 connections, no rate limit, no daily budget (account legacy/legacy@legacy.example)',
        'From:           Printer <legacy@legacy.example> (was Printer <scanner@printer.example>)',
        'Reply-To:       Printer <scanner@printer.example> (added: the original From)',
        'envelope from:  <legacy@legacy.example>',
        'result:         relayed',
        '',
      ].join('\n'),
    );
  });

  it('prefers the From header over the envelope sender', async () => {
    const r = await explain(['--from', 'alice@acme.example', '--envelope', 'bob@legacy.example']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('identity:       agent alice (alice@acme.example), matched by header-from\n');
    expect(r.stdout).toContain('From:           Alice Martin <alice@acme.example> (was alice@acme.example)\n');
  });

  it('keeps a null envelope sender null', async () => {
    const r = await explain(['--from', 'support@acme.example', '--envelope', '<>']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('envelope from:  <> (null sender kept)\n');
  });

  it('exits 2 when neither --from nor --envelope is given', async () => {
    const r = await explain([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('sendas explain: pass --from ADDR (and optionally --envelope ADDR, --login USER)\n');
  });

  it('exits 1 with the problems when the configuration is broken', async () => {
    const r = await explain(['--from', 'support@acme.example'], BROKEN);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`${BROKEN}: 9 problems in the configuration\n`);
  });

  describe('with policy.from reject', () => {
    it('refuses with 550 5.7.1 a From that is not the account, naming the required address', async () => {
      const r = await explain(['--from', 'sales@acme.example'], POLICY_REJECT);
      expect(r.code).toBe(3);
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines.at(-1)).toBe('refused: 550 5.7.1 From sales@acme.example is not allowed: messages sent as channel "sales" must have From: relay@acme.example');
      expect(lines[0]).toBe('identity:       channel sales (sales@acme.example), matched by header-from');
    });

    it('refuses an unknown sender on the default account (unknown_sender: default) unless From is that account', async () => {
      const refused = await explain(['--from', 'someone@else.example'], POLICY_REJECT);
      expect(refused.code).toBe(3);
      expect(refused.stdout).toContain("identity:       none: the default server's own account (policy.unknown_sender: default)\n");
      expect(refused.stdout).toContain("refused: 550 5.7.1 From someone@else.example is not allowed: messages sent as the default server's account must have From: relay@acme.example\n");

      const ok = await explain(['--from', 'relay@acme.example'], POLICY_REJECT);
      expect(ok.code).toBe(0);
      expect(ok.stdout).toContain('From:           relay@acme.example (unchanged)\n');
    });

    it('relays a From that already is the account, unchanged, with no Reply-To', async () => {
      const r = await explain(['--from', 'Help <SUPPORT@acme.example>'], POLICY_REJECT);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("upstream login: support@acme.example (the identity's own account, auth login)\n");
      expect(r.stdout).toContain('From:           Help <SUPPORT@acme.example> (unchanged)\n');
      expect(r.stdout).toContain('Reply-To:       (not added)\n');
      expect(r.stdout).toContain('result:         relayed\n');
    });
  });
});
