import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { swaks } from '../support/swaks.js';
import { CLI, startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, message, relayYaml, startRelay, type RunningRelay } from './harness.js';

const run = promisify(execFile);

/** The three recipients of every test: the upstream refuses the second at RCPT TO. */
const TO = ['a@example.net', 'gone@example.net', 'b@example.net'];
const REFUSAL = '550 5.1.1 No such user here';
const MESSAGE_ID = 'ticket-4711.1@crm.acme.example';

/** `sendas trace` as ops run it: the compiled CLI, against the relay's config. */
async function trace(configFile: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, 'trace', ...args, '--config', configFile], { env: { PATH: process.env.PATH } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** The lines of one message's trace output that name a recipient (its events and its outcome). */
const about = (stdout: string, recipient: string) => stdout.split('\n').filter((l) => l.includes(recipient));

describe('message trace and sendas trace', () => {
  const upstreams: TestUpstream[] = [];
  const relays: RunningRelay[] = [];
  const processes: RelayProcess[] = [];
  afterEach(async () => {
    for (const p of processes.splice(0)) await p.stop();
    for (const r of relays.splice(0)) await r.stop();
    for (const u of upstreams.splice(0)) await u.close();
  });

  const upstream = async () => {
    const u = await startTestUpstream({ accounts: ACCOUNTS, refuseRecipients: { 'gone@example.net': { code: 550, message: '5.1.1 No such user here' } } });
    upstreams.push(u);
    return u;
  };
  const send = (port: number) =>
    swaks({ server: '127.0.0.1', port, from: 'support@acme.example', to: TO, data: message({ From: 'Acme Support <support@acme.example>', Subject: 'your ticket', 'Message-ID': `<${MESSAGE_ID}>` }) });

  /** A queue-mode relay as a process of its own (so it can be restarted), its config in a directory of its own. */
  const processYaml = (upstreamPort: number, extra = '') => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-trace-'));
    const file = join(dir, 'relay.yaml');
    const yaml = relayYaml(upstreamPort, `http: false\nqueue:\n  retry: [200ms]\n${extra}`, '', 'queue').replace('listen:\n', 'listen:\n  port: 0\n');
    writeFileSync(file, yaml);
    return { dir, file };
  };
  const startProcess = async (file: string) => {
    const p = await startRelayProcess(file);
    processes.push(p);
    return p;
  };
  const traced = (lines: () => Record<string, unknown>[], kinds: Record<string, string>) =>
    Object.entries(kinds).every(([recipient, kind]) => lines().some((l) => l.trace === kind && l.recipient === recipient));
  const parsed = (p: RelayProcess) => p.lines.flatMap((l) => (l.startsWith('{') ? [JSON.parse(l) as Record<string, unknown>] : []));

  it('queue: each recipient has a trace line and sendas trace shows its outcome and upstream reply, also after a restart', async () => {
    const u = await upstream();
    const { file } = processYaml(u.port);
    let relay = await startProcess(file);
    const sent = await send(relay.port);
    expect(sent.finalCode).toBe(250);
    const queueId = /Queued as ([A-Z2-9]{12})/.exec(sent.finalReply)![1]!;
    await relay.waitForLog((l) => l.trace === 'failed' && l.recipient === 'gone@example.net');
    await relay.waitForLog((l) => l.trace === 'delivered' && l.recipient === 'b@example.net');

    const lines = parsed(relay);
    // one line per recipient when queued, one per recipient and attempt
    for (const recipient of TO) expect(lines.filter((l) => l.trace === 'queued' && l.recipient === recipient)).toHaveLength(1);
    const failed = lines.find((l) => l.trace === 'failed')!;
    expect(failed).toMatchObject({ id: queueId, messageId: MESSAGE_ID, envelopeFrom: 'support@acme.example', identity: 'channel:support', account: 'main/support@acme.example', host: `127.0.0.1:${u.port}`, attempt: 1, reply: REFUSAL, kind: 'recipient' });
    expect(failed.msg).toBe(`to=<gone@example.net>, relay=127.0.0.1:${u.port}, attempt=1, status=failed (${REFUSAL})`);
    const delivered = lines.find((l) => l.trace === 'delivered' && l.recipient === 'a@example.net')!;
    expect(delivered.reply).toMatch(/^250 /);
    // the attempt's own line counts right and quotes the upstream's reply to the end of DATA
    const attempt = lines.find((l) => l.msg === 'delivery attempt: partial')!;
    expect(attempt).toMatchObject({ recipients: 3, accepted: 2 });
    expect(attempt.upstreamReply).toMatch(/^250 /);

    /** The whole message by its queue id or its Message-ID (brackets allowed). */
    const whole = async (q: string) => {
      const all = await trace(file, q, '--json');
      if (all.code !== 0) return all.code;
      const answer = JSON.parse(all.stdout) as { messages: { queueId: string; outcome: Record<string, { event: string; reply?: string }> }[] };
      expect(answer.messages).toHaveLength(1);
      expect(Object.fromEntries(Object.entries(answer.messages[0]!.outcome).map(([k, v]) => [k, v.event]))).toEqual({ 'a@example.net': 'delivered', 'gone@example.net': 'failed', 'b@example.net': 'delivered' });
      return 0;
    };
    // while the relay runs (it writes, the CLI reads), once the last event is in the history
    await expect.poll(() => whole(queueId), { timeout: 10_000, interval: 200 }).toBe(0);
    expect(await relay.stop()).toBe(0);
    processes.splice(processes.indexOf(relay), 1);
    relay = await startProcess(file);

    // after the restart: each recipient, the message by its Message-ID, and an address never seen
    const [a, gone, b, byMessageId, none] = await Promise.all([...TO.map((r) => trace(file, r)), trace(file, `<${MESSAGE_ID}>`), trace(file, 'nobody@example.net')]);
    expect(gone!.code).toBe(0);
    expect(gone!.stdout).toContain(`queue id ${queueId}  Message-ID <${MESSAGE_ID}>  from <support@acme.example>`);
    expect(about(gone!.stdout, 'gone@example.net').join('\n')).toMatch(/queued[\s\S]*failed .*attempt 1 {2}reply "550 5\.1\.1 No such user here" {2}kind recipient/);
    expect(gone!.stdout).toContain(`gone@example.net: failed (${REFUSAL})`);
    for (const [r, recipient] of [[a!, 'a@example.net'], [b!, 'b@example.net']] as const) {
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`${recipient}: delivered (250 `);
    }
    expect(byMessageId!.code).toBe(0);
    expect(byMessageId!.stdout.match(/: (delivered|failed) /g)).toEqual([': delivered ', ': failed ', ': delivered ']);
    expect(none!.code).toBe(1);
    expect(none!.stderr).toMatch(/nothing found for nobody@example\.net; the history goes back to \d{4}-\d\d-\d\dT/);
  }, 90_000);

  it('passthrough: relayed and refused per recipient, the partial line counts right, GET /trace and sendas trace find them', async () => {
    const u = await upstream();
    const r = await startRelay(relayYaml(u.port), { ops: true, history: true });
    relays.push(r);
    const sent = await send(r.port);
    expect(sent.finalCode).toBe(250);
    expect(sent.finalReply).toContain('to 2 of 3 recipients');
    await r.waitForLog((l) => l.result === 'partial');
    expect(traced(() => r.logs, { 'a@example.net': 'delivered', 'gone@example.net': 'refused', 'b@example.net': 'delivered' })).toBe(true);
    const refused = r.logs.find((l) => l.trace === 'refused')!;
    expect(refused).toMatchObject({ messageId: MESSAGE_ID, envelopeFrom: 'support@acme.example', account: 'main/support@acme.example', reply: REFUSAL, kind: 'recipient', host: `127.0.0.1:${u.port}` });
    const partial = r.logs.find((l) => l.result === 'partial')!;
    expect(partial.accepted).toBe(2);
    expect(partial.upstreamReply).toMatch(/^250 /);

    const answer = await r.ops('/trace?q=gone@example.net');
    expect(answer.status).toBe(200);
    const events = (JSON.parse(answer.text) as { events: { event: string; recipient: string; reply: string }[] }).events;
    expect(events).toEqual([expect.objectContaining({ event: 'refused', recipient: 'gone@example.net', reply: REFUSAL })]);

    await r.stop();
    relays.splice(0);
    const gone = await trace(r.configFile, 'gone@example.net');
    expect(gone.code).toBe(0);
    expect(gone.stdout).toContain(`gone@example.net: refused (${REFUSAL})`);
    const a = await trace(r.configFile, 'A@Example.NET');
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/a@example\.net: delivered \(250 /);
  }, 30_000);

  it('passthrough: a message sendas refuses is one line naming its recipients, and the history finds it by each', async () => {
    const u = await upstream();
    const r = await startRelay(relayYaml(u.port), { history: true });
    relays.push(r);
    const sent = await swaks({ server: '127.0.0.1', port: r.port, from: 'stranger@elsewhere.example', to: ['x@example.net', 'y@example.net'], data: message({ From: 'stranger@elsewhere.example', Subject: 'x' }) });
    expect(sent.finalCode).toBeGreaterThanOrEqual(500);
    const line = await r.waitForLog((l) => l.result === 'refused');
    expect(line.to).toEqual(['x@example.net', 'y@example.net']);
    expect(r.logs.filter((l) => l.trace !== undefined)).toEqual([]);
    await r.stop();
    relays.splice(0);
    const y = await trace(r.configFile, 'y@example.net');
    expect(y.code).toBe(0);
    expect(y.stdout).toMatch(/y@example\.net: refused \(5\d\d /);
  });

  it('log.redact: no address in any log line of a whole run; the history keeps hashes and sendas trace still finds each recipient', async () => {
    const u = await upstream();
    const { dir, file } = processYaml(u.port, 'log:\n  redact: true\n');
    const relay = await startProcess(file);
    const sent = await send(relay.port);
    expect(sent.finalCode).toBe(250);
    await relay.waitForLog((l) => l.trace === 'failed');
    await relay.waitForLog((l) => l.trace === 'delivered' && l.attempt === 1);
    await expect.poll(() => parsed(relay).filter((l) => l.trace === 'delivered').length, { timeout: 5000, interval: 50 }).toBe(2);
    expect(await relay.stop()).toBe(0);
    processes.splice(0);

    const log = relay.lines.join('\n');
    const addresses = [...TO, 'support@acme.example', 'relay@acme.example', MESSAGE_ID];
    for (const a of addresses) expect(log.toLowerCase()).not.toContain(a.toLowerCase());
    expect(log).not.toMatch(/[\w.+-]+@[\w-]+\.[\w.-]+/);
    // the same address hashes the same everywhere: lines still correlate
    const failed = parsed(relay).find((l) => l.trace === 'failed')!;
    expect(failed.recipient).toMatch(/^h:[0-9a-f]{12}$/);
    expect(failed.msg).toContain(`to=<${String(failed.recipient)}>`);
    expect(parsed(relay).filter((l) => l.recipient === failed.recipient).map((l) => l.trace)).toEqual(['queued', 'failed']);

    const history = ['history.sqlite', 'history.sqlite-wal'].map((f) => join(dir, 'var/state', f)).filter((f) => existsSync(f));
    expect(history.length).toBeGreaterThan(0);
    for (const f of history) for (const a of addresses) expect(readFileSync(f).includes(Buffer.from(a))).toBe(false);

    const gone = await trace(file, 'gone@example.net');
    expect(gone.code).toBe(0);
    expect(gone.stdout).toContain(`${String(failed.recipient)}: failed (550 5.1.1 No such user here)`);
  }, 30_000);
});
