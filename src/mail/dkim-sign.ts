import { createHash, createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { findHeaderEnd } from './header-stream.js';
import { relaxedBodyHasher, signatureField, signatureInput } from './mailauth-adapter.js';

/**
 * DKIM signatures (RFC 6376, relaxed/relaxed; RSA-SHA256 and Ed25519-SHA256, RFC 8463) of the
 * message as it leaves: the header section after alignment, and the body. The body is hashed
 * chunk by chunk as it passes, never held; the signature itself is computed on libuv's thread
 * pool (asynchronous crypto.sign), not on the thread that runs the client sessions.
 */

/** What signing needs of a `dkim:` entry (config's DkimSigningKey is one). */
export interface DkimSigningKey {
  readonly domain: string;
  readonly selector: string;
  readonly algorithm: 'rsa-sha256' | 'ed25519-sha256';
  readonly keyType: 'rsa' | 'ed25519';
  readonly headers: readonly string[];
  /** The PEM private key (a Secret). */
  readonly key: { reveal(): string };
}

/** Only From is signed once more than it occurs: the field a forged second copy of would mislead readers. */
const OVERSIGNED = ['From'];

/** Parsed once per key (the snapshot's key object), not once per message. */
const keyObjects = new WeakMap<DkimSigningKey, KeyObject>();

function keyObjectOf(key: DkimSigningKey): KeyObject {
  let k = keyObjects.get(key);
  if (!k) {
    k = createPrivateKey(key.key.reveal());
    keyObjects.set(key, k);
  }
  return k;
}

/** The DKIM-Signature header field (folded, with its CRLF) for a header section and the body's relaxed hash. */
export async function dkimSignature(key: DkimSigningKey, headerSection: Buffer, bodyHash: string, time: Date): Promise<string> {
  const input = signatureInput(headerSection, key.headers, OVERSIGNED, { domain: key.domain, selector: key.selector, algorithm: key.algorithm, bodyHash, time });
  // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the canonicalized header; RSA hashes it itself
  const data = key.keyType === 'rsa' ? input.canonicalized : createHash('sha256').update(input.canonicalized).digest();
  const b = await new Promise<Buffer>((resolve, reject) => sign(key.keyType === 'rsa' ? 'sha256' : null, data, keyObjectOf(key), (err, sig) => (err ? reject(err) : resolve(sig))));
  return signatureField(input.tags, b.toString('base64'));
}

/** The signature of a whole message held in memory (a small passthrough message). */
export function dkimSignatureOf(key: DkimSigningKey, message: Buffer, time = new Date()): Promise<string> {
  const end = findHeaderEnd(message);
  const hasher = relaxedBodyHasher();
  if (end >= 0) hasher.update(message.subarray(end));
  return dkimSignature(key, end >= 0 ? message.subarray(0, end) : message, hasher.digest('base64'), time);
}

/**
 * Passes the message through unchanged and signs it: `signature` is set once the stream has
 * ended (before 'end' is emitted, so whoever reads the stream to its end can use it). Holds the
 * header section only (HeaderRewriteStream in front already bounds it).
 */
export class DkimSignStream extends Transform {
  /** The DKIM-Signature header field with its CRLF, once the last byte has passed. */
  signature: string | undefined;
  private head: Buffer[] = [];
  private headBytes = 0;
  private headerSection: Buffer | undefined;
  private readonly hasher = relaxedBodyHasher();

  constructor(
    private readonly key: DkimSigningKey,
    private readonly time = new Date(),
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.headerSection !== undefined) {
      this.hasher.update(chunk);
      done(null, chunk);
      return;
    }
    const searchFrom = Math.max(0, this.headBytes - 3);
    this.head.push(chunk);
    this.headBytes += chunk.length;
    const buffered = this.head.length === 1 ? chunk : Buffer.concat(this.head);
    this.head = [buffered];
    const end = findHeaderEnd(buffered, searchFrom);
    if (end >= 0) {
      this.headerSection = buffered.subarray(0, end);
      this.head = [];
      this.hasher.update(buffered.subarray(end));
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    // a message that is all header: the body is empty
    const header = this.headerSection ?? Buffer.concat(this.head);
    this.head = [];
    dkimSignature(this.key, header, this.hasher.digest('base64'), this.time).then(
      (signature) => {
        this.signature = signature;
        done();
      },
      (err: Error) => done(err),
    );
  }
}

/** The message with its DKIM-Signature field in front (the first field of the header section). */
export function withSignature(signature: string, message: Readable): Readable {
  const signed = Readable.from(
    (async function* () {
      yield Buffer.from(signature, 'latin1');
      for await (const chunk of message as AsyncIterable<Buffer>) yield chunk;
    })(),
    { objectMode: false },
  );
  // the transport destroys what it was given when the transaction fails: the source goes with it
  signed.once('close', () => message.destroy());
  return signed;
}
