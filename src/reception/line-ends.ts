import type { ListenConfig } from '../config/types.js';
import { RelayError } from '../errors/relay-error.js';

const CR = 0x0d;
const LF = 0x0a;
const NUL = 0x00;
const CRLF = Buffer.from('\r\n');
const SPACE = Buffer.from(' ');
const HELD_CR = Buffer.from('\r');
const LF_LF = Buffer.from('\n\n');
/** A header section this long without a CRLF or a blank line is taken as written with bare LF. */
const DECIDE_WITHIN = 64 * 1024;

/**
 * Makes every line of the message end in CRLF before anything else reads it, so that no two
 * parsers — ours, the upstream's, the final receiver's — can disagree about where a line, the
 * header section or the data ends (the 2023 SMTP smuggling research: `\n.\n`, `\r.\r`,
 * `\r\n\x00.\r\n` … read as an end of data by one receiver and as text by another).
 *
 * - `reject` (Postfix 3.9's `smtpd_forbid_bare_newline = reject`): a bare LF or bare CR fails the
 *   message with 550 5.5.2 naming the line; the client's data is still read to its end.
 * - `normalize` (Postfix 3.9's default): a bare LF is a line end (it becomes CRLF), a bare CR is
 *   dropped. One exception, in the header section of a message whose first line ends in CRLF: a
 *   bare LF there can only have come from inside a field (a display name typed with a line
 *   break), so it becomes a space — taken as a line end it would add a header line such as
 *   `Bcc:` that the client's software never wrote.
 *
 * A NUL byte fails the message in either mode (550 5.6.0): RFC 5322 text may not carry it, and a
 * receiver that drops NULs would read `\r\n\x00.\r\n` as the end of the data.
 *
 * The header section (a few KB) is read byte by byte; the body, where the bytes are, is scanned
 * with Buffer.indexOf only, and a body that is all CRLF and has no NUL passes unchanged, chunk by
 * chunk, without a copy. Not a stream stage of its own (each costs about 10 µs a message): the
 * size guard runs it on each chunk.
 */
export class LineEnds {
  /** 1-based number of the line the next byte belongs to (lines counted at every LF, bare or not). */
  private line = 1;
  /** The input byte before the current chunk (-1 before the first). */
  private prev = -1;
  /** A CR that ended the previous chunk: whether it is bare depends on the next byte. */
  private heldCr = false;
  private inHeader = true;
  /**
   * Whether the client writes CRLF (else bare LF) line ends: decided on the header section before
   * any of it goes on (see writesCrlf); reject mode does not need it.
   */
  private crlfClient: boolean | undefined;
  private undecided: Buffer[] = [];
  /** Nothing but a line end was written on the current output line: the next line end ends the header section. */
  private outLineEmpty = true;

  constructor(private readonly mode: ListenConfig['bareNewline']) {
    if (mode === 'reject') this.crlfClient = true;
  }

  /** The chunk as it goes on (undefined: nothing yet); throws the RelayError that fails the message. */
  push(chunk: Buffer): Buffer | undefined {
    if (chunk.length === 0) return undefined;
    if (this.crlfClient === undefined) {
      // normalize, header section: held back until the client's own line ends are known
      const head = this.undecided.length > 0 ? Buffer.concat([...this.undecided, chunk]) : chunk;
      const crlf = writesCrlf(head);
      if (crlf === undefined && head.length < DECIDE_WITHIN) {
        this.undecided = [head];
        return undefined;
      }
      this.undecided = [];
      this.crlfClient = crlf ?? false;
      chunk = head;
    }
    return this.process(chunk);
  }

  /** The end of the data: what was still held back; throws like push(). */
  end(): Buffer | undefined {
    let out: Buffer | undefined;
    if (this.undecided.length > 0) {
      const head = Buffer.concat(this.undecided);
      this.undecided = [];
      this.crlfClient = writesCrlf(head) ?? false;
      out = this.process(head);
    }
    // a CR as the very last byte has no LF after it: bare
    if (this.heldCr) {
      this.heldCr = false;
      if (this.mode === 'reject') throw this.bareCr();
    }
    return out;
  }

  private process(chunk: Buffer): Buffer | undefined {
    const out: Buffer[] = [];
    let from = 0;
    if (this.heldCr) from = this.resolveHeldCr(chunk, out);
    if (this.inHeader) from = this.header(chunk, from, out);
    if (!this.inHeader && from < chunk.length) this.body(chunk, from, out);
    this.prev = chunk[chunk.length - 1]!;
    return out.length <= 1 ? out[0] : joined(out, chunk);
  }

  /** The held CR and the chunk's first byte; returns where the chunk's own scan starts. */
  private resolveHeldCr(chunk: Buffer, out: Buffer[]): number {
    this.heldCr = false;
    if (chunk[0] === LF) {
      // a CRLF split across chunks: the CR goes out now, in reject mode it already did
      if (this.mode === 'normalize') out.push(HELD_CR);
      return 0;
    }
    if (this.mode === 'reject') throw this.bareCr();
    // normalize: the CR is dropped, and the byte before the chunk is no longer a CR
    this.prev = -1;
    return 0;
  }

