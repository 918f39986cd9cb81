import { describe, expect, it } from 'vitest';
import { DueHeap } from '../../src/delivery/due-heap.js';

interface Item {
  name: string;
  at: number;
  waiting: boolean;
}

function heap(): DueHeap<Item> {
  return new DueHeap<Item>((item, at) => item.waiting && item.at === at);
}

describe('DueHeap (the queue runner\'s waiting entries)', () => {
  it('gives the due entries earliest first and keeps the later ones', () => {
    const h = heap();
    const items: Item[] = [50, 10, 40, 30, 20, 60, 10].map((at, i) => ({ name: `m${i}`, at, waiting: true }));
    for (const item of items) h.push(item, item.at);
    expect(h.takeDue(35).map((i) => i.at)).toEqual([10, 10, 20, 30]);
    expect(h.nextAt()).toBe(40);
    expect(h.takeDue(35)).toEqual([]);
    expect(h.takeDue(1000).map((i) => i.name)).toEqual(['m2', 'm0', 'm5']);
    expect(h.nextAt()).toBe(Infinity);
  });

  it('an entry rescheduled or no longer waiting is not given at its old time', () => {
    const h = heap();
    const a: Item = { name: 'a', at: 10, waiting: true };
    const b: Item = { name: 'b', at: 20, waiting: true };
    h.push(a, 10);
    h.push(b, 20);
    a.at = 100; // retried later: pushed again with the new time
    h.push(a, 100);
    b.waiting = false; // being delivered, or deleted
    expect(h.nextAt()).toBe(100);
    expect(h.takeDue(50)).toEqual([]);
    expect(h.takeDue(100)).toEqual([a]);
  });

  it('stays ordered through many random pushes and takes', () => {
    const h = heap();
    const times: number[] = [];
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 2000; i++) {
      const at = Math.floor(rand() * 10_000);
      times.push(at);
      h.push({ name: String(i), at, waiting: true }, at);
    }
    const out = [...h.takeDue(5000), ...h.takeDue(10_000)].map((i) => i.at);
    expect(out).toEqual([...times].sort((x, y) => x - y));
  });
});
