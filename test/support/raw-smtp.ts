import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

/**
 * A hand-written SMTP client over a bare socket, for the tests swaks and smtplib can't serve:
 * bytes no well-behaved client sends (a line trickled in pieces, a command without its CRLF,
 * guessing, going silent), and the timing of replies (each line is stamped with performance.now()
 * as it arrives, so a test can measure a greeting delay or when a limit closed the connection).
 * Used by test/e2e/limits.test.ts and test/unit/smtp-server-adapter.test.ts.
 */

export interface RawSmtpOptions {
  /** How long reply() waits for a complete reply unless the call says otherwise. Default 5000 ms. */
  replyTimeoutMs?: number;
  /** The address to connect from, e.g. 127.0.0.2 for a second client address; unset lets the OS choose. */
  localAddress?: string;
  /** What end() does: 'end' sends FIN and lets the server finish; 'destroy' drops the socket at once. Default 'end'. */
  end?: 'end' | 'destroy';
}

export interface RawSmtpClient {
  /** performance.now() when the connection was established. */
  readonly connectedAt: number;
  /** The next complete reply ("250 ..." with continuation lines joined by "\n") and when its last line arrived. */
  reply(timeoutMs?: number): Promise<{ text: string; at: number }>;
  /** One command line; CRLF is added. */
  write(line: string): void;
  /** Bytes as they are, no CRLF added. */
  writeRaw(bytes: string): void;
  /** performance.now() when the server closed the connection. */
  readonly closed: Promise<number>;
  end(): void;
}

/** Connects to 127.0.0.1:port; resolves once connected (the greeting is the first reply()). */
export function rawSmtp(port: number, options: RawSmtpOptions = {}): Promise<RawSmtpClient> {
  const { replyTimeoutMs = 5_000, localAddress, end = 'end' } = options;
  return new Promise((resolve, reject) => {
    const socket: Socket = connect({ port, host: '127.0.0.1', localAddress });
    let buffer = '';
    const lines: { line: string; at: number }[] = [];
    let wake: (() => void) | undefined;
    const closed = new Promise<number>((res) => socket.once('close', () => res(performance.now())));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let i: number;
      while ((i = buffer.indexOf('\r\n')) >= 0) {
        lines.push({ line: buffer.slice(0, i), at: performance.now() });
        buffer = buffer.slice(i + 2);
      }
      wake?.();
    });
    // an error after the connection (a reset once the server has closed) is not the test's concern
    socket.on('error', () => {});
    socket.once('error', reject);
    socket.once('connect', () => {
      const connectedAt = performance.now();
      resolve({
        connectedAt,
        reply: (timeoutMs = replyTimeoutMs) =>
          new Promise((res, rej) => {
            const timer = setTimeout(() => rej(new Error(`no reply within ${timeoutMs} ms; got ${JSON.stringify(lines)}`)), timeoutMs);
            const check = () => {
              const last = lines.findIndex((l) => /^\d{3} /.test(l.line));
              if (last < 0) return;
              const taken = lines.splice(0, last + 1);
              wake = undefined;
              clearTimeout(timer);
              res({ text: taken.map((l) => l.line).join('\n'), at: taken.at(-1)!.at });
            };
            wake = check;
            check();
          }),
        write: (line) => socket.write(`${line}\r\n`),
        writeRaw: (bytes) => socket.write(bytes),
        closed,
        end: end === 'destroy' ? () => socket.destroy() : () => socket.end(),
      });
    });
  });
}
