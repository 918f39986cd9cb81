import net from 'node:net';
import type { AddressInfo } from 'node:net';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { startHttpConnectProxy, startSocksProxy, type TestProxy } from './proxies.js';
import { freePort, startTestUpstream } from './upstream.js';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(closers.splice(0).map((c) => c()));
});
function keep<T extends { close(): Promise<void> }>(x: T): T {
  closers.push(() => x.close());
  return x;
}

async function echoServer(): Promise<{ port: number; connections: number }> {
  const sockets = new Set<net.Socket>();
  const info = { port: 0, connections: 0 };
  const server = net.createServer((s) => {
    info.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  info.port = (server.address() as AddressInfo).port;
  closers.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return info;
}

/** A socket with exact-length reads, for speaking the proxy protocols by hand. */
async function open(proxy: TestProxy) {
  const sock = net.connect(proxy.port, proxy.host);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.on('error', () => undefined);
  let buf = Buffer.alloc(0);
  let closed = false;
  const waiters: (() => void)[] = [];
  const wake = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    wake();
  });
  sock.on('close', () => {
    closed = true;
    wake();
  });
  const until = async (ready: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 5_000;
    while (!ready()) {
      if (closed) throw new Error(`connection closed while waiting for ${what} (have ${JSON.stringify(buf.toString('latin1'))})`);
      if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 5_000);
        waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  };
  return {
    sock,
    write(b: Buffer | string) {
      sock.write(b);
    },
    async read(n: number): Promise<Buffer> {
      await until(() => buf.length >= n, `${n} bytes`);
      const out = buf.subarray(0, n);
      buf = buf.subarray(n);
      return out;
    },
    async readHead(): Promise<string> {
      await until(() => buf.includes('\r\n\r\n'), 'an HTTP response head');
      const i = buf.indexOf('\r\n\r\n') + 4;
      const out = buf.subarray(0, i).toString('latin1');
      buf = buf.subarray(i);
      return out;
    },
    async closedByPeer(): Promise<void> {
      await until(() => closed, 'the close');
    },
  };
}

function socksRequest(cmd: number, host: string, port: number): Buffer {
  const p = Buffer.from([port >> 8, port & 0xff]);
  if (net.isIPv4(host)) return Buffer.concat([Buffer.from([5, cmd, 0, 1, ...host.split('.').map(Number)]), p]);
  const name = Buffer.from(host);
  return Buffer.concat([Buffer.from([5, cmd, 0, 3, name.length]), name, p]);
}

/** reads a SOCKS5 reply (IPv4 or IPv6 bound address) and returns its code */
async function socksReply(c: Awaited<ReturnType<typeof open>>): Promise<number> {
  const [ver, code, , atyp] = await c.read(4);
  expect(ver).toBe(5);
  await c.read(atyp === 4 ? 18 : 6);
  return code!;
}

async function echoes(c: Awaited<ReturnType<typeof open>>, text: string): Promise<void> {
  c.write(text);
  expect((await c.read(Buffer.byteLength(text))).toString()).toBe(text);
}

