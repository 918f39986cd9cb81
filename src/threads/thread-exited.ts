/**
 * A worker thread stopped (crashed, or was terminated) while requests to it were outstanding.
 * What it was doing is unknown, so each waiter is failed with this; errors/ classifies it (an
 * upstream transaction cut off is "connection lost", a queue write a 451), nobody else reads it.
 */
export class ThreadExitedError extends Error {
  constructor(
    /** The thread's name, e.g. "sendas upstream". */
    readonly thread: string,
    readonly why: string,
  ) {
    super(`the ${thread} thread stopped: ${why}`);
    this.name = 'ThreadExitedError';
  }
}
