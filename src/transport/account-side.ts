/** Which thread holds an account's upstream connections: the main thread's pools or the upstream thread's. */
export type Side = 'main' | 'thread';

/**
 * With `cluster:`, one side at a time holds an account's connections, so that they are all in one
 * pool and the replica never has more open than it holds leases (cluster/leases.ts). Sends on the
 * side in use go at once; a send for the other side waits until the account's sends in flight
 * have finished, has the side in use close its pool down to the sockets, and then goes. Sends
 * arriving meanwhile queue behind it, whichever side they want, so a switch is never starved.
 * Switches are rare: a queue's first attempts of small messages go to the upstream thread; only
 * large messages, retries read back from disk and XOAUTH2 or Graph accounts go to the main thread.
 */
export class AccountSide {
  private side: Side | undefined;
  private inFlight = 0;
  private switching = false;
  /** Sends queued behind a switch: while there are any, a send for the side in use queues too. */
  private queued = 0;
  private turn: Promise<void> = Promise.resolve();
  private drained: (() => void)[] = [];

  /**
   * The side a message that could go either way (small, in memory) should take: the upstream
   * thread, unless the main thread holds the account's connections and is busy with them — then
   * the main thread sends it too, instead of waiting for a switch and back.
   */
  choose(wanted: Side): Side {
    if (wanted === 'thread' && this.side === 'main' && (this.inFlight > 0 || this.queued > 0 || this.switching)) return 'main';
    return wanted;
  }

  /** Waits until `side` holds the account's connections and counts a send on it; exit() when it is done. */
  async enter(side: Side, closeSide: (side: Side) => Promise<void>): Promise<void> {
    if (!this.switching && this.queued === 0 && (this.side === side || this.side === undefined)) {
      this.side = side;
      this.inFlight++;
      return;
    }
    const before = this.turn;
    let release!: () => void;
    this.turn = new Promise<void>((resolve) => (release = resolve));
    this.queued++;
    await before;
    this.queued--;
    try {
      if (this.side !== undefined && this.side !== side) {
        this.switching = true;
        while (this.inFlight > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
        try {
          await closeSide(this.side);
        } finally {
          this.switching = false;
        }
      }
      this.side = side;
      this.inFlight++;
    } finally {
      release();
    }
  }

  exit(): void {
    if (--this.inFlight === 0) for (const resolve of this.drained.splice(0)) resolve();
  }

  /** Nothing in flight: the caller closed both sides (the leases go back). */
  forget(): void {
    if (this.inFlight === 0 && !this.switching) this.side = undefined;
  }
}