describe('startSocksProxy', () => {
  it('no-auth CONNECT to an IPv4 address: tunnel works both ways and is recorded', async () => {
    const echo = await echoServer();
    const proxy = keep(await startSocksProxy());
    expect(proxy.url).toBe(`socks5://127.0.0.1:${proxy.port}`);
    const c = await open(proxy);
    c.write(Buffer.from([5, 1, 0]));
    expect([...(await c.read(2))]).toEqual([5, 0]);
    c.write(socksRequest(1, '127.0.0.1', echo.port));
    expect(await socksReply(c)).toBe(0);
    await echoes(c, 'hello through socks\r\n');
    await echoes(c, 'x'.repeat(200_000));
    expect(proxy.tunnels).toEqual([{ host: '127.0.0.1', port: echo.port }]);
    expect(proxy.requests).toEqual([{ host: '127.0.0.1', port: echo.port, ok: true }]);
    c.sock.destroy();
  });

  it('domain address type: the proxy resolves the name (resolve map, built-in localhost); greeting, request and data in one write', async () => {
    const echo = await echoServer();
    const proxy = keep(await startSocksProxy({ resolve: { 'Echo.Remote.Test': '127.0.0.1' } }));
    const c = await open(proxy);
    c.write(Buffer.concat([Buffer.from([5, 1, 0]), socksRequest(1, 'echo.remote.test', echo.port), Buffer.from('early data')]));
    expect([...(await c.read(2))]).toEqual([5, 0]);
    expect(await socksReply(c)).toBe(0);
    expect((await c.read(10)).toString()).toBe('early data');

    const d = await open(proxy);
    d.write(Buffer.from([5, 1, 0]));
    await d.read(2);
    d.write(socksRequest(1, 'localhost', echo.port));
    expect(await socksReply(d)).toBe(0);
    await echoes(d, 'via localhost');
    expect(proxy.tunnels).toEqual([
      { host: 'echo.remote.test', port: echo.port },
      { host: 'localhost', port: echo.port },
    ]);
    c.sock.destroy();
    d.sock.destroy();
  });

  it('failures: refused target (05), non-loopback target (02), unknown name (04), BIND (07), no acceptable method (FF)', async () => {
    const proxy = keep(await startSocksProxy());
    const closedPort = await freePort();
    const attempt = async (cmd: number, host: string, port: number): Promise<number> => {
      const c = await open(proxy);
      c.write(Buffer.from([5, 1, 0]));
      await c.read(2);
      c.write(socksRequest(cmd, host, port));
      const code = await socksReply(c);
      await c.closedByPeer();
      return code;
    };
    expect(await attempt(1, '127.0.0.1', closedPort)).toBe(0x05);
    expect(await attempt(1, '192.0.2.1', 25)).toBe(0x02);
    expect(await attempt(1, 'no-such-host.invalid', 25)).toBe(0x04);
    expect(await attempt(2, '127.0.0.1', 25)).toBe(0x07);
    expect(proxy.requests.map((r) => r.error)).toEqual(['refused', 'not-allowed', 'unreachable', 'command']);
    expect(proxy.tunnels).toEqual([]);

    const c = await open(proxy);
    c.write(Buffer.from([5, 1, 2])); // offers username/password only
    expect([...(await c.read(2))]).toEqual([5, 0xff]);
    await c.closedByPeer();
  });

  it('with auth: only username/password (RFC 1929); right credentials tunnel, wrong ones get 01 01', async () => {
    const echo = await echoServer();
    const proxy = keep(await startSocksProxy({ auth: { username: 'relay', password: 'pw' } }));
    const login = async (user: string, pass: string) => {
      const c = await open(proxy);
      c.write(Buffer.from([5, 2, 0, 2]));
      expect([...(await c.read(2))]).toEqual([5, 2]);
      c.write(Buffer.concat([Buffer.from([1, user.length]), Buffer.from(user), Buffer.from([pass.length]), Buffer.from(pass)]));
      return { c, status: [...(await c.read(2))] };
    };
    const bad = await login('relay', 'nope');
    expect(bad.status).toEqual([1, 1]);
    await bad.c.closedByPeer();

    const good = await login('relay', 'pw');
    expect(good.status).toEqual([1, 0]);
    good.c.write(socksRequest(1, '127.0.0.1', echo.port));
    expect(await socksReply(good.c)).toBe(0);
    await echoes(good.c, 'authenticated');
    expect(proxy.tunnels).toEqual([{ host: '127.0.0.1', port: echo.port, username: 'relay' }]);
    expect(proxy.requests[0]).toMatchObject({ ok: false, error: 'auth', username: 'relay' });
    good.c.sock.destroy();
  });

  it('close() ends open tunnels', async () => {
    const echo = await echoServer();
    const proxy = await startSocksProxy();
    const c = await open(proxy);
    c.write(Buffer.concat([Buffer.from([5, 1, 0]), socksRequest(1, '127.0.0.1', echo.port)]));
    await c.read(2);
    expect(await socksReply(c)).toBe(0);
    await proxy.close();
    await c.closedByPeer();
  });
});

