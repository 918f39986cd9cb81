/**
 * A small SMTP client for the harness: concurrent sessions that time every step of every
 * message (smtp-source can't report per-message latency), and idle connections.
 *
 * Messages look like smtp-source's: From/To/Date/Message-Id headers and `size` bytes of
 * 80-character lines, so both load generators exercise the relays the same way.
 */
import { connect, type Socket } from 'node:net';

export interface SmtpReply {
  code: number;
  text: string;
}

/** One connection with a reply reader that understands multi-line replies. */
class Conn {
  private buffer = '';
  private lines: string[] = [];
  private pending: { resolve: (r: SmtpReply) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  private constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed by the server')));
  }

  static open(port: number, timeoutMs: number): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to 127.0.0.1:${port} timed out`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new Conn(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  private onData(d: Buffer): void {
    this.buffer += d.toString('latin1');
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, '');
      this.buffer = this.buffer.slice(nl + 1);
      this.lines.push(line);
      if (/^\d{3}(?: |$)/.test(line)) {
        const text = this.lines.join('\n');
        this.lines = [];
        const p = this.pending;
        this.pending = undefined;
        p?.resolve({ code: Number(line.slice(0, 3)), text });
      }
    }
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const p = this.pending;
    this.pending = undefined;
    p?.reject(err);
  }

  /** Resolves with the next complete reply. */
  reply(timeoutMs: number): Promise<SmtpReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = undefined;
        reject(new Error(`no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending = {
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
    });
  }

  async command(line: string | Buffer, expect: number, timeoutMs: number): Promise<SmtpReply> {
    const reply = this.reply(timeoutMs);
    this.socket.write(line);
    const r = await reply;
    if (r.code !== expect) throw new Error(`${String(line).slice(0, 40).trim()} → ${r.text}`);
    return r;
  }

  close(): void {
    this.socket.removeAllListeners('close');
    this.socket.on('error', () => undefined);
    this.socket.destroy();
  }
}

/** The message smtp-source would send: headers + about `size` bytes of 80-character lines. */
export function buildMessage(from: string, to: string, size: number, seq = 0): Buffer {
  const header =
    `From: <${from}>\r\nTo: <${to}>\r\nSubject: sendas bench\r\nDate: ${new Date().toUTCString()}\r\n` +
    `Message-Id: <${process.pid}.${seq}.${Date.now()}@bench.example>\r\n\r\n`;
  const line = Buffer.from('X'.repeat(78) + '\r\n', 'latin1');
  const lines = Math.max(1, Math.ceil(size / line.length));
  const body = Buffer.alloc(lines * line.length);
  for (let i = 0; i < lines; i++) line.copy(body, i * line.length);
  return Buffer.concat([Buffer.from(header, 'latin1'), body, Buffer.from('.\r\n', 'latin1')]);
}

export interface SendOptions {
  port: number;
  from: string;
  to: string;
  /** payload bytes per message (like smtp-source -l) */
  size: number;
  count: number;
  sessions: number;
  /** true: several messages per connection (smtp-source -d); false: one connection per message (smtp-source's default) */
  reuse?: boolean;
  timeoutMs?: number;
}

export interface SendResult {
  startedAt: number;
  firstAcceptAt: number | undefined;
  lastAcceptAt: number | undefined;
  accepted: number;
  failures: string[];
  /** per message, in ms: connect → 220 greeting (only for messages that opened a connection) */
  greetingMs: number[];
  /** per message, in ms: MAIL FROM sent → 250 after the end of DATA */
  transactionMs: number[];
  /** per message, in ms: end of DATA (".") sent → 250 */
  acceptMs: number[];
}

/**
 * Sends `count` messages over `sessions` concurrent sessions, timing each. A failed message is
 * recorded (first 20 reasons kept) and its session reconnects.
 */
