/**
 * Queue entries waiting for their next attempt, ordered by due time: the queue runner takes the
 * due ones from the top instead of walking every entry it tracks on each event (which cost
 * O(queue depth) per accepted or finished message). Items are never updated in place: a new due
 * time is pushed again, and `isCurrent` tells stale copies apart when they surface.
 */
export class DueHeap<T> {
  private readonly items: { at: number; value: T }[] = [];

  constructor(private readonly isCurrent: (value: T, at: number) => boolean) {}

  push(value: T, at: number): void {
    const items = this.items;
    items.push({ at, value });
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent]!.at <= at) break;
      items[i] = items[parent]!;
      i = parent;
    }
    items[i] = { at, value };
  }

  /** Removes and returns every current value due at `now` or before, earliest first. */
  takeDue(now: number): T[] {
    const due: T[] = [];
    for (;;) {
      const top = this.peek();
      if (!top || top.at > now) return due;
      this.pop();
      due.push(top.value);
    }
  }

  /** The earliest current due time, or Infinity. */
  nextAt(): number {
    return this.peek()?.at ?? Infinity;
  }

  get size(): number {
    return this.items.length;
  }

  /** The top item, after dropping stale ones. */
  private peek(): { at: number; value: T } | undefined {
    while (this.items.length > 0) {
      const top = this.items[0]!;
      if (this.isCurrent(top.value, top.at)) return top;
      this.pop();
    }
    return undefined;
  }

  private pop(): void {
    const items = this.items;
    const last = items.pop()!;
    if (items.length === 0) return;
    let i = 0;
    const n = items.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && items[r]!.at < items[l]!.at ? r : l;
      if (items[c]!.at >= last.at) break;
      items[i] = items[c]!;
      i = c;
    }
    items[i] = last;
  }
}