describe('startHttpConnectProxy', () => {
  it('CONNECT host:port -> 200, tunnel works (incl. bytes sent right after the request head), recorded', async () => {
    const echo = await echoServer();
    const proxy = keep(await startHttpConnectProxy());
    expect(proxy.url).toBe(`http://127.0.0.1:${proxy.port}`);
    const c = await open(proxy);
    c.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nHost: 127.0.0.1:${echo.port}\r\n\r\nfirst bytes`);
    expect(await c.readHead()).toMatch(/^HTTP\/1\.1 200 /);
    expect((await c.read(11)).toString()).toBe('first bytes');
    await echoes(c, 'and more');
    expect(proxy.tunnels).toEqual([{ host: '127.0.0.1', port: echo.port }]);
    c.sock.destroy();
  });

  it('names are resolved by the proxy; IPv6 literal authority is parsed', async () => {
    const echo = await echoServer();
    const proxy = keep(await startHttpConnectProxy({ resolve: { 'smtp.office365.test': '127.0.0.1' } }));
    const c = await open(proxy);
    c.write(`CONNECT smtp.office365.test:${echo.port} HTTP/1.1\r\nHost: smtp.office365.test:${echo.port}\r\n\r\n`);
    expect(await c.readHead()).toMatch(/^HTTP\/1\.1 200 /);
    await echoes(c, 'named');
    const d = await open(proxy);
    d.write(`CONNECT [::1]:${await freePort('::1').catch(() => 1)} HTTP/1.1\r\n\r\n`);
    expect(await d.readHead()).toMatch(/^HTTP\/1\.1 502 /); // parsed, nobody listening there
    expect(proxy.requests.map((r) => [r.host, r.ok])).toEqual([
      ['smtp.office365.test', true],
      ['::1', false],
    ]);
    c.sock.destroy();
  });

  it('refusals: 502 unreachable target, 403 non-loopback target, 400 bad authority, 405 other methods, 407 without proxy credentials', async () => {
    const closedPort = await freePort();
    const proxy = keep(await startHttpConnectProxy());
    const head = async (p: TestProxy, req: string): Promise<string> => {
      const c = await open(p);
      c.write(req);
      const h = await c.readHead();
      c.sock.destroy();
      return h;
    };
    expect(await head(proxy, `CONNECT 127.0.0.1:${closedPort} HTTP/1.1\r\n\r\n`)).toMatch(/^HTTP\/1\.1 502 /);
    expect(await head(proxy, `CONNECT 192.0.2.1:25 HTTP/1.1\r\n\r\n`)).toMatch(/^HTTP\/1\.1 403 /);
    expect(await head(proxy, `CONNECT nonsense HTTP/1.1\r\n\r\n`)).toMatch(/^HTTP\/1\.1 400 /);
    expect((await fetch(`${proxy.url}/x`)).status).toBe(405);
    expect(proxy.requests.map((r) => r.error)).toEqual(['refused', 'not-allowed', 'bad-request']);

    const authed = keep(await startHttpConnectProxy({ auth: { username: 'relay', password: 'p:w' } }));
    const echo = await echoServer();
    const noCreds = await head(authed, `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\n\r\n`);
    expect(noCreds).toMatch(/^HTTP\/1\.1 407 /);
    expect(noCreds).toMatch(/Proxy-Authenticate: Basic/);
    const cred = Buffer.from('relay:p:w').toString('base64');
    const ok = await head(authed, `CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nProxy-Authorization: Basic ${cred}\r\n\r\n`);
    expect(ok).toMatch(/^HTTP\/1\.1 200 /);
    expect(authed.tunnels).toEqual([{ host: '127.0.0.1', port: echo.port, username: 'relay' }]);
  });

  it('nodemailer sends through it (proxy option) to the test upstream', async () => {
    const up = keep(await startTestUpstream());
    const proxy = keep(await startHttpConnectProxy());
    const t = nodemailer.createTransport({ host: up.host, port: up.port, ignoreTLS: true, proxy: proxy.url, connectionTimeout: 5_000 });
    await t.sendMail({ envelope: { from: 'a@a.example', to: 'b@b.example' }, raw: 'Subject: via proxy\r\n\r\nhi\r\n' });
    expect((await up.nextMessage()).raw.toString()).toContain('Subject: via proxy');
    expect(proxy.tunnels).toEqual([{ host: up.host, port: up.port }]);
    t.close();
  });
});
