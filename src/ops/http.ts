import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../log.js';

export interface OpsEndpoints {
  readonly ready: () => Promise<{ ready: boolean; problems: string[] }>;
  readonly status: () => unknown;
  readonly registry: Registry;
  readonly logger: Logger;
}

/**
 * The monitoring side: /healthz (the process answers), /readyz (listener bound, config loaded,
 * queue writable), /metrics (Prometheus text) and /status (JSON). Read-only; bind it to loopback
 * or a monitoring network.
 */
export class OpsServer {
  private readonly server: Server;

  constructor(private readonly endpoints: OpsEndpoints) {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      const send = (code: number, type: string, body: string) => {
        res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'GET only\n');
      const handle = async () => {
        switch (path) {
          case '/healthz':
            return send(200, 'text/plain', 'ok\n');
          case '/readyz': {
            const r = await this.endpoints.ready();
            return send(r.ready ? 200 : 503, 'text/plain', r.ready ? 'ready\n' : `not ready: ${r.problems.join('; ')}\n`);
          }
          case '/metrics':
            return send(200, this.endpoints.registry.contentType, await this.endpoints.registry.metrics());
          case '/status':
            return send(200, 'application/json', `${JSON.stringify(this.endpoints.status(), null, 2)}\n`);
          default:
            return send(404, 'text/plain', 'not found: try /healthz, /readyz, /metrics or /status\n');
        }
      };
      handle().catch((err: unknown) => {
        this.endpoints.logger.error({ err: { message: (err as Error).message }, path }, 'monitoring endpoint failed');
        if (!res.headersSent) send(500, 'text/plain', 'internal error\n');
      });
    });
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
