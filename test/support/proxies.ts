/**
 * Loopback proxies for end-to-end tests of the relay's proxy support:
 *
 * - startSocksProxy(): SOCKS5 (RFC 1928) with the no-authentication method, or — with `auth` —
 *   only the username/password method (RFC 1929); CONNECT only (BIND / UDP ASSOCIATE → reply 07
 *   "command not supported"); address types IPv4, domain name and IPv6. The name in a domain
 *   request is resolved by the proxy (remote DNS); `resolve` maps names to addresses, so a test can
 *   use a name only the proxy knows (e.g. 'smtp.office365.test' → 127.0.0.1) and thereby prove the
 *   client let the proxy resolve it.
 * - startHttpConnectProxy(): an HTTP/1.1 proxy that only does CONNECT (RFC 9110 §9.3.6):
 *   `200 Connection established`, `407` + `Proxy-Authenticate: Basic` when `auth` is set and the
 *   request lacks the right Proxy-Authorization, `502` when the target cannot be reached, `403`
 *   for a target that is not loopback, `405` for any other method.
 *
 * Both refuse targets that do not resolve to a loopback address (SOCKS reply 02 "connection not
 * allowed by ruleset" / HTTP 403), so no test can reach the internet through them.
 *
 * `tunnels` lists every tunnel established (target as the client named it, before resolution);
 * `requests` lists every CONNECT request, including refused ones, with the outcome.
 */
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createServer, connect, isIP, type AddressInfo, type Socket } from 'node:net';

export interface ProxyTunnel {
  /** target host as requested (IPv4/IPv6 literal or domain name, not resolved) */
  host: string;
  port: number;
  /** the user name the client authenticated with, when the proxy requires auth */
  username?: string;
}

export interface ProxyRequest extends ProxyTunnel {
  ok: boolean;
  /** why it was refused: 'auth', 'not-allowed', 'refused', 'unreachable', 'command', 'address-type', ... */
  error?: string;
}

export interface ProxyOptions {
  /** require these credentials (SOCKS5: RFC 1929 username/password; HTTP: Proxy-Authorization Basic) */
  auth?: { username: string; password: string };
  /** the proxy's only name service: name → address, e.g. { 'smtp.office365.test': '127.0.0.1' } (case-insensitive); 'localhost' is built in */
  resolve?: Record<string, string>;
}

export interface TestProxy {
  /** socks5://127.0.0.1:PORT or http://127.0.0.1:PORT (without credentials) */
  url: string;
  host: string;
  port: number;
  /** tunnels established, in order */
  tunnels: ProxyTunnel[];
  /** every CONNECT request, in order, refused ones included */
  requests: ProxyRequest[];
  /** stops listening and destroys every client and target connection */
  close(): Promise<void>;
}

const HANDSHAKE_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 5_000;

class TunnelError extends Error {
  constructor(readonly kind: string, message: string) {
    super(message);
  }
}

function isLoopback(address: string): boolean {
  return /^127\./.test(address) || address === '::1' || /^::ffff:127\./i.test(address);
}

/** Resolves the target like a proxy would, refuses anything that is not loopback, and connects. */
function openTarget(host: string, port: number, resolveMap: Map<string, string>): Promise<Socket> {
  const address = resolveMap.get(host.toLowerCase()) ?? (host.toLowerCase() === 'localhost' ? '127.0.0.1' : host);
  if (!isIP(address)) return Promise.reject(new TunnelError('unreachable', `cannot resolve ${host} (test proxy: names come from the resolve option only)`));
  if (!isLoopback(address)) return Promise.reject(new TunnelError('not-allowed', `${host} (${address}) is not a loopback address`));
  return new Promise<Socket>((resolve, reject) => {
    const target = connect({ host: address, port });
    const timer = setTimeout(() => {
      target.destroy();
      reject(new TunnelError('unreachable', `connect to ${address}:${port} timed out`));
    }, CONNECT_TIMEOUT_MS);
    target.once('connect', () => {
      clearTimeout(timer);
      resolve(target); // the 'error' listener below stays: a later error rejects nothing and crashes nothing
    });
    target.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new TunnelError(err.code === 'ECONNREFUSED' ? 'refused' : 'unreachable', err.message));
    });
  });
}

/** Splices two sockets together; an error or reset on one side destroys the other. */
function splice(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.on('close', (hadError) => (hadError ? b.destroy() : b.end()));
  b.on('close', (hadError) => (hadError ? a.destroy() : a.end()));
}

