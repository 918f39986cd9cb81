import { execFile } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { simpleParser, type SimpleParserOptions } from 'mailparser';
import { QueueStore } from '../../src/queue/store.js';
import { freePort, startTestUpstream, type TestUpstream, type TestUpstreamOptions } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { CLI } from '../support/relay-process.js';
import { ACCOUNTS, headerValues, message, relayYaml, split, startRelay, type RunningRelay } from './harness.js';

const run = promisify(execFile);

/** delivery: queue — 250 means "on disk"; delivery, retries, failover and notices happen after. */
describe('delivery: queue', () => {
  const upstreams: TestUpstream[] = [];
  const relays: RunningRelay[] = [];
  const servers: Server[] = [];
  afterEach(async () => {
    for (const r of relays.splice(0)) await r.stop();
    for (const u of upstreams.splice(0)) await u.close();
    for (const s of servers.splice(0)) {
      const closed = new Promise((resolve) => s.close(resolve));
      for (const sock of openSockets.get(s) ?? []) sock.destroy();
      await closed;
    }
  });
  /** Sockets of the silent servers, destroyed at the end so close() can finish. */
  const openSockets = new Map<Server, Set<Socket>>();
  const silentServer = async (onSocket: (s: Socket) => void = () => undefined) => {
    const set = new Set<Socket>();
    const server = createServer((sock) => {
      set.add(sock);
      sock.on('close', () => set.delete(sock));
      onSocket(sock);
    });
    openSockets.set(server, set);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, port: (server.address() as { port: number }).port };
  };

  const upstream = async (opts: TestUpstreamOptions = {}) => {
    const u = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true, ...opts });
    upstreams.push(u);
    return u;
  };
  const relay = async (port: number, queueYaml: string, serverExtra = '', opts: { shutdownGraceMs?: number; ops?: boolean } = {}) => {
    const r = await startRelay(relayYaml(port, queueYaml, serverExtra, 'queue'), opts);
    relays.push(r);
    return r;
  };
  const send = (r: RunningRelay, opts: { from?: string; to?: string | string[]; subject?: string; envelope?: string } = {}) =>
    swaks({
      server: '127.0.0.1',
      port: r.port,
      from: opts.envelope ?? opts.from ?? 'support@acme.example',
      to: opts.to ?? 'customer@example.net',
      data: message({ From: opts.from ?? 'support@acme.example', Subject: opts.subject ?? 'queued' }),
    });
  const queued = (r: RunningRelay, area: 'active' | 'failed' = 'active') => new QueueStore(`${r.dir}/var/queue`).list(area);

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

  it('fails over to the alternate while the primary is down, and goes back once it answers again', async () => {
    const primaryPort = await freePort();
    // the alternate defers message three, so the relay's own retries (every 300 ms) carry it
    // past the cool-down: the test waits for events, never for the cool-down itself
    const alternate = await upstream({ onData: (m) => (headerValues(split(m.raw).head, 'Subject')[0] === 'three' ? { code: 451, message: '4.3.0 try again later' } : undefined) });
    // the cool-down must outlast sending message two even on a loaded CI machine
    const cooldownMs = 3_000;
    const r = await relay(primaryPort, 'queue:\n  retry: [300ms]\n', `    alternate: {host: 127.0.0.1, port: ${alternate.port}, cooldown: ${cooldownMs}ms}\n`, { ops: true });
    const primaryHost = `127.0.0.1:${primaryPort}`;
    const alternateHost = `127.0.0.1:${alternate.port}`;
    // ops see the host in use in /status and in the route metric, not only in the log
    const route = async () => (JSON.parse((await r.ops('/status')).text) as { servers: { name: string; route: { host: string; role: string; since: string } }[] }).servers[0]!.route;
    const routeMetric = async () => (await r.ops('/metrics')).text.split('\n').filter((l) => l.startsWith('sendas_server_route{')).sort();
    const metricRows = (inUse: 'primary' | 'alternate') => [
      `sendas_server_route{server="main",host="${alternateHost}",role="alternate"} ${inUse === 'alternate' ? 1 : 0}`,
      `sendas_server_route{server="main",host="${primaryHost}",role="primary"} ${inUse === 'primary' ? 1 : 0}`,
    ].sort();
    expect(await route()).toMatchObject({ host: primaryHost, role: 'primary' });
    expect(await routeMetric()).toEqual(metricRows('primary'));

    expect((await send(r, { subject: 'one' })).finalCode).toBe(250);
    const first = await alternate.nextMessage();
    expect(first.login).toBe('support@acme.example');
    const failedOver = await r.waitForLog((l) => l.msg === 'primary unreachable: using the alternate');
    expect(failedOver).toMatchObject({ server: 'main', kind: 'network' });
    const failedOverAt = typeof failedOver.time === 'number' ? failedOver.time : Date.parse(String(failedOver.time));
    const onAlternate = await route();
    expect(onAlternate).toMatchObject({ host: alternateHost, role: 'alternate' });
    // since: the moment of the failover (the log line is written just after it)
    expect(Math.abs(Date.parse(onAlternate.since) - failedOverAt)).toBeLessThan(1_000);
    expect(await routeMetric()).toEqual(metricRows('alternate'));

    const primary = await upstream({ port: primaryPort });
    // within the cool-down the alternate keeps the traffic
    expect((await send(r, { subject: 'two' })).finalCode).toBe(250);
    expect(headerValues(split((await alternate.nextMessage()).raw).head, 'Subject')).toEqual(['two']);
    expect(Date.now() - failedOverAt).toBeLessThan(cooldownMs);
    // message three is sent within the cool-down too: it goes to the alternate, which defers it,
    // and keeps going there at each retry until the cool-down has passed; then the primary takes it
    expect((await send(r, { subject: 'three' })).finalCode).toBe(250);
    const three = await primary.nextMessage(cooldownMs + 10_000);
    expect(headerValues(split(three.raw).head, 'Subject')).toEqual(['three']);
    expect(Date.now()).toBeGreaterThanOrEqual(failedOverAt + cooldownMs);
    expect(alternate.rejected.map((x) => headerValues(split(x.msg.raw).head, 'Subject')[0])).toContain('three');
    await r.waitForLog((l) => l.msg === 'primary reachable again: back from the alternate');
    const back = await route();
    expect(back).toMatchObject({ host: primaryHost, role: 'primary' });
    expect(Date.parse(back.since)).toBeGreaterThanOrEqual(failedOverAt + cooldownMs);
    expect(await routeMetric()).toEqual(metricRows('primary'));
  });

  it.each(['closes', 'resets'] as const)('a connection the primary %s mid-DATA is "connection lost", deferred, and no reason to fail over', async (how) => {
    // an upstream that greets, signs in and takes the envelope, then drops the connection in the message
    let dropped = 0;
    const { port: primaryPort } = await silentServer((sock) => {
      sock.write('220 flaky.test ESMTP\r\n');
      let buffered = '';
      let inData = false;
      let auth = 0;
      sock.on('data', (chunk: Buffer) => {
        if (inData) {
          if (sock.writableEnded || sock.destroyed) return;
          dropped++;
          if (how === 'resets') sock.resetAndDestroy();
          else sock.end();
          return;
        }
        buffered += chunk.toString('latin1');
        let end: number;
        while ((end = buffered.indexOf('\r\n')) >= 0) {
          const line = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const verb = line.split(' ')[0]!.toUpperCase();
          if (verb === 'EHLO') sock.write('250-flaky.test\r\n250 AUTH LOGIN PLAIN\r\n');
          else if (verb === 'AUTH') {
            auth = 1;
            sock.write('334 VXNlcm5hbWU6\r\n');
          } else if (auth === 1) {
            auth = 2;
            sock.write('334 UGFzc3dvcmQ6\r\n');
          } else if (auth === 2) {
            auth = 0;
            sock.write('235 2.7.0 Authenticated\r\n');
          } else if (verb === 'MAIL' || verb === 'RCPT') sock.write('250 2.1.0 OK\r\n');
          else if (verb === 'DATA') {
            inData = true;
            sock.write('354 go ahead\r\n');
          } else sock.write('502 5.5.2 not here\r\n');
        }
      });
    });
    const alternate = await upstream();
    const r = await relay(primaryPort, 'queue:\n  retry: [1h]\n', `    alternate: {host: 127.0.0.1, port: ${alternate.port}, cooldown: 1m}\n`);
    expect((await send(r, { subject: `dropped (${how})` })).finalCode).toBe(250);
    const attempt = await r.waitForLog((l) => l.result === 'deferred' || l.result === 'delivered');
    expect(dropped).toBe(1);
    expect(attempt).toMatchObject({ result: 'deferred', kind: 'network', code: 451, enhanced: '4.4.2', host: `127.0.0.1:${primaryPort}` });
    expect(attempt.reason).toMatch(new RegExp(`^Connection lost with upstream main \\(127\\.0\\.0\\.1:${primaryPort}\\): `));
    expect(r.logs.filter((l) => l.msg === 'primary unreachable: using the alternate')).toEqual([]);
    expect([alternate.connections, alternate.messages.length]).toEqual([0, 0]);
    await vi.waitFor(async () => expect((await queued(r))[0]?.lastError?.reason).toMatch(/^Connection lost with upstream main/), { timeout: 5000, interval: 20 });
  });

  it('one stuck account does not hold up the others', async () => {
    // support's server accepts TCP and never answers; sales goes through a working one
    const sockets: Socket[] = [];
    const { server: silent, port: stuckPort } = await silentServer((sock) => sockets.push(sock));
    const u = await upstream();
    const yaml = relayYaml(u.port, '', '', 'queue')
      .replace('channels:', `  - name: stuck\n    host: 127.0.0.1\n    port: ${stuckPort}\n    security: none\n    address: stuck@acme.example\nchannels:`)
      .replace('    display_name: Acme Support\n', '    display_name: Acme Support\n    server: stuck\n');
    const r = await startRelay(yaml, { shutdownGraceMs: 200 });
    relays.push(r);
    for (let i = 0; i < 8; i++) expect((await send(r, { subject: `stuck-${i}` })).finalCode).toBe(250);
    while (sockets.length < 5) await new Promise((resolve) => silent.once('connection', resolve));
    expect((await send(r, { from: 'sales@acme.example', subject: 'not starved' })).finalCode).toBe(250);
    const got = await u.nextMessage(5_000);
    expect(headerValues(split(got.raw).head, 'Subject')).toEqual(['not starved']);
    // the stuck account uses its pool size (5 connections), not more
    expect(sockets.length).toBe(5);
  });

  it('on stop: 421 to new sessions, running deliveries get the grace period, the rest stays queued', async () => {
    // an upstream that accepts TCP and never greets: the delivery hangs until we stop
    const sockets: Socket[] = [];
    const { server: silent, port } = await silentServer((sock) => sockets.push(sock));
    // a grace period long enough for swaks to start and connect on a loaded machine (300 ms was not, once)
    const r = await startRelay(relayYaml(port, '', '', 'queue'), { shutdownGraceMs: 5_000 });
    expect((await send(r)).finalCode).toBe(250);
    await r.waitForLog((l) => l.msg === 'message queued');
    while (sockets.length === 0) await new Promise((resolve) => silent.once('connection', resolve));

    let stopped = false;
    const stopping = r.stop().then(() => (stopped = true));
    const late = await swaks({ server: '127.0.0.1', port: r.port, from: 'support@acme.example', to: 'c@example.net', data: message({ From: 'support@acme.example' }) });
    expect(late.finalCode).toBe(421);
    expect(late.finalReply).toMatch(/^421 4\.3\.2 sendas is shutting down/);
    // the hung delivery has its grace period: stop waits for it, then leaves the message queued
    expect(stopped).toBe(false);
    await stopping;
    expect(await new QueueStore(`${r.dir}/var/queue`).list()).toHaveLength(1);
  });

  it('sendas queue list / show / retry / delete work while the relay runs', async () => {
    const port = await freePort();
    const r = await relay(port, 'queue:\n  retry: [1h]\n');
    expect((await send(r, { subject: 'stuck' })).finalCode).toBe(250);
    await r.waitForLog((l) => l.result === 'deferred');
    // the attempt is logged as it ends; its state reaches the disk right after
    const entry = await vi.waitFor(async () => (await queued(r)).find((m) => m.attempts === 1) ?? Promise.reject(new Error('not on disk yet')), { timeout: 5000, interval: 20 });
    const cli = (...args: string[]) => run(process.execPath, [CLI, 'queue', ...args, '--config', r.configFile], { timeout: 15_000 });

    const list = await cli('list');
    expect(list.stdout).toMatch(new RegExp(`^ID +AGE +SENDER +IDENTITY +SERVER +RCPTS +TRIES +NEXT +LAST REASON\\n${entry!.id} .* support@acme\\.example +channel:support +main +1 +1 +in 5\\dm +451 4\\.4\\.1 network: Cannot connect`, 'm'));
    const show = await cli('show', entry!.id);
    expect(show.stdout).toContain('customer@example.net: pending (1 attempt) - 451 4.4.1 network: Cannot connect to upstream main');

    // retry goes through the running relay: it makes a new attempt now, not in an hour
    const u = await upstream({ port });
    expect((await cli('retry', entry!.id)).stdout).toBe(`${entry!.id} will be tried now\n`);
    expect(headerValues(split((await u.nextMessage()).raw).head, 'Subject')).toEqual(['stuck']);

    await u.close();
    upstreams.splice(upstreams.indexOf(u), 1);
    expect((await send(r, { subject: 'to delete' })).finalCode).toBe(250);
    await r.waitForLog((l) => l.result === 'deferred' && l.attempt === 1, { after: r.logs.length - 1 });
    const second = await vi.waitFor(async () => (await queued(r)).find((m) => m.attempts === 1) ?? Promise.reject(new Error('not on disk yet')), { timeout: 5000, interval: 20 });
    expect((await cli('delete', second!.id)).stdout).toBe(`${second!.id} deleted\n`);
    expect(await queued(r)).toEqual([]);
    expect((await cli('list')).stdout).toBe('the queue is empty\n');
    const missing = await cli('show', 'NOSUCHID2345').catch((e: { code: number; stderr: string }) => e);
    expect(missing).toMatchObject({ code: 1 });
  });
});
