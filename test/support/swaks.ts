/**
 * Runs the real `swaks` CLI (Debian package `swaks`; TLS needs `libnet-ssleay-perl`) as an SMTP
 * client for e2e tests, and parses its transcript.
 *
 * swaks quirks this wrapper deals with (swaks 20201014):
 *
 * - Message bytes. By default swaks "fixes up" --data: it re-parses and rebuilds the header
 *   block, replaces the two characters `\n` (backslash, n) and `%NEWLINE%` by CRLF, expands
 *   tokens (%DATE%, %FROM_ADDRESS%, %TO_ADDRESS%, %MESSAGEID%, %SWAKS_VERSION%, %BODY%), strips
 *   a leading "From " line, drops a trailing "\n.\n", turns every bare LF into CRLF (a bare CR
 *   is left alone), dot-stuffs lines after a LF and appends the final "\r\n.". None of that is
 *   byte-exact, so when `data` is given this wrapper passes `--no-data-fixup` and prepares the
 *   wire form itself: bare LF -> CRLF (unless `normalizeLineEndings: false`; bare CR is kept),
 *   dot-stuffing, a CRLF appended if the message does not end with CRLF (SMTP cannot carry a
 *   message without a final line break; with `normalizeLineEndings: false` a message ending in a
 *   bare LF thus arrives with an extra CRLF), then ".". swaks sends the file contents followed by
 *   CRLF. So a message that already uses CRLF everywhere and ends with CRLF arrives upstream
 *   (after the server's dot-unstuffing) byte for byte. With `--data @file` swaks reads the file
 *   raw (no encoding layer), so 8-bit/UTF-8 bytes pass unchanged. `headers` are then applied
 *   by this wrapper (replace the first header of that name, else append at the end of the
 *   header block), not by swaks.
 * - A --data value without any LF is taken by swaks as a *file name* (deprecated heuristic), so
 *   an empty message is sent as a single empty line.
 * - swaks prompts on stdin for any option given with an empty value (e.g. `--port ''`,
 *   `--auth-password ''`, `--from ''`) and loops forever printing the prompt when stdin is at
 *   EOF. So options are validated here, passed as `--opt=value` (a value starting with '-'
 *   would otherwise be taken for an option), the null sender is passed as `<>`, and the
 *   transcript size is capped.
 * - Transcript hints: server lines "<-  " (ok), "<** " (unexpected reply = error); under TLS
 *   "<~  " and "<~* ". Client lines " -> ", "**> ", under TLS " ~> ", "*~> ". "=== " info,
 *   "*** " swaks errors (stderr). STDOUT is unbuffered ($| = 1), so running it with 2>&1 keeps
 *   the order. The DATA body is printed line by line after the 354 (or "N lines sent" with
 *   --suppress-data), then the reply to the end of DATA.
 * - Exit codes: 0 ok (even if some recipients were refused), 21 greeting, 22 EHLO, 23 MAIL,
 *   24 every RCPT refused, 25 DATA, 26 end of DATA, 27 QUIT, 28 AUTH, 29 TLS.
 * - `--timeout` is per server reply; the wrapper also kills swaks after `timeoutMs`.
 * - `--server ::1` needs IO::Socket::INET6, which the Debian package does not pull in.
 * - Config: ~/.swaksrc and SWAKS_OPT_* environment variables would change behaviour; the
 *   wrapper passes `--config` without a file (= no config file) and drops SWAKS_* variables.
 */
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';

export interface SwaksOptions {
  server: string;
  port: number;
  /** envelope sender; '' or '<>' for the null sender; default: swaks's user@hostname */
  from?: string;
  to: string | string[];
  /** type defaults to PLAIN */
  auth?: { user: string; password: string; type?: 'PLAIN' | 'LOGIN' };
  /** full message; written to a temp file and passed with --data @file --no-data-fixup (see top of file). Without it swaks sends its default test message. */
  data?: string | Buffer;
  /** instead of `data`: path of a file holding the full message (streamed, for very large messages; same encoding as `data`; `headers` not supported with it) */
  dataFile?: string;
  /** with `data`: bare LF -> CRLF before sending (default true). false sends the bytes as they are (still dot-stuffed and terminated). */
  normalizeLineEndings?: boolean;
  /** headers to set: replace an existing header of that name or add one */
  headers?: Record<string, string>;
  ehlo?: string;
  pipeline?: boolean;
  /** 'starttls': --tls (STARTTLS required); 'tls': --tls-on-connect */
  tls?: 'starttls' | 'tls';
  /** verify the server certificate against this CA file (--tls-verify --tls-ca-path) */
  tlsCaPath?: string;
  /** summarize the DATA lines in the transcript ("N lines sent"); default: only when the message exceeds 256 KiB */
  suppressData?: boolean;
  /** overall limit; swaks is killed after it (default 15 s) */
  timeoutMs?: number;
  /** swaks --timeout: how long swaks waits for each server reply before it reports a timeout itself (default 2/3 of timeoutMs, at least 1 s) */
  replyTimeoutSec?: number;
  extraArgs?: string[];
}

