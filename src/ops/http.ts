import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Secret } from '../config/secret.js';
import type { Logger } from '../log.js';
import type { TraceLookup } from '../history/types.js';
import { PAGE_CHALLENGE, pageAuthorized } from './page/access.js';
import { PAGE_HEADERS, statusPage } from './page/serve.js';
import type { RelayStatus } from './status.js';

export interface OpsEndpoints {
  readonly ready: () => Promise<{ ready: boolean; problems: string[] }>;
  readonly status: () => RelayStatus;
  readonly registry: Registry;
  readonly logger: Logger;
  /** The bearer token /status and /metrics need, read per request so a reload rotates it; undefined: open. */
  readonly token?: () => Secret | undefined;
  /** The delivery history's search (`GET /trace?q=`, the status page's search box); undefined: the history is off. */
  readonly trace?: TraceLookup;
}

/** Health answers orchestrators and load balancers, which carry no token; the rest tells about the traffic. */
const OPEN_PATHS = new Set(['/healthz', '/readyz']);

/**
 * The monitoring side: /healthz (the process answers), /readyz (listener bound, config loaded,
 * queue writable), /metrics (Prometheus text) and /status (JSON). Read-only; bind it to loopback
 * or a monitoring network, or set `http.token` (RFC 6750 bearer) for /metrics and /status.
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
      const token = this.endpoints.token?.();
      // the page, for browsers: Basic with the token as password (page/access.ts)
      if (token && path === '/' && !pageAuthorized(req.headers.authorization, token)) {
        res.writeHead(401, { 'content-type': 'text/plain', 'cache-control': 'no-store', 'www-authenticate': PAGE_CHALLENGE });
        return res.end(req.method === 'HEAD' ? undefined : 'unauthorized: sign in with any user name and http.token as the password\n');
      }
      if (token && path !== undefined && path !== '/' && !OPEN_PATHS.has(path) && !bearerMatches(req.headers.authorization, token)) {
        // the header says which scheme; what was sent is never logged nor echoed
        res.writeHead(401, { 'content-type': 'text/plain', 'cache-control': 'no-store', 'www-authenticate': 'Bearer realm="sendas"' });
        return res.end(req.method === 'HEAD' ? undefined : 'unauthorized: send Authorization: Bearer <http.token>\n');
      }
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
          case '/': {
            const page = await statusPage(this.endpoints.status(), this.endpoints.trace, new URLSearchParams((req.url ?? '').split('?')[1] ?? ''));
            res.writeHead(200, PAGE_HEADERS);
            return res.end(req.method === 'HEAD' ? undefined : page);
          }
          case '/status':
            return send(200, 'application/json', `${JSON.stringify(this.endpoints.status(), null, 2)}\n`);
          case '/trace': {
            if (!this.endpoints.trace) return send(404, 'text/plain', 'not found: the delivery history is off (history: false)\n');
            const params = new URL(req.url ?? '/', 'http://x').searchParams;
            const q = params.get('q')?.trim();
            if (!q) return send(400, 'text/plain', 'pass ?q=ADDRESS, a Message-ID or a queue id\n');
            const limit = Number(params.get('limit') ?? 200);
            const events = await this.endpoints.trace(q, Number.isInteger(limit) && limit > 0 ? Math.min(limit, 10_000) : 200);
            return send(200, 'application/json', `${JSON.stringify({ query: q, events }, null, 2)}\n`);
          }
          default:
            return send(404, 'text/plain', 'not found: try / (the status page), /healthz, /readyz, /metrics or /status\n');
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

function bearerMatches(header: string | undefined, token: Secret): boolean {
  const m = /^Bearer +(\S+) *$/i.exec(header ?? '');
  // digests of equal length, so the comparison takes the same time whatever was sent
  const given = createHash('sha256').update(m?.[1] ?? '').digest();
  const expected = createHash('sha256').update(token.reveal()).digest();
  return timingSafeEqual(given, expected) && m !== null;
}