function track(sockets: Set<Socket>, s: Socket): void {
  sockets.add(s);
  s.once('close', () => sockets.delete(s));
}

/** Buffered exact-length reads from a socket during a handshake. */
function reader(sock: Socket): { read(n: number): Promise<Buffer>; detach(): Buffer } {
  let buf = Buffer.alloc(0);
  let want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  let ended: Error | null = null;
  const pump = (): void => {
    if (!want) return;
    if (buf.length >= want.n) {
      const w = want;
      want = null;
      const out = buf.subarray(0, w.n);
      buf = buf.subarray(w.n);
      w.resolve(out);
    } else if (ended) {
      const w = want;
      want = null;
      w.reject(ended);
    }
  };
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d]);
    pump();
  };
  const onEnd = (): void => {
    ended = new TunnelError('client', 'client closed during the handshake');
    pump();
  };
  sock.on('data', onData);
  sock.on('end', onEnd);
  sock.on('close', onEnd);
  return {
    read(n) {
      return new Promise<Buffer>((resolve, reject) => {
        want = { n, resolve, reject };
        pump();
      });
    },
    detach() {
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('close', onEnd);
      sock.pause();
      return buf;
    },
  };
}

async function listen(server: { listen(port: number, host: string, cb: () => void): unknown; once(ev: 'error', cb: (e: Error) => void): unknown; off(ev: 'error', cb: (e: Error) => void): unknown; address(): AddressInfo | string | null }): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

const SOCKS_REPLY: Record<string, number> = {
  'not-allowed': 0x02,
  unreachable: 0x04,
  refused: 0x05,
  command: 0x07,
  'address-type': 0x08,
};

function socksReply(code: number, target?: Socket): Buffer {
  const addr = target?.localAddress ?? '0.0.0.0';
  const port = target?.localPort ?? 0;
  const portBuf = Buffer.from([port >> 8, port & 0xff]);
  if (isIP(addr) === 6) {
    const words = expandIPv6(addr);
    return Buffer.concat([Buffer.from([5, code, 0, 4]), words, portBuf]);
  }
  return Buffer.concat([Buffer.from([5, code, 0, 1, ...addr.split('.').map(Number)]), portBuf]);
}

function expandIPv6(addr: string): Buffer {
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(addr);
  let s = addr;
  if (v4) {
    const p = v4[1]!.split('.').map(Number);
    s = addr.slice(0, -v4[1]!.length) + `${((p[0]! << 8) | p[1]!).toString(16)}:${((p[2]! << 8) | p[3]!).toString(16)}`;
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g || '0', 16), i * 2));
  return out;
}

function ipv6ToString(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return groups.join(':');
}