export interface SwaksReply {
  /** the client line that this reply answers: e.g. "EHLO x", "MAIL FROM:<a@b>", "DATA", "." for the end of the message body, "(greeting)" for the banner */
  command: string;
  code: number;
  /** reply text without the code, lines joined by "\n" (e.g. "5.1.1 No such user") */
  text: string;
  /** true when swaks marked the reply as unexpected ("<** " / "<~* ") */
  error: boolean;
}

export interface SwaksResult {
  /** swaks's exit code; 124 when the wrapper killed it at timeoutMs */
  exitCode: number;
  timedOut: boolean;
  /** full stdout+stderr, in order */
  transcript: string;
  /** SMTP code of the reply to the end of DATA, or of the first failing (4xx/5xx) reply; null if neither */
  finalCode: number | null;
  /** that reply's lines as received, e.g. "550 5.7.1 ..." (multi-line replies joined by "\n"); '' if none */
  finalReply: string;
  replies: SwaksReply[];
}

const DEFAULT_TIMEOUT_MS = 15_000;
const MAX_TRANSCRIPT_BYTES = 64 * 1024 * 1024;
const AUTO_SUPPRESS_BYTES = 256 * 1024;

/** swaks rewrites --opt=value into --opt value, so a value starting with '-' would be read as an option. */
function requireNonEmpty(name: string, value: string): string {
  if (value.length === 0 || /[\r\n]/.test(value)) throw new Error(`swaks(): ${name} must be a non-empty single line`);
  if (value.startsWith('-')) throw new Error(`swaks(): ${name} cannot start with '-' (swaks would take it for an option)`);
  return value;
}

/**
 * Streaming encoder of a message into the --data file used with --no-data-fixup: bare LF ->
 * CRLF (optional), dot-stuffing, a final line break if missing, and the terminating "." (swaks
 * itself appends the CRLF after it).
 */
export class SwaksDataEncoder {
  private atLineStart = true;
  private prev = -1;
  private prev2 = -1;
  constructor(private readonly normalizeLineEndings = true) {}

  encode(chunk: Buffer): Buffer {
    const out = Buffer.allocUnsafe(chunk.length * 2);
    let n = 0;
    for (const b of chunk) {
      if (b === 0x0a && this.normalizeLineEndings && this.prev !== 0x0d) out[n++] = 0x0d;
      if (this.atLineStart && b === 0x2e) out[n++] = 0x2e;
      out[n++] = b;
      this.atLineStart = b === 0x0a;
      this.prev2 = this.prev;
      this.prev = b;
    }
    return out.subarray(0, n);
  }

  /**
   * The terminating "." must follow a CRLF (smtp-server does not end DATA at LF "." CRLF), so a
   * CRLF is added unless the message ends with one; an empty message thus goes out as one empty
   * line (swaks would anyway take a --data value without LF for a file name).
   */
  finish(): Buffer {
    return Buffer.from(this.prev2 === 0x0d && this.prev === 0x0a ? '.' : '\r\n.', 'latin1');
  }
}

/** The whole --data file for a message held in memory. */
export function toSwaksDataFile(message: Buffer, normalizeLineEndings = true): Buffer {
  const enc = new SwaksDataEncoder(normalizeLineEndings);
  return Buffer.concat([enc.encode(message), enc.finish()]);
}

/** Encode a message file into a --data file, streaming (for messages too large to hold). Returns the bytes written. */
async function encodeFile(src: string, dest: string, normalizeLineEndings: boolean): Promise<number> {
  const enc = new SwaksDataEncoder(normalizeLineEndings);
  let size = 0;
  await pipeline(
    createReadStream(src),
    async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        const out = enc.encode(chunk);
        size += out.length;
        yield out;
      }
      const tail = enc.finish();
      size += tail.length;
      yield tail;
    },
    createWriteStream(dest),
  );
  return size;
}

