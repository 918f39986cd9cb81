/**
 * The upstream both relays deliver to: Postfix's smtp-sink (the real benchmark), or a tiny Node
 * SMTP sink (the smoke test, which must not need Postfix's tools). Either way the harness knows,
 * to the millisecond, when the n-th message arrived.
 */
import { mkdirSync, chmodSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { freePort, spawnTracked, stopChild, waitForGreeting } from './proc.js';
import type { ChildProcess } from 'node:child_process';

/** What the sink saw of one message: enough to check the relay's rewrite. */
export interface CapturedMessage {
  mailFrom: string;
  rcptTo: string[];
  /** the header section, as received */
  headers: string;
  size: number;
}

export interface Sink {
  readonly kind: 'smtp-sink' | 'node';
  readonly port: number;
  /** messages received so far (end of DATA seen) */
  count(): number;
  /** Resolves with the time (performance.now()) at which the n-th message had arrived. */
  waitFor(n: number, timeoutMs: number): Promise<number>;
  /** Messages captured for checks (smtp-sink: only when started with `capture`). */
  captured(): CapturedMessage[];
  /** pids of the sink's own processes (to leave them out of CPU accounting) */
  pids(): number[];
  stop(): Promise<void>;
}

interface Waiter {
  n: number;
  resolve: (at: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Shared bookkeeping: a count, the time it last grew, and waiters for a count. */
class Counter {
  value = 0;
  lastAt = 0;
  private waiters: Waiter[] = [];

  set(value: number, at: number): void {
    if (value <= this.value) return;
    this.value = value;
    this.lastAt = at;
    for (const w of [...this.waiters]) {
      if (value >= w.n) {
        clearTimeout(w.timer);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(at);
      }
    }
  }

  waitFor(n: number, timeoutMs: number, what: string): Promise<number> {
    if (this.value >= n) return Promise.resolve(this.lastAt);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`${what}: ${this.value} of ${n} messages arrived within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: Waiter = { n, resolve, reject, timer };
      this.waiters.push(waiter);
    });
  }

  failAll(err: Error): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiters = [];
  }
}

/**
 * smtp-sink -c: prints "sess=N quit=N mesg=N" followed by \r whenever "." is received; the last
 * mesg= on each read is the count. With `captureDir`, every message is also dumped there (only
 * for the correctness check: dumping costs disk time).
 */
export async function startSmtpSink(opts: { captureDir?: string } = {}): Promise<Sink> {
  const port = await freePort();
  const args = ['-c'];
  // smtp-sink refuses to run as root without -u
  if (process.getuid?.() === 0) args.push('-u', 'nobody');
  if (opts.captureDir) {
    mkdirSync(opts.captureDir, { recursive: true });
    chmodSync(opts.captureDir, 0o777);
    args.push('-d', join(opts.captureDir, '%M.'));
  }
  args.push(`127.0.0.1:${port}`, '1000');
  const child: ChildProcess = spawnTracked('smtp-sink', args);
  const counter = new Counter();
  let stderr = '';
  let tail = '';
  child.stdout!.on('data', (d: Buffer) => {
    const at = performance.now();
    tail = (tail + d.toString('latin1')).slice(-200);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    const last = all[all.length - 1];
    if (last) counter.set(Number(last[1]), at);
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.once('exit', (code) => counter.failAll(new Error(`smtp-sink exited with ${code}: ${stderr.trim()}`)));
  try {
    await waitForGreeting(port, 5_000);
  } catch (err) {
    await stopChild(child);
    throw new Error(`smtp-sink did not start: ${(err as Error).message}; ${stderr.trim()}`);
  }
  return {
    kind: 'smtp-sink',
    port,
    count: () => counter.value,
    waitFor: (n, timeoutMs) => counter.waitFor(n, timeoutMs, 'smtp-sink'),
    captured: () => (opts.captureDir ? readSmtpSinkDumps(opts.captureDir) : []),
    pids: () => (child.pid ? [child.pid] : []),
    stop: () => stopChild(child, 2_000),
  };
}

/** Parses smtp-sink's dump files (X-Mail-Args / X-Rcpt-Args lines, then the message). */
function readSmtpSinkDumps(dir: string): CapturedMessage[] {
  const out: CapturedMessage[] = [];
  const walk = (d: string): string[] =>
    readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]));
  for (const file of walk(dir)) {
    const text = readFileSync(file, 'latin1');
    const headerEnd = text.indexOf('\n\n');
    const headers = headerEnd >= 0 ? text.slice(0, headerEnd) : text;
    const mailFrom = /^X-Mail-Args: <([^>]*)>/m.exec(headers)?.[1] ?? '';
    const rcptTo = [...headers.matchAll(/^X-Rcpt-Args: <([^>]*)>/gm)].map((m) => m[1]!);
    out.push({ mailFrom, rcptTo, headers, size: text.length });
  }
  return out;
}

/**
 * A minimal SMTP sink in Node (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; PIPELINING-safe).
 * It accepts everything, counts messages and keeps the envelope and header section of the first
 * `keep` messages.
 */
export async function startNodeSink(opts: { keep?: number } = {}): Promise<Sink> {
  const keep = opts.keep ?? 20;
  const counter = new Counter();
  const captured: CapturedMessage[] = [];
  const sockets = new Set<Socket>();
  let received = 0;

  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let inData = false;
    let line = '';
    let mailFrom = '';
    let rcptTo: string[] = [];
    let headerParts: Buffer[] = [];
    let headerBytes = 0;
    let headersDone = false;
    let size = 0;
    // the last bytes seen in DATA, to find CRLF.CRLF across chunk boundaries
    let tail = Buffer.alloc(0);
    socket.write('220 node-sink ESMTP\r\n');

    const command = (cmd: string): void => {
      const verb = cmd.slice(0, 4).toUpperCase();
      if (verb === 'EHLO') socket.write('250-node-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1073741824\r\n');
      else if (verb === 'HELO') socket.write('250 node-sink\r\n');
      else if (verb === 'MAIL') {
        mailFrom = /<([^>]*)>/.exec(cmd)?.[1] ?? '';
        rcptTo = [];
        socket.write('250 2.1.0 Ok\r\n');
      } else if (verb === 'RCPT') {
        rcptTo.push(/<([^>]*)>/.exec(cmd)?.[1] ?? '');
        socket.write('250 2.1.5 Ok\r\n');
      } else if (verb === 'DATA') {
        inData = true;
        headerParts = [];
        headerBytes = 0;
        headersDone = false;
        size = 0;
        tail = Buffer.alloc(0);
        socket.write('354 End data with <CR><LF>.<CR><LF>\r\n');
      } else if (verb === 'QUIT') {
        socket.end('221 2.0.0 Bye\r\n');
      } else socket.write('250 2.0.0 Ok\r\n');
    };

    const onDataBytes = (chunk: Buffer): number => {
      // returns how many bytes of chunk belong to DATA (incl. the terminator), or -1 if all do and the end is not in it
      const joined = Buffer.concat([tail, chunk]);
      const idx = joined.indexOf('\r\n.\r\n');
      const end = idx >= 0 ? idx + 5 - tail.length : -1;
      const part = end >= 0 ? chunk.subarray(0, end) : chunk;
      size += part.length;
      if (!headersDone && received + 1 <= keep) {
        headerParts.push(part);
        headerBytes += part.length;
        if (headerBytes > 65536 || Buffer.concat(headerParts).includes('\r\n\r\n')) headersDone = true;
      }
      tail = joined.subarray(Math.max(0, joined.length - 4));
      return end;
    };

    socket.on('data', (chunk: Buffer) => {
      let rest = chunk;
      while (rest.length > 0) {
        if (inData) {
          const end = onDataBytes(rest);
          if (end < 0) return;
          inData = false;
          received++;
          if (captured.length < keep) {
            const all = Buffer.concat(headerParts).toString('latin1');
            const cut = all.indexOf('\r\n\r\n');
            captured.push({ mailFrom, rcptTo, headers: (cut >= 0 ? all.slice(0, cut) : all).replace(/\r\n/g, '\n'), size });
          }
          socket.write('250 2.0.0 Ok: queued\r\n');
          counter.set(received, performance.now());
          rest = rest.subarray(end);
          continue;
        }
        const nl = rest.indexOf('\n');
        if (nl < 0) {
          line += rest.toString('latin1');
          return;
        }
        line += rest.subarray(0, nl).toString('latin1');
        rest = rest.subarray(nl + 1);
        const cmd = line.replace(/\r$/, '');
        line = '';
        command(cmd);
      }
    });
  });
  server.maxConnections = 10_000;
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : 0);
    });
  });
  return {
    kind: 'node',
    port,
    count: () => counter.value,
    waitFor: (n, timeoutMs) => counter.waitFor(n, timeoutMs, 'node sink'),
    captured: () => captured,
    pids: () => [],
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
