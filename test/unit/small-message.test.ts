import { PassThrough, Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { takeIfSmall } from '../../src/mail/small-message.js';

const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * seed + 7) & 0xff));

describe('takeIfSmall', () => {
  it('a message that ends within the limit comes back whole, as one buffer', async () => {
    const parts = [bytes(1000, 3), bytes(2000, 5), bytes(10, 11)];
    const taken = await takeIfSmall(Readable.from(parts), 4096);
    expect(taken).toEqual({ bytes: Buffer.concat(parts) });
    expect(await takeIfSmall(Readable.from([]), 4096)).toEqual({ bytes: Buffer.alloc(0) });
  });

  it('a larger one is a stream of exactly the same bytes: those read so far, then the rest as it comes', async () => {
    const source = new PassThrough();
    const parts = [bytes(3000, 3), bytes(3000, 5), bytes(3000, 7)];
    source.write(parts[0]);
    source.write(parts[1]);
    const taken = await takeIfSmall(source, 4096);
    expect('stream' in taken).toBe(true);
    if (!('stream' in taken)) return;
    // the source is paused: what was not read yet stays with it
    source.end(parts[2]);
    expect(await buffer(taken.stream)).toEqual(Buffer.concat(parts));
  });

  it('a stream that fails before its end rejects with its error', async () => {
    const source = new PassThrough();
    const taken = takeIfSmall(source, 4096);
    source.write(bytes(100, 3));
    source.destroy(new Error('client went away'));
    await expect(taken).rejects.toThrow('client went away');
  });
});