/** Replace (first occurrence, with its continuation lines) or append headers in the header block. */
export function applyHeaders(message: Buffer, headers: Record<string, string>): Buffer {
  let s = message.toString('latin1');
  for (const [name, value] of Object.entries(headers)) {
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) throw new Error(`swaks(): invalid header name ${JSON.stringify(name)}`);
    const crlf = s.indexOf('\r\n\r\n');
    const lf = s.indexOf('\n\n');
    let headerEnd: number; // index just after the header block's last line break
    if (crlf >= 0 && (lf < 0 || crlf < lf)) headerEnd = crlf + 2;
    else if (lf >= 0) headerEnd = lf + 1;
    else headerEnd = s.length; // whole message is headers
    const eol = crlf >= 0 || lf < 0 ? '\r\n' : '\n';
    const line = `${name}: ${Buffer.from(value, 'utf8').toString('latin1')}`;
    const head = s.slice(0, headerEnd);
    const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const re = new RegExp(`^${escaped}:[^\\n]*\\n(?:[ \\t][^\\n]*\\n)*`, 'im');
    const m = re.exec(head);
    if (m) {
      const lineEol = m[0].match(/^[^\n]*?(\r?\n)/)?.[1] ?? eol;
      s = head.slice(0, m.index) + line + lineEol + head.slice(m.index + m[0].length) + s.slice(headerEnd);
    } else {
      let prefix = head;
      if (prefix.length > 0 && !prefix.endsWith('\n')) prefix += eol;
      s = prefix + line + eol + s.slice(headerEnd);
    }
  }
  return Buffer.from(s, 'latin1');
}

const RECV = /^(<- |<\*\*|<~ |<~\*) (.*)$/;
const SEND = /^( ->| ~>|\*\*>|\*~>) (.*)$/;

/** Parse a swaks transcript into command/reply pairs. */
export function parseSwaksTranscript(transcript: string): SwaksReply[] {
  const replies: SwaksReply[] = [];
  const pending: string[] = []; // commands sent, not yet answered (PIPELINING)
  let inData = false; // after a 354: client lines are the message body until the next reply
  let dataStarted = false;
  let replyLines: string[] = [];
  let replyError = false;

  const finishReply = (): void => {
    if (replyLines.length === 0) return;
    const lines = replyLines;
    const error = replyError;
    replyLines = [];
    replyError = false;
    const command = pending.length > 0 ? pending.shift()! : replies.length === 0 ? '(greeting)' : '';
    const first = /^(\d{3})[ -]?/.exec(lines[0]!);
    if (!first) return; // e.g. "<** Timeout (10 secs) waiting for server response"
    const code = Number(first[1]);
    const text = lines.map((l) => l.replace(/^\d{3}[ -]?/, '')).join('\n');
    replies.push({ command, code, text, error });
    if (code === 354) inData = true;
  };

  for (const rawLine of transcript.split('\n')) {
    const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    const recv = RECV.exec(line);
    if (recv) {
      if (dataStarted) {
        pending.push('.');
        dataStarted = false;
        inData = false;
      }
      const text = recv[2]!;
      replyLines.push(text);
      if (recv[1] === '<**' || recv[1] === '<~*') replyError = true;
      // the last line of a reply is "NNN text" or "NNN"; anything else ends it too (no code)
      if (/^\d{3}(?: |$)/.test(text) || !/^\d{3}-/.test(text)) finishReply();
      continue;
    }
    const send = SEND.exec(line);
    if (send) {
      finishReply();
      if (inData) {
        dataStarted = true; // body lines (or "N lines sent"): one command, "."
      } else {
        pending.push(send[2]!);
      }
    }
  }
  finishReply();
  return replies;
}

function finalOf(replies: SwaksReply[]): { code: number | null; reply: string } {
  const pick = replies.find((r) => r.command === '.') ?? replies.find((r) => r.code >= 400);
  if (!pick) return { code: null, reply: '' };
  const lines = pick.text.split('\n');
  const reply = lines
    .map((l, i) => `${pick.code}${i < lines.length - 1 ? '-' : l.length > 0 ? ' ' : ''}${l}`)
    .join('\n');
  return { code: pick.code, reply };
}

