import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OpsServer } from '../../src/ops/http.js';
import { swaks } from '../support/swaks.js';
import { freePort, startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, headerValues, message, relayYaml, split, startRelay, type RunningRelay } from './harness.js';

/**
 * A queue on a disk that fills up: a small tmpfs of its own (CI runs as root on a fresh Debian
 * machine, where mount is allowed; elsewhere the test says why it is skipped). Filled with a
 * file until the kernel says ENOSPC, then freed.
 */
describe('delivery: queue on a full disk', () => {
  const mountPoint = mkdtempSync(join(tmpdir(), 'sendas-disk-'));
  let mountError: string | undefined;
  let relay: RunningRelay | undefined;
  let upstream: TestUpstream | undefined;
  let ops: OpsServer | undefined;

  beforeAll(() => {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountPoint], { stdio: 'pipe' });
    } catch (err) {
      mountError = `mount -t tmpfs is not permitted here (${((err as { stderr?: Buffer }).stderr?.toString() || (err as Error).message).trim()})`;
    }
  });
  afterAll(async () => {
    await relay?.stop();
    await upstream?.close();
    await ops?.close();
    if (!mountError) execFileSync('umount', [mountPoint]);
    rmdirSync(mountPoint);
  });

  it('451/452 while full, /readyz 503 then 200 once space is freed, retries on queue.retry, and nothing accepted is lost', async (ctx) => {
    if (mountError) ctx.skip(mountError);
    const port = await freePort();
    relay = await startRelay(relayYaml(port, `queue:\n  dir: ${mountPoint}/queue\n  retry: [300ms]\n`, '', 'queue'));
    const r = relay;
    ops = new OpsServer({ ready: () => r.relay.ready(), status: () => r.relay.status(), registry: r.relay.metrics.registry, logger: pino({ level: 'silent' }) });
    const at = await ops.listen('127.0.0.1', 0);
    const readyz = async () => {
      const res = await fetch(`http://127.0.0.1:${at.port}/readyz`);
      return { status: res.status, text: await res.text() };
    };
    const send = (subject: string, body?: string) =>
      swaks({ server: '127.0.0.1', port: r.port, from: 'support@acme.example', to: 'c@example.net', data: message({ From: 'support@acme.example', Subject: subject }, body) });

    // accepted while the upstream is down: it waits in the queue through what follows
    expect((await send('accepted before')).finalCode).toBe(250);
    await r.waitForLog((l) => l.result === 'deferred');
    expect(await readyz()).toEqual({ status: 200, text: 'ready\n' });

    const filler = join(mountPoint, 'filler');
    try {
      writeFileSync(filler, Buffer.alloc(16 * 1024 * 1024));
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }

    // the journal (under 64 KiB; more than the slack in the journal segment's last page) and a file of its own (over 64 KiB) both refuse, temporarily
    for (const body of [`${'x'.repeat(998)}\r\n`.repeat(10), `${'y'.repeat(998)}\r\n`.repeat(100)]) {
      const refused = await send('while full', body);
      expect(refused.finalReply).toMatch(/^452 4\.3\.1 The relay could not store the message in its queue \(ENOSPC: the disk is full\); nothing was accepted, send it again later/);
    }
    const notReady = await readyz();
    expect(notReady.status).toBe(503);
    expect(notReady.text).toMatch(/^not ready: the queue can't be written \(ENOSPC: the disk is full\) since \S+ \(/);
    // the waiting entry's new state can't be written either: its next attempt follows queue.retry (300 ms), not a fixed minute
    const failedWrite = await r.waitForLog((l) => String(l.msg).startsWith('queue attempt failed unexpectedly') && (l.err as { code?: string } | undefined)?.code === 'ENOSPC');
    expect(failedWrite.retryInMs).toBe(300);

    unlinkSync(filler);
    expect(await readyz()).toEqual({ status: 200, text: 'ready\n' });

    upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true, port });
    expect((await send('accepted after')).finalCode).toBe(250);
    const subjects = [await upstream.nextMessage(), await upstream.nextMessage()].map((m) => headerValues(split(m.raw).head, 'Subject')[0]);
    expect(subjects.sort()).toEqual(['accepted after', 'accepted before']);
    await r.waitForLog((l) => l.msg === 'removed from the queue: every recipient has the message' && r.logs.filter((x) => x.msg === l.msg).length === 2);
    expect(upstream.messages).toHaveLength(2);
  });
});
