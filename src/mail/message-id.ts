import { randomFillSync } from 'node:crypto';

const ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
const ID_LENGTH = 12;

// Random bytes for ids, drawn from the CSPRNG 4 KiB at a time (341 ids), as Node's own
// randomUUID() batches, instead of a randomBytes(12) call per id (~2 µs of the main thread each).
// Every byte is used once; 256 is a multiple of 32, so `byte & 31` picks each letter with equal
// probability.
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

/**
 * A message's id: in the Received header, the SMTP reply, every log line and the queue file
 * names. 12 characters of base32 without look-alikes: unique enough, short enough to read over
 * the phone.
 */
export function newMessageId(): string {
  if (poolOffset + ID_LENGTH > pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  let id = '';
  for (let i = poolOffset, end = poolOffset + ID_LENGTH; i < end; i++) id += ALPHABET[pool[i]! & 31];
  poolOffset += ID_LENGTH;
  return id;
}
