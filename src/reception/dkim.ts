import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Account } from '../config/account.js';
import { dkimDomainKey } from '../config/dkim.js';
import type { ConfigSnapshot, DkimKeyConfig } from '../config/types.js';
import { DkimSignStream, dkimSignatureOf, withSignature } from '../mail/dkim-sign.js';
import type { UpstreamEnvelope } from '../mail/envelope.js';
import { takeIfSmall } from '../mail/small-message.js';
import type { SendOutcome } from '../transport/send.js';
import type { Transport } from '../transport/transport.js';
import type { MessageInFlight } from './in-flight.js';
import type { MessageDecision } from './process.js';

/**
 * DKIM at reception (ARCHITECTURE.md "DKIM signing"): the message is signed as it leaves, with
 * the key of its From domain after alignment. Queue: the body is hashed while it is written, the
 * DKIM-Signature is kept in the entry's metadata and put in front of the message at each attempt.
 * Passthrough: a small message is signed in memory; a larger one is spooled (state_dir/dkim-spool)
 * while it is hashed, because its signature has to go upstream before its body.
 */

/** The key of the From domain the message leaves with; undefined: it goes unsigned. */
export function signingKeyFor(snapshot: ConfigSnapshot, decision: MessageDecision): DkimKeyConfig | undefined {
  if (snapshot.dkim.size === 0) return undefined;
  const from = decision.plan.from.address;
  return snapshot.dkim.get(dkimDomainKey(from.slice(from.lastIndexOf('@') + 1)));
}

/** For the log line of a signed message. */
export function signedBy(key: DkimKeyConfig): string {
  return `d=${key.domain} s=${key.selector}`;
}

/** The message as the queue stores it, hashed on the way: `signature` is set when the store has read it all. */
export function signWhileStoring(m: MessageInFlight, key: DkimKeyConfig): DkimSignStream {
  const signing = new DkimSignStream(key);
  // the store reads the tap: a failed pipeline must end its read too (m.failed tells the reason)
  m.body.once('error', (err) => signing.destroy(err));
  // the store's read and m.failed report a failure; an error with neither listening must not crash the relay
  signing.on('error', () => undefined);
  return m.body.pipe(signing);
}

/** passthrough with a key: the whole message is known before the upstream gets its first byte. */
export async function sendSigned(transport: Transport, account: Account, envelope: UpstreamEnvelope, m: MessageInFlight, key: DkimKeyConfig): Promise<SendOutcome> {
  const taken = await Promise.race([takeIfSmall(m.body), m.failed]);
  if ('bytes' in taken) {
    const signature = await dkimSignatureOf(key, taken.bytes);
    return transport.send(account, envelope, Buffer.concat([Buffer.from(signature, 'latin1'), taken.bytes]));
  }
  const file = await spoolFile(m.msg.snapshot.stateDir, m.msg.id);
  try {
    const signing = new DkimSignStream(key);
    const spooling = pipeline(taken.stream, signing, createWriteStream(file, { flags: 'wx', mode: 0o600 }));
    spooling.catch(() => undefined);
    await Promise.race([spooling, m.failed]);
    const open = () => withSignature(signing.signature!, createReadStream(file));
    // Graph's draft path reads a large message more than once: from the spool again
    return await transport.send(account, envelope, open(), undefined, open);
  } finally {
    await rm(file, { force: true });
  }
}

let swept = false;

/** A spool file of its own; the first of a process removes what a relay that died left behind. */
async function spoolFile(stateDir: string, id: string): Promise<string> {
  const dir = join(stateDir, 'dkim-spool');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!swept) {
    swept = true;
    const hourAgo = Date.now() - 3_600_000;
    for (const name of await readdir(dir).catch(() => [])) {
      const path = join(dir, name);
      const st = await stat(path).catch(() => undefined);
      if (st && st.mtimeMs < hourAgo) await rm(path, { force: true });
    }
  }
  return join(dir, `${id}.eml`);
}
