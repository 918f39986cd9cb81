import { appendFileSync, mkdtempSync, realpathSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { headerValues, message, split } from './harness.js';

const SECRETS = ['srv-a-secret', 'srv-b-secret', 'support-old-secret', 'support-new-secret', 'alice-secret-7', 'carol-secret-8'];

/**
 * Ops edit the YAML while the relay runs. Every edit must be followed by the next message within
 * 2 seconds, without a restart; a broken file must never take the relay down.
 */
describe('live configuration (real process, file edits)', () => {
  let a: TestUpstream;
  let b: TestUpstream;
  let relay: RelayProcess;
  let dir: string;
  let file: string;
  let httpBase: string;

  const yaml = (edit: (y: string) => string = (y) => y) =>
    edit(`http:
  host: 127.0.0.1
  port: 0
listen:
  port: 0
queue:
  retry: [200ms]
servers:
  - name: main
    default: true
    host: 127.0.0.1
    port: ${a.port}
    security: none
    username: relay@acme.example
    password: srv-a-secret
  - name: backup
    host: 127.0.0.1
    port: ${b.port}
    security: none
    username: backup@acme.example
    password: srv-b-secret
channels:
  - name: support
    address: support@acme.example
    override:
      password: {file: support.secret}
  - name: sales
    address: sales@acme.example
agents:
  - name: alice
    address: alice@acme.example
    override:
      password: alice-secret-7
`);

  /** Writes the file the way editors do: a new file renamed over the old one. */
  const writeConfig = (text: string) => {
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file);
  };
  const mark = () => relay.lines.length;
  const reloaded = (after: number) => relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reloaded'), { after, timeoutMs: 2_000 });
  const send = (from: string, subject: string) =>
    swaks({ server: '127.0.0.1', port: relay.port, from, to: 'customer@example.net', data: message({ From: from, Subject: subject }) });
  const subjectOf = (raw: Buffer) => headerValues(split(raw).head, 'Subject')[0];
  const get = async (path: string) => {
    const res = await fetch(`${httpBase}${path}`);
    return { status: res.status, text: await res.text() };
  };

  beforeAll(async () => {
    a = await startTestUpstream({
      accounts: [
        { username: 'relay@acme.example', password: 'srv-a-secret' },
        { username: 'support@acme.example', password: 'support-new-secret' },
        { username: 'alice@acme.example', password: 'alice-secret-7' },
      ],
      requireSenderMatchesLogin: true,
    });
    b = await startTestUpstream({
      accounts: [
        { username: 'backup@acme.example', password: 'srv-b-secret' },
        { username: 'alice@acme.example', password: 'alice-secret-7' },
        { username: 'carol@acme.example', password: 'carol-secret-8' },
      ],
      requireSenderMatchesLogin: true,
    });
    dir = mkdtempSync(join(tmpdir(), 'sendas-reload-'));
    file = join(dir, 'relay.yaml');
    writeFileSync(join(dir, 'support.secret'), 'support-old-secret\n');
    writeFileSync(file, yaml());
    relay = await startRelayProcess(file);
    const monitoring = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('monitoring on'));
    httpBase = `http://127.0.0.1:${String(monitoring.port)}`;
  });

  afterAll(async () => {
    const code = await relay?.stop();
    await a?.close();
    await b?.close();
    expect(code).toBe(0);
    // the whole run's output: no password, old or new, anywhere
    const output = relay.lines.join('\n') + relay.stderr();
    for (const secret of SECRETS) expect(output).not.toContain(secret);
  });

  it('answers /healthz and /readyz', async () => {
    expect(await get('/healthz')).toEqual({ status: 200, text: 'ok\n' });
    expect(await get('/readyz')).toEqual({ status: 200, text: 'ready\n' });
  });

  it('a password rotated in its secret file is used by the queued message at its next attempt', async () => {
    expect((await send('support@acme.example', 'rotate')).finalCode).toBe(250);
    const deferred = await relay.waitForLog((l) => l.result === 'deferred');
    expect(deferred).toMatchObject({ kind: 'auth', upstreamLogin: 'support@acme.example' });
    const at = mark();
    writeFileSync(join(dir, 'support.secret'), 'support-new-secret\n');
    const line = await reloaded(at);
    expect(line.msg).toMatch(/channels: ~support/);
    const got = await a.nextMessage(3_000);
    expect([got.login, subjectOf(got.raw)]).toEqual(['support@acme.example', 'rotate']);
  });

  it('moves an identity to another server', async () => {
    const at = mark();
    writeConfig(yaml((y) => y.replace('  - name: sales\n    address: sales@acme.example\n', '  - name: sales\n    address: sales@acme.example\n    server: backup\n')));
    expect((await reloaded(at)).msg).toMatch(/channels: ~sales/);
    expect((await send('sales@acme.example', 'moved')).finalCode).toBe(250);
    const got = await b.nextMessage(3_000);
    expect([got.login, got.mailFrom, subjectOf(got.raw)]).toEqual(['backup@acme.example', 'backup@acme.example', 'moved']);
  });

  it('changes the default server: identities without `server` move with it', async () => {
    const at = mark();
    writeConfig(yaml((y) => y.replace('    default: true\n', '').replace('  - name: backup\n', '  - name: backup\n    default: true\n')));
    expect((await reloaded(at)).msg).toMatch(/default server: main → backup/);
    expect((await send('alice@acme.example', 'new default')).finalCode).toBe(250);
    const got = await b.nextMessage(3_000);
    expect([got.login, subjectOf(got.raw)]).toEqual(['alice@acme.example', 'new default']);
  });

  it('adds an agent and removes a channel', async () => {
    expect((await send('carol@acme.example', 'before')).finalCode).toBe(550);
    const at = mark();
    writeConfig(
      yaml((y) =>
        y
          .replace('  - name: support\n    address: support@acme.example\n    override:\n      password: {file: support.secret}\n', '')
          .concat('  - name: carol\n    address: carol@acme.example\n    server: backup\n    override:\n      password: carol-secret-8\n'),
      ),
    );
    expect((await reloaded(at)).msg).toMatch(/channels: -support; agents: \+carol/);
    expect((await send('carol@acme.example', 'hello carol')).finalCode).toBe(250);
    expect(subjectOf((await b.nextMessage(3_000)).raw)).toBe('hello carol');
    const gone = await send('support@acme.example', 'removed');
    expect(gone.finalCode).toBe(550);
    expect(gone.finalReply).toMatch(/^550 5\.7\.1 Sender support@acme\.example is not a channel or agent/);
  });

  it('keeps serving with the last good config when the file is broken, shows why, and recovers', async () => {
    const good = yaml((y) => y.concat('  - name: carol\n    address: carol@acme.example\n    server: backup\n    override:\n      password: carol-secret-8\n'));
    let at = mark();
    writeConfig(good);
    await reloaded(at);

    at = mark();
    writeConfig(good.replace('    security: none\n', '    securty: none\n'));
    const failed = await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reload failed'), { after: at, timeoutMs: 2_000 });
    expect(JSON.stringify(failed.issues)).toContain('servers[0].securty');
    const status = JSON.parse((await get('/status')).text) as { config: { lastReloadError?: { issues: { path: string; line: number }[] } } };
    expect(status.config.lastReloadError?.issues[0]).toMatchObject({ path: 'servers[0].securty', line: 13 });
    // still serving, with the previous (good) config
    expect((await send('carol@acme.example', 'still up')).finalCode).toBe(250);
    expect(subjectOf((await b.nextMessage(3_000)).raw)).toBe('still up');

    at = mark();
    writeConfig(good.replace('carol-secret-8', "'carol-secret-8'"));
    await relay.waitForLog((l) => l.recovered === true, { after: at, timeoutMs: 2_000 });
    const after = JSON.parse((await get('/status')).text) as { config: { lastReloadError?: unknown; version: string } };
    expect(after.config.lastReloadError).toBeUndefined();
  });

  it('reloads on SIGHUP', async () => {
    const at = mark();
    writeFileSync(file, yaml((y) => y.replace('retry: [200ms]', 'retry: [250ms]')));
    relay.child.kill('SIGHUP');
    const line = await relay.waitForLog((l) => l.reason === 'SIGHUP' && typeof l.msg === 'string' && l.msg.startsWith('configuration reloaded'), { after: at, timeoutMs: 2_000 });
    expect(line.msg).toMatch(/settings: queue\.retry/);
  });

  it('keeps the connection pool of an account the reload did not change', async () => {
    expect((await send('sales@acme.example', 'pool one')).finalCode).toBe(250);
    expect(subjectOf((await a.nextMessage(3_000)).raw)).toBe('pool one');
    const connections = a.connections;
    const at = mark();
    writeConfig(yaml((y) => y.replace('retry: [200ms]', 'retry: [300ms]')));
    await reloaded(at);
    expect((await send('sales@acme.example', 'pool two')).finalCode).toBe(250);
    expect(subjectOf((await a.nextMessage(3_000)).raw)).toBe('pool two');
    expect(a.connections).toBe(connections);
  });

  it('a file written continuously beside relay.yaml neither triggers nor holds up a reload', async () => {
    // a log kept beside the config: its events used to reach the watcher and each one pushed the
    // debounced reload back, so an edit made while it was written was not applied until it stopped
    const writing = setInterval(() => appendFileSync(join(dir, 'relay.log'), `${new Date().toISOString()} line\n`), 5);
    try {
      await new Promise((r) => setTimeout(r, 500));
      const at = mark();
      writeConfig(yaml((y) => y.replace('retry: [200ms]', 'retry: [350ms]')));
      const line = await reloaded(at);
      expect(line.msg).toMatch(/settings: queue\.retry/);
      expect(line.reason).toBe(`file changed: ${join(realpathSync(dir), 'relay.yaml')}`);
    } finally {
      clearInterval(writing);
    }
    expect(relay.lines.filter((l) => l.includes('relay.log'))).toEqual([]);
  });

  it('/status lists each server with the channels and agents that use it', async () => {
    const status = JSON.parse((await get('/status')).text) as { servers: { name: string; default: boolean; usedBy: { channels: string[]; agents: string[] } }[] };
    expect(status.servers.map((s) => [s.name, s.default, s.usedBy])).toEqual([
      ['main', true, { channels: ['support', 'sales'], agents: ['alice'] }],
      ['backup', false, { channels: [], agents: [] }],
    ]);
  });

  it('/metrics counts the traffic of this test', async () => {
    const { status, text } = await get('/metrics');
    expect(status).toBe(200);
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    expect(value(/^sendas_messages_received_total\{server="main"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^sendas_messages_received_total\{server="backup"\} (\d+)/m)).toBeGreaterThanOrEqual(4);
    expect(value(/^sendas_messages_refused_total\{reason="policy",server="none"\} (\d+)/m)).toBe(2);
    expect(value(/^sendas_messages_failed_total\{reason="auth",server="main",outcome="deferred"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
    expect(value(/^sendas_config_reloads_total\{result="ok"\} (\d+)/m)).toBeGreaterThanOrEqual(6);
    expect(value(/^sendas_config_reloads_total\{result="failed"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
    // (the exact depth races the removal of the last delivered entry; that it is exported is what counts here)
    expect(text).toMatch(/^sendas_queue_depth \d+$/m);
    expect(text).toMatch(/^sendas_delivery_latency_seconds_count\{server="backup"\} [1-9]/m);
    expect(text).toMatch(/^sendas_config_info\{version="[0-9a-f]{12}"\} 1$/m);
    expect(text).toMatch(/^sendas_upstream_connections_open \d+$/m);
  });
});
