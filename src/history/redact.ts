import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import type { Logger } from '../log.js';
import type { TraceEvent } from './types.js';

/** The per-installation key of `log.redact`, in state_dir: the same address hashes the same on every run, and differently elsewhere. */
export const REDACT_KEY_FILE = 'redact.key';

/**
 * Anything shaped like an address (local@domain) inside a string: the envelope, From, logins that
 * are addresses, account keys, and addresses quoted in upstream replies and reasons. The
 * look-behind keeps it from matching inside a hash it wrote (`h:…` has no `@`, so a second pass
 * finds nothing either). Message-IDs (`<id@domain>`) match too: a client's may carry an address.
 */
const ADDRESS = /(?<![\w.!#$%&'*+=?^`~\u0080-\uffff-])[\w.!#$%&'*+=?^`~\u0080-\uffff-]+@[\w\u0080-\uffff-]+(?:\.[\w\u0080-\uffff-]+)*/gu;

/**
 * `log.redact`: an address becomes `h:` and the first 12 hex digits of its HMAC-SHA256 under the
 * installation's key, of the address lower-cased. Stable, so ops still follow one address across
 * lines and days (and `sendas trace` finds it by hashing the query the same way); keyed, so
 * nobody without state_dir can test a guess. The domain is not kept: a small company's domain
 * names the person as well as the address does.
 */
export class Redactor {
  private readonly cache = new Map<string, string>();

  constructor(private readonly key: Buffer) {}

  address(address: string): string {
    const lower = address.toLowerCase();
    let hashed = this.cache.get(lower);
    if (hashed === undefined) {
      hashed = `h:${createHmac('sha256', this.key).update(lower).digest('hex').slice(0, 12)}`;
      // a bounded cache: the same few senders and recipients come back all day
      if (this.cache.size >= 10_000) this.cache.clear();
      this.cache.set(lower, hashed);
    }
    return hashed;
  }

  /** The text with every address in it hashed. */
  text(text: string): string {
    if (!text.includes('@')) return text;
    return text.replace(ADDRESS, (a) => this.address(a));
  }

  /** Any log value: strings hashed, plain objects and arrays walked, Errors reduced to what is logged of them. */
  value(value: unknown, depth = 0): unknown {
    if (typeof value === 'string') return this.text(value);
    if (value === null || typeof value !== 'object' || depth > 8) return value;
    if (Array.isArray(value)) return value.map((v) => this.value(v, depth + 1));
    if (value instanceof Error) {
      const e = value as NodeJS.ErrnoException;
      return { type: e.name, message: this.text(e.message), ...(e.code ? { code: e.code } : {}) };
    }
    const proto = Object.getPrototypeOf(value) as unknown;
    if (proto !== Object.prototype && proto !== null) return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = this.value(v, depth + 1);
    return out;
  }

  /** The event as the history keeps it under log.redact. */
  event(e: TraceEvent): TraceEvent {
    const t = (s: string | undefined) => (s === undefined ? undefined : this.text(s));
    return strip({ ...e, messageId: t(e.messageId), envelopeFrom: t(e.envelopeFrom), recipient: t(e.recipient), account: t(e.account), identity: t(e.identity), reply: t(e.reply), fix: t(e.fix) });
  }
}

function strip(e: TraceEvent): TraceEvent {
  const out = { ...e } as Record<string, unknown>;
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out as unknown as TraceEvent;
}

/** The installation's key: read from state_dir, made there (mode 0600) at the first start with log.redact. */
export function redactKey(stateDir: string, create = true): Buffer | undefined {
  const file = join(stateDir, REDACT_KEY_FILE);
  const read = () => Buffer.from(readFileSync(file, 'utf8').trim(), 'hex');
  try {
    return read();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    if (!create) return undefined;
  }
  mkdirSync(stateDir, { recursive: true });
  const key = randomBytes(32);
  try {
    writeFileSync(file, `${key.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    return key;
  } catch (err) {
    // another process made it first: use that one
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return read();
    throw err;
  }
}

/**
 * A logger whose every line has its addresses hashed: fields, nested values and the message text,
 * of this logger and of every child made from it. pino calls its write function (pino.symbols)
 * with the line's object and message before serializing them; this is the one place they pass
 * through, so no log site has to remember to redact.
 */
export function redactingLogger(logger: Logger, redactor: Redactor): Logger {
  const child = logger.child({});
  const sym = pino.symbols.writeSym as unknown as string;
  const target = child as unknown as Record<string, (obj: unknown, msg: unknown, num: number) => void>;
  const write = target[sym]!;
  target[sym] = function (this: unknown, obj: unknown, msg: unknown, num: number) {
    write.call(this, redactor.value(obj), typeof msg === 'string' ? redactor.text(msg) : msg, num);
  };
  return child;
}
