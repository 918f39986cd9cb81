import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { relayStatus, serverRoutes } from '../../src/ops/status.js';

const snapshot = parseConfig(
  `servers:
  - name: main
    default: true
    host: smtp.acme.example
    username: relay@acme.example
    password: pw
    alternate: {host: smtp2.acme.example, port: 2525}
  - name: graph
    type: graph
    graph_url: https://graph.microsoft.com
    username: relay@contoso.example
    oauth: {client_id: app, client_secret: s, token_url: 'https://login.example/token'}
`,
  '/etc/sendas/relay.yaml',
  { env: {} },
);
const [main, graph] = snapshot.servers;
const startedAt = new Date('2026-12-01T08:00:00Z');

describe('/status route', () => {
  it('a server that never moved has used its primary since the relay started', () => {
    const status = relayStatus({ snapshot, loadedAt: new Date('2026-12-01T09:00:00Z'), lastReloadError: undefined, queue: undefined, startedAt, routes: {} });
    expect(status.servers.map((s) => [s.name, s.route])).toEqual([
      ['main', { host: 'smtp.acme.example:587', role: 'primary', since: '2026-12-01T08:00:00.000Z' }],
      ['graph', { host: 'graph.microsoft.com', role: 'primary', since: '2026-12-01T08:00:00.000Z' }],
    ]);
  });

  it('after a failover: the alternate, since the move; the metric rows mark it', () => {
    const moved = Date.parse('2026-12-01T10:15:00Z');
    const route = { host: 'smtp2.acme.example', port: 2525, role: 'alternate' as const, since: moved };
    const status = relayStatus({ snapshot, loadedAt: startedAt, lastReloadError: undefined, queue: undefined, startedAt, routes: { main: route } });
    expect(status.servers[0]!.route).toEqual({ host: 'smtp2.acme.example:2525', role: 'alternate', since: '2026-12-01T10:15:00.000Z' });
    expect(serverRoutes(main!, route)).toEqual([
      { host: 'smtp.acme.example:587', role: 'primary', inUse: false },
      { host: 'smtp2.acme.example:2525', role: 'alternate', inUse: true },
    ]);
    expect(serverRoutes(graph!, undefined)).toEqual([{ host: 'graph.microsoft.com', role: 'primary', inUse: true }]);
  });
});
