import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { startRelayProcess, writeQueueRelayConfig as config, type RelayProcess } from '../support/relay-process.js';
import { ACCOUNTS, headerValues, split } from './harness.js';

/** The promises that need a real process: kill -9 and restarts. */
describe('queue durability (real process)', () => {
  const procs: RelayProcess[] = [];
  let upstream: TestUpstream | undefined;
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop('SIGKILL');
    await upstream?.close();
    upstream = undefined;
  });

  it('kill -9 during a burst: every message that got a 250 is delivered after the restart', async () => {
    // each message is deferred once, so at the kill the acknowledged ones are sitting in the queue
    const seen = new Set<string>();
    upstream = await startTestUpstream({
      accounts: ACCOUNTS,
      requireSenderMatchesLogin: true,
      onData: (m) => {
        const subject = headerValues(split(m.raw).head, 'Subject')[0]!;
        if (seen.has(subject)) return undefined;
        seen.add(subject);
        return { code: 451, message: '4.3.0 first attempt deferred' };
      },
    });
    const dir = mkdtempSync(join(tmpdir(), 'sendas-kill-'));
    writeFileSync(join(dir, 'support.secret'), 'support-secret-2\n');
    const file = config(dir, upstream.port);
    const first = await startRelayProcess(file);
    procs.push(first);

    const N = 60;
    const client = nodemailer.createTransport({ host: '127.0.0.1', port: first.port, ignoreTLS: true, pool: true, maxConnections: 6, maxMessages: Infinity });
    const acknowledged: string[] = [];
    let killed = false;
    const sends = Array.from({ length: N }, (_, i) =>
      client
        .sendMail({ from: 'support@acme.example', to: 'customer@example.net', subject: `burst-${i}`, text: `message ${i}\n` })
        .then(() => {
          acknowledged.push(`burst-${i}`);
          // pull the plug mid-burst, while acceptances and deliveries are in flight
          if (acknowledged.length === N / 3 && !killed) {
            killed = true;
            first.child.kill('SIGKILL');
          }
        })
        .catch(() => undefined),
    );
    await Promise.all(sends);
    client.close();
    expect(killed).toBe(true);
    expect(acknowledged.length).toBeGreaterThanOrEqual(N / 3);
    procs.splice(procs.indexOf(first), 1);

    const second = await startRelayProcess(file);
    procs.push(second);
    const received = new Set<string>();
    const missing = () => acknowledged.filter((s) => !received.has(s));
    for (const m of upstream.messages) received.add(headerValues(split(m.raw).head, 'Subject')[0]!);
    while (missing().length > 0) {
      const m = await upstream.nextMessage(10_000);
      received.add(headerValues(split(m.raw).head, 'Subject')[0]!);
    }
    expect(missing()).toEqual([]);
    // the restart really had work to pick up: the plug was pulled with messages in the queue
    expect(second.lines.find((l) => l.includes('"msg":"picked up'))).toMatch(/"pending":[1-9]/);
  }, 60_000);

  it('a password rotated in its secret file is used by the next attempt after a restart', async () => {
    upstream = await startTestUpstream({ accounts: [{ username: 'support@acme.example', password: 'rotated-password-9' }, ACCOUNTS[0]!] });
    const dir = mkdtempSync(join(tmpdir(), 'sendas-rotate-'));
    writeFileSync(join(dir, 'support.secret'), 'expired-password-8\n');
    const file = config(dir, upstream.port, '1h');

    const before = await startRelayProcess(file);
    procs.push(before);
    const client = nodemailer.createTransport({ host: '127.0.0.1', port: before.port, ignoreTLS: true });
    await client.sendMail({ from: 'support@acme.example', to: 'customer@example.net', subject: 'rotated', text: 'x\n' });
    // the first attempt is refused with the old password, and the next one is an hour away
    while (!before.lines.some((l) => l.includes('"result":"deferred"'))) await new Promise((resolve) => before.child.stdout!.once('data', resolve));
    expect(before.lines.find((l) => l.includes('"result":"deferred"'))).toContain('"kind":"auth"');
    expect(await before.stop('SIGTERM')).toBe(0);
    procs.splice(procs.indexOf(before), 1);

    writeFileSync(join(dir, 'support.secret'), 'rotated-password-9\n');
    const after = await startRelayProcess(file);
    procs.push(after);
    // picked up at start: its scheduled time is an hour away, so nudge it the way ops would
    const got = await Promise.race([
      upstream.nextMessage(15_000),
      (async () => {
        const { execFile } = await import('node:child_process');
        const { CLI } = await import('../support/relay-process.js');
        await new Promise((resolve, reject) => execFile(process.execPath, [CLI, 'queue', 'retry', '--all', '--config', file], (err) => (err ? reject(err) : resolve(undefined))));
        return upstream!.nextMessage(15_000);
      })(),
    ]);
    expect(got.login).toBe('support@acme.example');
    expect(upstream.authAttempts.filter((a) => a.username === 'support@acme.example').map((a) => a.ok)).toEqual([false, true]);
    const output = [...before.lines, ...after.lines].join('\n');
    expect(output).not.toContain('rotated-password-9');
    expect(output).not.toContain('expired-password-8');
  }, 60_000);
});
