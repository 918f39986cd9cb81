import { createServer, type Server, type Socket } from 'node:net';
import { afterEach } from 'vitest';
import { QueueStore } from '../../src/queue/store.js';
import { startTestUpstream, type TestUpstream, type TestUpstreamOptions } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { ACCOUNTS, message, relayYaml, startRelay, type RunningRelay } from './harness.js';

/**
 * What the delivery: queue files share: upstreams, relays and silent servers started by a test
 * and stopped after it, and swaks sending through the relay. Call it inside the describe.
 */
export function queueFixture() {
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
  return { upstreams, relays, silentServer, upstream, relay, send, queued };
}
