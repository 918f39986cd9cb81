import { describe, expect, it } from 'vitest';
import { mostInWindow } from './replicas.js';

describe('mostInWindow (the sliding check of a rate)', () => {
  it('counts the arrivals in the busiest window, each arrival opening one', () => {
    expect(mostInWindow([], 1000)).toBe(0);
    expect(mostInWindow([0, 100, 200], 1000)).toBe(3);
    // a fixed per-second window lets 5 + 5 through around its edge: the sliding check sees 10
    expect(mostInWindow([900, 920, 940, 960, 980, 1000, 1020, 1040, 1060, 1080], 1000)).toBe(10);
    // evenly spread at the rate: never more than the rate
    expect(mostInWindow(Array.from({ length: 20 }, (_, i) => i * 200), 1000)).toBe(5);
    // the window is half-open: an arrival exactly one window later starts the next
    expect(mostInWindow([5000, 0, 1000], 1000)).toBe(1);
  });
});