  /** Byte by byte through the header section; returns the offset where the body starts (or the chunk's end). */
  private header(chunk: Buffer, from: number, out: Buffer[]): number {
    let start = from;
    const emit = (end: number, insert?: Buffer) => {
      if (end > start) out.push(chunk.subarray(start, end));
      if (insert) out.push(insert);
    };
    for (let i = from; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (b === NUL) throw this.nul();
      if (b === CR) {
        if (i + 1 === chunk.length) {
          this.holdCr(chunk, i, emit);
          return chunk.length;
        }
        if (chunk[i + 1] === LF) continue;
        if (this.mode === 'reject') throw this.bareCr();
        emit(i);
        start = i + 1;
        continue;
      }
      if (b !== LF) {
        this.outLineEmpty = false;
        continue;
      }
      if ((i > 0 ? chunk[i - 1] : this.prev) !== CR) {
        if (this.mode === 'reject') throw this.bareLf();
        if (this.crlfClient) {
          // inside a field: see the class comment
          emit(i, SPACE);
          start = i + 1;
          this.outLineEmpty = false;
          this.line++;
          continue;
        }
        emit(i, CRLF);
        start = i + 1;
      }
      this.line++;
      if (this.outLineEmpty) {
        this.inHeader = false;
        emit(i + 1);
        return i + 1;
      }
      this.outLineEmpty = true;
    }
    emit(chunk.length);
    return chunk.length;
  }

  /** The body from `from` on: indexOf over the LFs and CRs, each LF checked for its CR. */
  private body(chunk: Buffer, from: number, out: Buffer[]): void {
    const nul = chunk.indexOf(NUL, from);
    if (nul >= 0) {
      this.line += countLf(chunk, from, nul);
      throw this.nul();
    }
    const normalize = this.mode === 'normalize';
    let start = from;
    let cr = chunk.indexOf(CR, from);
    for (let lf = chunk.indexOf(LF, from); lf >= 0; lf = chunk.indexOf(LF, lf + 1)) {
      while (cr >= 0 && cr < lf - 1) {
        // a CR not followed by the LF: bare
        if (!normalize) throw this.bareCr();
        if (cr > start) out.push(chunk.subarray(start, cr));
        start = cr + 1;
        cr = chunk.indexOf(CR, cr + 1);
      }
      if (cr === lf - 1 && lf > from) {
        cr = chunk.indexOf(CR, lf + 1);
      } else if (!(lf === from && (lf > 0 ? chunk[lf - 1] : this.prev) === CR)) {
        if (!normalize) throw this.bareLf();
        if (lf > start) out.push(chunk.subarray(start, lf));
        out.push(CRLF);
        start = lf + 1;
      }
      this.line++;
    }
    while (cr >= 0) {
      if (cr === chunk.length - 1) {
        this.heldCr = true;
        if (normalize) {
          if (cr > start) out.push(chunk.subarray(start, cr));
          return;
        }
        break;
      }
      if (!normalize) throw this.bareCr();
      if (cr > start) out.push(chunk.subarray(start, cr));
      start = cr + 1;
      cr = chunk.indexOf(CR, cr + 1);
    }
    if (start === 0) out.push(chunk);
    else if (start < chunk.length) out.push(chunk.subarray(start));
  }

  private holdCr(chunk: Buffer, i: number, emit: (end: number) => void): void {
    this.heldCr = true;
    // reject mode sends the CR on (the next chunk decides whether the message fails); normalize keeps it back
    emit(this.mode === 'reject' ? i + 1 : i);
  }

  private bareLf(): RelayError {
    return new RelayError('message', { code: 550, enhanced: '5.5.2' }, `Message line ${this.line} ends with a bare LF; send CRLF line endings`);
  }

  private bareCr(): RelayError {
    return new RelayError('message', { code: 550, enhanced: '5.5.2' }, `Message line ${this.line} contains a bare CR; send CRLF line endings`);
  }

  private nul(): RelayError {
    return new RelayError('message', { code: 550, enhanced: '5.6.0' }, `Message line ${this.line} contains a NUL byte, which mail may not carry; remove it and send the message again`);
  }
}

/**
 * The client writes CRLF when a CRLF comes before the first blank line in the bare-LF sense (LF
 * LF): a CRLF client's bare LF in a field can't be taken for its line end, and an injected blank
 * line only moves header lines into the body, never adds one. undefined: not known yet.
 */
function writesCrlf(head: Buffer): boolean | undefined {
  const crlf = head.indexOf(CRLF);
  const blank = head[0] === LF ? 0 : head.indexOf(LF_LF);
  if (crlf >= 0 && (blank < 0 || crlf < blank)) return true;
  if (blank >= 0) return false;
  return undefined;
}

/** The pieces as one buffer: a view of the chunk when they are its bytes, back to back (the header and body of one chunk, unchanged), else a copy. */
function joined(out: Buffer[], chunk: Buffer): Buffer {
  let end = chunk.byteOffset;
  for (const piece of out) {
    if (piece.buffer !== chunk.buffer || piece.byteOffset !== end) return Buffer.concat(out);
    end += piece.length;
  }
  if (end > chunk.byteOffset + chunk.length) return Buffer.concat(out);
  return chunk.subarray(0, end - chunk.byteOffset);
}

function countLf(chunk: Buffer, from: number, to: number): number {
  let n = 0;
  for (let i = chunk.indexOf(LF, from); i >= 0 && i < to; i = chunk.indexOf(LF, i + 1)) n++;
  return n;
}
