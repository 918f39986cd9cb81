import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatLine } from '../../src/log/line.js';
import { startRelayProcess, writeQueueRelayConfig, type RelayProcess } from '../support/relay-process.js';
import { swaks } from '../support/swaks.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, message } from './harness.js';

/** time, level, message: every line of `log.format: line` starts so. */
const LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) \S/;

describe('log.format: line (real process)', () => {
  let upstream: TestUpstream;
  let relay: RelayProcess;
  let file: string;

  beforeAll(async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true });
    const dir = mkdtempSync(join(tmpdir(), 'sendas-logfmt-'));
    writeFileSync(join(dir, 'support.secret'), 'support-secret-2\n');
    file = writeQueueRelayConfig(dir, upstream.port);
    writeFileSync(file, `log:\n  format: line\n${readConfig(file)}`);
    relay = await startRelayProcess(file, { SENDAS_QUEUE_DIR: join(dir, 'queue') });
  });
  afterAll(async () => {
    await relay?.stop();
    await upstream?.close();
  });

  it('writes one line per event: time, level, message, then key=value with addresses and ids unquoted', async () => {
    const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to: 'customer@example.net', data: message({ From: 'support@acme.example', Subject: 'line format' }) });
    expect(r.finalCode).toBe(250);
    await upstream.nextMessage();
    const delivered = await waitForLine(relay, (l) => l.includes(' message delivered') || l.includes('delivered'));
    expect(delivered).toMatch(LINE);
    const queued = relay.lines.find((l) => / message queued /.test(l));
    expect(queued).toMatch(LINE);
    expect(queued).toContain(' envelopeFrom=support@acme.example ');
    expect(queued).toMatch(/ id=[^\s"]+/);
    expect(queued).toContain(' server=main');
    expect(queued).not.toContain('service=');
    // every stdout line is an event of its own, none is JSON, none a continuation of the one before
    expect(relay.lines.length).toBeGreaterThanOrEqual(3);
    for (const line of relay.lines) {
      expect(line).toMatch(LINE);
      expect(line.length).toBeLessThan(2_000);
    }
    expect(relay.lines.some((l) => l.includes(' INFO  sendas listening '))).toBe(true);
  });

  it('a change of log.format on reload is announced as needing a restart, and the format stays', async () => {
    const before = relay.lines.length;
    writeFileSync(file, readConfig(file).replace('format: line', 'format: json'));
    relay.child.kill('SIGHUP');
    const line = await waitForLine(relay, (l) => l.includes('Restart sendas to apply log.format'), before);
    expect(line).toMatch(/^\S+ WARN  configuration reloaded \(version \S+\): needs a restart: log\.format\. Restart sendas/);
    expect(line).toMatch(LINE);
  });
});

describe('SENDAS_LOG_FORMAT (real process)', () => {
  it('wins over log.format; a value it does not know is said and ignored', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-logenv-'));
    writeFileSync(join(dir, 'support.secret'), 'support-secret-2\n');
    const file = writeQueueRelayConfig(dir, 9);
    writeFileSync(file, `log:\n  format: json\n${readConfig(file)}`);
    const env = { SENDAS_QUEUE_DIR: join(dir, 'queue') };
    const line = await startRelayProcess(file, { ...env, SENDAS_LOG_FORMAT: 'line' });
    try {
      expect(line.lines.length).toBeGreaterThan(0);
      for (const l of line.lines) expect(l).toMatch(LINE);
    } finally {
      await line.stop();
    }
    const wrong = await startRelayProcess(file, { ...env, SENDAS_LOG_FORMAT: 'yaml' });
    try {
      const warned = await wrong.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('SENDAS_LOG_FORMAT'));
      expect(warned).toMatchObject({ level: 'warn', msg: 'SENDAS_LOG_FORMAT is not one of json, line, pretty: ignored' });
      for (const l of wrong.lines) expect(() => JSON.parse(l)).not.toThrow();
    } finally {
      await wrong.stop();
    }
  });
});

describe('formatLine', () => {
  it('keeps a long multi-line value and nested fields on the one line, quoting only what needs it', () => {
    const json = JSON.stringify({
      level: 'error',
      time: '2026-12-01T10:00:00.000Z',
      service: 'sendas',
      msg: 'delivery failed',
      id: 'q7Hk2',
      to: ['a@example.net', 'b@example.net'],
      reason: 'Upstream main refused the sender',
      upstreamReply: '550 5.7.60 SMTP; Client does not have permissions\r\nto send as this sender',
      err: { message: 'boom', code: 'EAUTH' },
      attempt: 2,
      empty: [],
    });
    expect(formatLine(json)).toBe(
      '2026-12-01T10:00:00.000Z ERROR delivery failed id=q7Hk2 to=a@example.net,b@example.net reason="Upstream main refused the sender" ' +
        'upstreamReply="550 5.7.60 SMTP; Client does not have permissions\\r\\nto send as this sender" err.message=boom err.code=EAUTH attempt=2',
    );
  });
});

function readConfig(file: string): string {
  return readFileSync(file, 'utf8');
}

async function waitForLine(relay: RelayProcess, match: (line: string) => boolean, after = 0, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = relay.lines.slice(after).find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no matching log line within ${timeoutMs} ms:\n${relay.lines.slice(after).join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
