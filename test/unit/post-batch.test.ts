import { describe, expect, it } from 'vitest';
import { PostBatch } from '../../src/threads/post-batch.js';

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('PostBatch', () => {
  it('what is pushed in one turn of the event loop is posted once, in order; the next turn makes a new batch', async () => {
    const posted: number[][] = [];
    const batch = new PostBatch<number>((b) => posted.push(b));
    batch.push(1);
    batch.push(2);
    await Promise.resolve();
    batch.push(3);
    expect(posted).toEqual([]);
    await turn();
    expect(posted).toEqual([[1, 2, 3]]);
    batch.push(4);
    await turn();
    expect(posted).toEqual([[1, 2, 3], [4]]);
  });

  it('flush posts at once; clear drops what is queued; nothing queued posts nothing', async () => {
    const posted: string[][] = [];
    const batch = new PostBatch<string>((b) => posted.push(b));
    batch.push('a');
    batch.flush();
    expect(posted).toEqual([['a']]);
    batch.push('lost');
    batch.clear();
    await turn();
    expect(posted).toEqual([['a']]);
  });
});
