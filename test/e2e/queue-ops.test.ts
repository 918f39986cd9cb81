import { execFile } from 'node:child_process';
import type { Socket } from 'node:net';
import { promisify } from 'node:util';
import { describe, expect, it, vi } from 'vitest';
import { QueueStore } from '../../src/queue/store.js';
import { freePort } from '../support/upstream.js';
import { CLI } from '../support/relay-process.js';
import { rawSmtp } from '../support/raw-smtp.js';
import { headerValues, relayYaml, split, startRelay } from './harness.js';
import { queueFixture } from './queue-fixture.js';

const run = promisify(execFile);

/** delivery: queue — what ops see: failover and back, an upstream that hangs, a clean stop, `sendas queue`. */
describe('delivery: queue — failover, stuck upstreams, stopping and the queue command', () => {
  const { upstreams, relays, silentServer, upstream, relay, send, queued } = queueFixture();

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
    // the late client is a bare socket (connects in a millisecond): a second of grace is plenty even
    // on a loaded machine, where swaks took longer than 300 ms to start, once
    const r = await startRelay(relayYaml(port, '', '', 'queue'), { shutdownGraceMs: 1_000 });
    expect((await send(r)).finalCode).toBe(250);
    await r.waitForLog((l) => l.msg === 'message queued');
    while (sockets.length === 0) await new Promise((resolve) => silent.once('connection', resolve));

    let stopped = false;
    const stopAt = performance.now();
    const stopping = r.stop().then(() => (stopped = true));
    const late = await rawSmtp(r.port);
    expect((await late.reply()).text).toMatch(/^421 4\.3\.2 sendas is shutting down/);
    late.end();
    // the hung delivery has its grace period: stop waits for it, then leaves the message queued
    expect(stopped).toBe(false);
    await stopping;
    // and not much longer: the connection still hanging is given up (it held the stop 5 s more, once)
    expect(performance.now() - stopAt).toBeLessThan(1_000 + 3_000);
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