export async function startSocksProxy(opts: ProxyOptions = {}): Promise<TestProxy> {
  const resolveMap = new Map(Object.entries(opts.resolve ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const tunnels: ProxyTunnel[] = [];
  const requests: ProxyRequest[] = [];
  const sockets = new Set<Socket>();

  const handle = async (client: Socket): Promise<void> => {
    client.setTimeout(HANDSHAKE_TIMEOUT_MS, () => client.destroy());
    const r = reader(client);
    const [ver, nmethods] = await r.read(2);
    if (ver !== 5) throw new TunnelError('version', `not SOCKS5 (version byte ${ver})`);
    const methods = [...(await r.read(nmethods!))];
    const method = opts.auth ? 0x02 : 0x00;
    if (!methods.includes(method)) {
      client.end(Buffer.from([5, 0xff]));
      return;
    }
    client.write(Buffer.from([5, method]));
    let username: string | undefined;
    if (opts.auth) {
      const [subver, ulen] = await r.read(2);
      const user = (await r.read(ulen!)).toString('utf8');
      const [plen] = await r.read(1);
      const pass = (await r.read(plen!)).toString('utf8');
      if (subver !== 1 || user !== opts.auth.username || pass !== opts.auth.password) {
        requests.push({ host: '', port: 0, username: user, ok: false, error: 'auth' });
        client.end(Buffer.from([1, 1]));
        return;
      }
      username = user;
      client.write(Buffer.from([1, 0]));
    }
    const [v, cmd, , atyp] = await r.read(4);
    if (v !== 5) throw new TunnelError('version', 'bad request version');
    let host: string;
    if (atyp === 1) host = [...(await r.read(4))].join('.');
    else if (atyp === 3) host = (await r.read((await r.read(1))[0]!)).toString('utf8');
    else if (atyp === 4) host = ipv6ToString(await r.read(16));
    else {
      requests.push({ host: '', port: 0, ok: false, error: 'address-type', ...(username !== undefined ? { username } : {}) });
      client.end(socksReply(0x08));
      return;
    }
    const portBytes = await r.read(2);
    const port = portBytes.readUInt16BE(0);
    const who = username !== undefined ? { username } : {};
    if (cmd !== 1) {
      requests.push({ host, port, ok: false, error: 'command', ...who });
      client.end(socksReply(0x07));
      return;
    }
    let target: Socket;
    try {
      target = await openTarget(host, port, resolveMap);
    } catch (e) {
      const kind = e instanceof TunnelError ? e.kind : 'unreachable';
      requests.push({ host, port, ok: false, error: kind, ...who });
      client.end(socksReply(SOCKS_REPLY[kind] ?? 0x01));
      return;
    }
    if (client.destroyed) {
      target.destroy();
      return;
    }
    track(sockets, target);
    requests.push({ host, port, ok: true, ...who });
    tunnels.push({ host, port, ...who });
    client.write(socksReply(0x00, target));
    const rest = r.detach();
    client.setTimeout(0);
    if (rest.length > 0) target.write(rest);
    splice(client, target);
    client.resume();
  };

  const server = createServer((client) => {
    track(sockets, client);
    client.on('error', () => undefined);
    handle(client).catch(() => client.destroy());
  });
  const port = await listen(server);
  return {
    url: `socks5://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    tunnels,
    requests,
    close: () => closeAll(server, sockets),
  };
}

function closeAll(server: { close(cb: () => void): unknown }, sockets: Set<Socket>): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    for (const s of sockets) s.destroy();
  });
}

function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(authority) ?? /^([^:[\]/\s]+):(\d{1,5})$/.exec(authority);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!, port };
}

export async function startHttpConnectProxy(opts: ProxyOptions = {}): Promise<TestProxy> {
  const resolveMap = new Map(Object.entries(opts.resolve ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const tunnels: ProxyTunnel[] = [];
  const requests: ProxyRequest[] = [];
  const sockets = new Set<Socket>();

  const server = createHttpServer((req, res) => {
    res.writeHead(405, { Allow: 'CONNECT', 'Content-Type': 'text/plain', Connection: 'close' });
    res.end(`this test proxy only supports CONNECT, not ${req.method}\n`);
  });
  server.on('connection', (s: Socket) => track(sockets, s));
  server.on('clientError', (_e, s) => s.destroy());

  const answer = (client: Socket, status: number, reason: string, headers: Record<string, string> = {}): void => {
    const lines = [`HTTP/1.1 ${status} ${reason}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), 'Connection: close', 'Content-Length: 0', '', ''];
    client.end(lines.join('\r\n'));
  };

  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    client.on('error', () => undefined);
    const target = parseAuthority(req.url ?? '');
    if (!target) {
      requests.push({ host: req.url ?? '', port: 0, ok: false, error: 'bad-request' });
      answer(client, 400, 'Bad Request');
      return;
    }
    const { host, port } = target;
    let who: { username?: string } = {};
    if (opts.auth) {
      const h = req.headers['proxy-authorization'] ?? '';
      const m = /^basic\s+(\S+)$/i.exec(h);
      const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
      const colon = decoded.indexOf(':');
      const user = colon >= 0 ? decoded.slice(0, colon) : '';
      const pass = colon >= 0 ? decoded.slice(colon + 1) : '';
      if (user !== opts.auth.username || pass !== opts.auth.password) {
        requests.push({ host, port, ok: false, error: 'auth', ...(user ? { username: user } : {}) });
        answer(client, 407, 'Proxy Authentication Required', { 'Proxy-Authenticate': 'Basic realm="test proxy"' });
        return;
      }
      who = { username: user };
    }
    openTarget(host, port, resolveMap).then(
      (up) => {
        if (client.destroyed) {
          up.destroy();
          return;
        }
        track(sockets, up);
        requests.push({ host, port, ok: true, ...who });
        tunnels.push({ host, port, ...who });
        client.write('HTTP/1.1 200 Connection established\r\n\r\n');
        if (head.length > 0) up.write(head);
        splice(client, up);
      },
      (e: unknown) => {
        const kind = e instanceof TunnelError ? e.kind : 'unreachable';
        requests.push({ host, port, ok: false, error: kind, ...who });
        if (kind === 'not-allowed') answer(client, 403, 'Forbidden');
        else answer(client, 502, 'Bad Gateway');
      },
    );
  });

  const port = await listen(server);
  return {
    url: `http://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    tunnels,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        for (const s of sockets) s.destroy();
      }),
  };
}
