import { mkdir, rm, writeFile } from 'node:fs/promises';
import { expect, it, describe, vi } from 'vitest';
import { simpleParser, type SimpleParserOptions } from 'mailparser';
import { freePort } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { headerValues, message, split } from './harness.js';
import { queueFixture } from './queue-fixture.js';

/** delivery: queue — 250 means "on disk"; delivery, retries and notices happen after. */
describe('delivery: queue', () => {
  const { upstream, relay, send, queued } = queueFixture();

  it('answers 250 once the message is on disk, and delivers it once when the upstream comes up later', async () => {
    const port = await freePort();
    const r = await relay(port, 'queue:\n  retry: [300ms]\n');
    const sent = await send(r);
    expect(sent.finalCode).toBe(250);
    expect(sent.finalReply).toMatch(/^250 2\.0\.0 Queued as [A-Z2-9]{12}: sending as support@acme\.example through main$/);
    const deferred = await r.waitForLog((l) => l.result === 'deferred');
    expect(deferred).toMatchObject({ kind: 'network', code: 451, attempt: 1 });
    // the attempt is logged as it ends; its state reaches the disk right after (one fsync later)
    await vi.waitFor(async () => expect((await queued(r))[0]?.lastError?.reason).toMatch(/Cannot connect to upstream main/), { timeout: 5000, interval: 20 });

    const u = await upstream({ port });
    const got = await u.nextMessage();
    expect([got.login, got.mailFrom]).toEqual(['support@acme.example', 'support@acme.example']);
    await r.waitForLog((l) => l.msg === 'removed from the queue: every recipient has the message');
    expect(await queued(r)).toEqual([]);
    expect(u.messages).toHaveLength(1);
  });

  it('a queue it cannot write to: 451 4.3.0 naming the system error, nothing queued; the next message once it can is queued', async () => {
    const u = await upstream();
    const r = await relay(u.port, '');
    // small messages go to the queue's journal/, large ones (over 64 KiB) through tmp/: a file
    // where each directory should be makes every write there fail (ENOTDIR), even as root
    for (const [area, body] of [['journal', undefined], ['tmp', `${'y'.repeat(998)}\r\n`.repeat(100)]] as const) {
      const path = `${r.dir}/var/queue/${area}`;
      await rm(path, { recursive: true });
      await writeFile(path, 'not a directory');
      const data = message({ From: 'support@acme.example', Subject: 'lost?' }, body);
      const after = r.logs.length;
      const sent = await swaks({ server: '127.0.0.1', port: r.port, from: 'support@acme.example', to: 'customer@example.net', data });
      expect(sent.finalCode, area).toBe(451);
      expect(sent.finalReply, area).toMatch(/^451 4\.3\.0 The relay could not store the message in its queue \(ENOTDIR\); nothing was accepted, send it again later \(id [A-Z2-9]{12}\)$/);
      expect(await r.waitForLog((l) => l.result === 'refused', { after })).toMatchObject({ kind: 'internal', code: 451 });
      await rm(path);
      await mkdir(path);
      expect(await queued(r)).toEqual([]);
    }

    expect((await send(r, { subject: 'kept' })).finalCode).toBe(250);
    expect(headerValues(split((await u.nextMessage()).raw).head, 'Subject')).toEqual(['kept']);
    expect(u.messages).toHaveLength(1);
  });

  it('refuses a message over max_message_size with 552 and queues nothing of it', async () => {
    const u = await upstream();
    const r = await relay(u.port, '');
    const big = message({ From: 'support@acme.example', Subject: 'big' }, `${'z'.repeat(998)}\r\n`.repeat(2_200));
    const sent = await swaks({ server: '127.0.0.1', port: r.port, from: 'support@acme.example', to: 'c@example.net', data: big });
    expect(sent.finalCode).toBe(552);
    expect(sent.finalReply).toMatch(/^552 5\.3\.4 /);
    await r.waitForLog((l) => l.result === 'refused');
    expect(await queued(r)).toEqual([]);
    expect((await send(r, { subject: 'small' })).finalCode).toBe(250);
    expect(headerValues(split((await u.nextMessage()).raw).head, 'Subject')).toEqual(['small']);
    expect(u.messages).toHaveLength(1);
  });

  it('retries a 451 on the schedule and delivers once: 451, 451, then 250', async () => {
    let calls = 0;
    const seen: number[] = [];
    const u = await upstream({
      onData: () => {
        seen.push(Date.now());
        return ++calls <= 2 ? { code: 451, message: '4.3.0 Greylisted, try again' } : undefined;
      },
    });
    const r = await relay(u.port, 'queue:\n  retry: [300ms, 600ms]\n');
    expect((await send(r)).finalCode).toBe(250);
    await u.nextMessage();
    await r.waitForLog((l) => l.result === 'delivered');
    expect(u.rejected).toHaveLength(2);
    expect(u.messages).toHaveLength(1);
    // the schedule is honoured: the second wait is the second entry of `retry`
    expect(seen[1]! - seen[0]!).toBeGreaterThanOrEqual(290);
    expect(seen[2]! - seen[1]!).toBeGreaterThanOrEqual(590);
    expect(seen[2]! - seen[0]!).toBeLessThan(5_000);
    const lines = r.logs.filter((l) => l.id !== undefined && (l.result === 'deferred' || l.result === 'delivered'));
    expect(lines.map((l) => [l.result, l.attempt])).toEqual([
      ['deferred', 1],
      ['deferred', 2],
      ['delivered', 3],
    ]);
    expect(lines[0]).toMatchObject({ kind: 'refused', upstreamReply: '451 4.3.0 Greylisted, try again' });
  });

  it('fails a 550 recipient for good and sends the envelope sender an RFC 3464 notice, with a copy to queue.notify', async () => {
    const u = await upstream({ refuseRecipients: { 'gone@example.net': { code: 550, message: '5.1.1 No such user here' } } });
    const r = await relay(u.port, 'queue:\n  retry: [300ms]\n  notify: postmaster@acme.example\n');
    const sent = await send(r, { envelope: 'tickets@crm.local', to: ['gone@example.net', 'ok@example.net'], subject: 'Ticket 4711' });
    expect(sent.finalCode).toBe(250);

    const delivered = await u.nextMessage();
    expect(delivered.rcptTo).toEqual(['ok@example.net']);
    const notice = await u.nextMessage();
    // the notice: null sender, through the default server's account, to the original envelope sender + notify
    expect(notice.mailFrom).toBe('');
    expect(notice.login).toBe('relay@acme.example');
    expect(notice.rcptTo).toEqual(['tickets@crm.local', 'postmaster@acme.example']);
    const parsed = await simpleParser(notice.raw, { keepDeliveryStatus: true } as unknown as SimpleParserOptions);
    expect(parsed.headers.get('content-type')).toMatchObject({ value: 'multipart/report', params: { 'report-type': 'delivery-status' } });
    expect(parsed.subject).toBe('Undelivered Mail Returned to Sender: Ticket 4711');
    expect(parsed.from?.value[0]?.address).toBe('relay@acme.example');
    expect(parsed.headers.get('auto-submitted')).toBe('auto-replied');
    expect(parsed.text).toContain('gone@example.net');
    const status = parsed.attachments.find((a) => a.contentType === 'message/delivery-status')!.content.toString();
    expect(status).toContain('Final-Recipient: rfc822; gone@example.net');
    expect(status).toContain('Action: failed');
    expect(status).toContain('Status: 5.1.1');
    expect(status).toContain('Diagnostic-Code: smtp; 550 5.1.1 No such user here');
    expect(status).not.toContain('ok@example.net');
    const headers = parsed.attachments.find((a) => a.contentType === 'text/rfc822-headers')!.content.toString();
    expect(headers).toContain('Subject: Ticket 4711');

    // kept for inspection: only the refused recipient failed; the delivered one is not sent again
    const failed = await queued(r, 'failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.recipients.map((x) => [x.address, x.status])).toEqual([
      ['gone@example.net', 'failed'],
      ['ok@example.net', 'delivered'],
    ]);
  });

  it('gives up at max_age with a notice saying so, and never sends a notice about a notice', async () => {
    // everything with a real sender is deferred; notices (null sender) get through
    const u = await upstream({ onData: (m) => (m.mailFrom === '' ? undefined : { code: 451, message: '4.4.2 Mailbox server busy' }) });
    const r = await relay(u.port, 'queue:\n  retry: [250ms]\n  max_age: 1s\n');
    expect((await send(r, { envelope: 'tickets@crm.local' })).finalCode).toBe(250);
    const notice = await u.nextMessage(10_000);
    expect(notice.rcptTo).toEqual(['tickets@crm.local']);
    const parsed = await simpleParser(notice.raw, { keepDeliveryStatus: true } as unknown as SimpleParserOptions);
    expect(parsed.text).toMatch(/given up/);
    const status = parsed.attachments.find((a) => a.contentType === 'message/delivery-status')!.content.toString();
    expect(status).toContain('Status: 4.4.2');
    await r.waitForLog((l) => l.msg === 'failure notice queued');
    expect((await queued(r, 'failed'))[0]!.recipients[0]!.lastError?.reason).toMatch(/^gave up after \d+s and \d+ attempts: /);
  });

  it('splits a large recipient list into batches of max_recipients', async () => {
    const u = await upstream();
    const r = await relay(u.port, '', '    max_recipients: 2\n');
    const to = ['a@example.net', 'b@example.net', 'c@example.net', 'd@example.net', 'e@example.net'];
    expect((await send(r, { to })).finalCode).toBe(250);
    const batches = [await u.nextMessage(), await u.nextMessage(), await u.nextMessage()].map((m) => m.rcptTo);
    expect(batches).toEqual([['a@example.net', 'b@example.net'], ['c@example.net', 'd@example.net'], ['e@example.net']]);
  });

  it('makes messages wait for the per-account rate, and fails none of them', async () => {
    const arrivals: number[] = [];
    const u = await upstream({ onData: () => void arrivals.push(Date.now()) });
    const r = await relay(u.port, '', '    rate: 2/s\n');
    const before = Date.now();
    const sent = await Promise.all([0, 1, 2, 3].map((i) => send(r, { subject: `r${i}` })));
    expect(sent.map((x) => x.finalCode)).toEqual([250, 250, 250, 250]);
    for (let i = 0; i < 4; i++) await u.nextMessage();
    // at most 2 sends start in any second, and none before the messages were sent: the third
    // arrives at least a second after that; unthrottled, all four land within ~100 ms. (Measured
    // from before sending, not from the first arrival: on a loaded machine the first one's
    // connection can take longer than the rest of the second.)
    expect(arrivals[2]! - before).toBeGreaterThanOrEqual(950);
    expect(arrivals[1]! - arrivals[0]!).toBeLessThan(800);
    expect(r.logs.filter((l) => l.result === 'deferred' || l.result === 'failed')).toEqual([]);
  });
});