export async function swaks(opts: SwaksOptions): Promise<SwaksResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw new Error(`swaks(): bad port ${opts.port}`);
  const to = (Array.isArray(opts.to) ? opts.to : [opts.to]).map((t) => requireNonEmpty('to', t));
  if (to.length === 0) throw new Error('swaks(): at least one recipient is required');
  if (opts.replyTimeoutSec !== undefined && !(Number.isInteger(opts.replyTimeoutSec) && opts.replyTimeoutSec >= 1)) {
    throw new Error('swaks(): replyTimeoutSec must be a whole number of seconds >= 1');
  }

  const args: string[] = [
    '--config', // no config file (~/.swaksrc)
    `--server=${requireNonEmpty('server', opts.server)}`,
    `--port=${opts.port}`,
    `--to=${to.join(',')}`,
    // per-reply timeout, below the overall limit so swaks can report it in the transcript
    `--timeout=${opts.replyTimeoutSec ?? Math.max(1, Math.floor((timeoutMs * 2) / 3 / 1000))}s`,
  ];
  if (opts.from !== undefined) args.push(`--from=${opts.from === '' ? '<>' : requireNonEmpty('from', opts.from)}`);
  if (opts.ehlo !== undefined) args.push(`--ehlo=${requireNonEmpty('ehlo', opts.ehlo)}`);
  if (opts.auth) {
    args.push(
      `--auth=${opts.auth.type ?? 'PLAIN'}`,
      `--auth-user=${requireNonEmpty('auth.user', opts.auth.user)}`,
      `--auth-password=${requireNonEmpty('auth.password', opts.auth.password)}`,
    );
  }
  if (opts.pipeline) args.push('--pipeline');
  if (opts.tls === 'starttls') args.push('--tls');
  if (opts.tls === 'tls') args.push('--tls-on-connect');
  if (opts.tlsCaPath !== undefined) args.push('--tls-verify', `--tls-ca-path=${opts.tlsCaPath}`);

  if (opts.data !== undefined && opts.dataFile !== undefined) throw new Error('swaks(): give data or dataFile, not both');
  if (opts.dataFile !== undefined && opts.headers) throw new Error('swaks(): headers are not supported with dataFile');

  let dir: string | undefined;
  try {
    if (opts.data !== undefined || opts.dataFile !== undefined) {
      dir = await mkdtemp(join(tmpdir(), 'sendas-swaks-'));
      const file = join(dir, 'message.eml');
      const normalize = opts.normalizeLineEndings ?? true;
      let size: number;
      if (opts.data !== undefined) {
        let message = typeof opts.data === 'string' ? Buffer.from(opts.data, 'utf8') : opts.data;
        if (opts.headers) message = applyHeaders(message, opts.headers);
        const wire = toSwaksDataFile(message, normalize);
        await writeFile(file, wire);
        size = wire.length;
      } else {
        size = await encodeFile(opts.dataFile!, file, normalize);
      }
      args.push(`--data=@${file}`, '--no-data-fixup');
      if (opts.suppressData ?? size > AUTO_SUPPRESS_BYTES) args.push('--suppress-data');
    } else {
      for (const [name, value] of Object.entries(opts.headers ?? {})) args.push(`--header=${name}: ${value}`);
      if (opts.suppressData) args.push('--suppress-data');
    }
    args.push(...(opts.extraArgs ?? []));
    return await run(args, timeoutMs);
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

function run(args: string[], timeoutMs: number): Promise<SwaksResult> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SWAKS_')) env[k] = v;
  return new Promise<SwaksResult>((resolve, reject) => {
    // one pipe for stdout and stderr keeps the transcript in order (swaks's STDOUT is unbuffered)
    const child = spawn('/bin/sh', ['-c', 'exec swaks "$@" 2>&1', 'swaks', ...args], {
      stdio: ['ignore', 'pipe', 'ignore'],
      env,
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let timedOut = false;
    let overflow = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_TRANSCRIPT_BYTES) {
        // e.g. swaks stuck re-printing a prompt on EOF
        overflow = true;
        child.kill('SIGKILL');
        return;
      }
      chunks.push(chunk);
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const transcript = Buffer.concat(chunks).toString('utf8');
      if (code === 127) {
        reject(new Error('swaks is not installed (apt-get install -y swaks libnet-ssleay-perl)'));
        return;
      }
      if (overflow) {
        reject(new Error(`swaks printed more than ${MAX_TRANSCRIPT_BYTES} bytes (waiting on a prompt?):\n${transcript.slice(0, 2000)}`));
        return;
      }
      const replies = parseSwaksTranscript(transcript);
      const final = finalOf(replies);
      resolve({
        exitCode: timedOut ? 124 : (code ?? (signal ? 128 : -1)),
        timedOut,
        transcript,
        finalCode: final.code,
        finalReply: final.reply,
        replies,
      });
    });
  });
}