export async function sendMessages(opts: SendOptions): Promise<SendResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const message = buildMessage(opts.from, opts.to, opts.size);
  const result: SendResult = {
    startedAt: performance.now(),
    firstAcceptAt: undefined,
    lastAcceptAt: undefined,
    accepted: 0,
    failures: [],
    greetingMs: [],
    transactionMs: [],
    acceptMs: [],
  };
  let claimed = 0;
  let failed = 0;

  const session = async (): Promise<void> => {
    let conn: Conn | undefined;
    while (claimed < opts.count) {
      claimed++;
      try {
        if (!conn) {
          const t0 = performance.now();
          conn = await Conn.open(opts.port, timeoutMs);
          const greeting = await conn.reply(timeoutMs);
          if (greeting.code !== 220) throw new Error(`greeting: ${greeting.text}`);
          result.greetingMs.push(performance.now() - t0);
          await conn.command('EHLO bench.example\r\n', 250, timeoutMs);
        }
        const tMail = performance.now();
        await conn.command(`MAIL FROM:<${opts.from}>\r\n`, 250, timeoutMs);
        await conn.command(`RCPT TO:<${opts.to}>\r\n`, 250, timeoutMs);
        await conn.command('DATA\r\n', 354, timeoutMs);
        const tDot = performance.now();
        await conn.command(message, 250, timeoutMs);
        const now = performance.now();
        result.accepted++;
        result.firstAcceptAt ??= now;
        result.lastAcceptAt = now;
        result.transactionMs.push(now - tMail);
        result.acceptMs.push(now - tDot);
        if (!opts.reuse) {
          conn.socket.end('QUIT\r\n');
          conn = undefined;
        }
      } catch (err) {
        failed++;
        if (result.failures.length < 20) result.failures.push((err as Error).message);
        conn?.close();
        conn = undefined;
        // a relay that refuses everything must not turn into a busy loop
        if (failed > Math.max(20, opts.count / 10)) throw new Error(`too many failures: ${result.failures.slice(0, 3).join('; ')}`);
      }
    }
    if (conn) {
      conn.socket.end('QUIT\r\n');
    }
  };

  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.sessions, opts.count)) }, () => session()));
  return result;
}

export interface IdleConnections {
  /** connections that got the greeting and the EHLO reply */
  greeted: number;
  opened: number;
  /** ms from the first connect until the last greeting */
  greetAllMs: number;
  close(): void;
}

/**
 * Opens `count` connections that each wait for the greeting, say EHLO and then stay idle.
 * Resolves once all are greeted, or when no further one was greeted for `settleMs` (a relay may
 * serve only some at a time, e.g. Postfix's smtpd process limit of 100).
 */
export async function openIdleConnections(port: number, count: number, settleMs = 3_000, maxMs = 60_000): Promise<IdleConnections> {
  const sockets: Socket[] = [];
  let greeted = 0;
  let lastProgress = performance.now();
  const started = performance.now();
  let lastGreetAt = started;
  const open = (): void => {
    const socket = connect(port, '127.0.0.1');
    sockets.push(socket);
    let buffer = '';
    let stage: 'greeting' | 'ehlo' | 'idle' = 'greeting';
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      buffer += d.toString('latin1');
      if (!buffer.endsWith('\n')) return;
      const lines = buffer.split(/\r?\n/).filter(Boolean);
      if (!/^\d{3}(?: |$)/.test(lines[lines.length - 1] ?? '')) return;
      buffer = '';
      if (stage === 'greeting') {
        stage = 'ehlo';
        socket.write('EHLO idle.bench.example\r\n');
      } else if (stage === 'ehlo') {
        stage = 'idle';
        greeted++;
        lastProgress = performance.now();
        lastGreetAt = lastProgress;
      }
    });
  };
  // open in waves so the listen backlog is never the limit
  for (let i = 0; i < count; i++) {
    open();
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 20));
  }
  lastProgress = performance.now();
  while (greeted < count && performance.now() - lastProgress < settleMs && performance.now() - started < maxMs) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    greeted,
    opened: sockets.length,
    greetAllMs: lastGreetAt - started,
    close: () => {
      for (const s of sockets) s.destroy();
    },
  };
}
