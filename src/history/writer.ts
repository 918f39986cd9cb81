import { join } from 'node:path';
import type { Logger } from '../log.js';
import { ThreadClient } from '../threads/client.js';
import { workerModule } from '../threads/module.js';
import { HISTORY_FILE, type HistoryProtocol } from './protocol.js';
import type { TraceEvent, TraceLookup } from './types.js';

/** Events waiting for the writer (buffered here and sent, not yet committed) beyond which new ones are dropped. */
const MAX_PENDING = 20_000;
/** How long events gather before they go to the writer: one message between threads, one transaction, for all of them. */
const FLUSH_MS = 50;
/** After a failed write, events are dropped (counted) for this long instead of trying at once again. */
const PAUSE_MS = 30_000;
const PRUNE_EVERY_MS = 3_600_000;

export interface HistoryWriterOptions {
  readonly stateDir: string;
  /** `history.keep` as configured now: a reload changes it from the next pruning. */
  readonly keepMs: () => number;
  readonly logger: Logger;
  /** Events dropped (writer full, failing or gone): the relay counts them in a metric. */
  readonly onDropped?: (count: number) => void;
}

/**
 * The delivery history's writer, seen from the main thread: `add` is fire-and-forget and costs an
 * array push; the events go to a worker thread (writer-thread.ts) in batches, where SQLite's
 * synchronous calls block nobody. Nothing here waits on the history, so a full disk or a crashed
 * writer never slows or fails mail: the events are dropped, counted, and a warning says so.
 */
export class HistoryWriter {
  readonly path: string;
  private readonly thread = new ThreadClient<HistoryProtocol>({ name: 'sendas history', module: workerModule(import.meta.url, 'writer-thread') });
  private buffer: TraceEvent[] = [];
  private sent = 0;
  private readonly writes = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private pruner: NodeJS.Timeout | undefined;
  private pausedUntil = 0;
  private droppedSinceWarning = 0;
  private warnedAt = -Infinity;
  private closed = false;

  constructor(private readonly opts: HistoryWriterOptions) {
    this.path = join(opts.stateDir, HISTORY_FILE);
  }

  /**
   * Starts the writer thread and opens (or creates) the file before the listeners bind, so the
   * first message never waits for a thread to start or a file to be made, and a history that
   * can't be opened is said at start (mail flows without it). Then prunes in the background
   * (a relay that was down long may have many expired events) and once an hour.
   */
  async start(): Promise<void> {
    const prune = () => {
      this.prune().catch((err: unknown) => {
        this.opts.logger.warn({ path: this.path, err: { message: (err as Error).message } }, 'the delivery history could not be pruned; mail is not affected');
      });
    };
    this.pruner = setInterval(prune, PRUNE_EVERY_MS);
    this.pruner.unref();
    try {
      await this.thread.request('open', { path: this.path });
    } catch (err) {
      this.opts.logger.warn({ path: this.path, err: { message: (err as Error).message } }, 'the delivery history could not be opened; mail is not affected');
      return;
    }
    prune();
  }

  add(event: TraceEvent): void {
    if (this.closed || this.buffer.length + this.sent >= MAX_PENDING || (this.pausedUntil !== 0 && Date.now() < this.pausedUntil)) {
      this.dropped(1);
      return;
    }
    this.buffer.push(event);
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }

  /** The lookup behind `GET /trace` and the status page: in the writer thread, after what was recorded before it. */
  readonly find: TraceLookup = async (query, limit = 200) => {
    this.flush();
    return this.thread.request('find', { path: this.path, query, limit });
  };

  /** How far back the history goes. */
  oldest(): Promise<string | undefined> {
    return this.thread.request('oldest', { path: this.path });
  }

  async prune(now = Date.now()): Promise<number> {
    const removed = await this.thread.request('prune', { path: this.path, before: new Date(now - this.opts.keepMs()).toISOString() });
    if (removed > 0) this.opts.logger.debug({ removed }, 'history pruned');
    return removed;
  }

  /** Writes what is buffered, waits for the writes under way, closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.pruner) clearInterval(this.pruner);
    await Promise.allSettled([...this.writes]);
    await this.thread.close();
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.buffer.length === 0) return;
    const events = this.buffer;
    this.buffer = [];
    this.sent += events.length;
    const write = this.thread.request('write', { path: this.path, events }).then(
      () => undefined,
      (err: unknown) => {
        this.pausedUntil = Date.now() + PAUSE_MS;
        this.opts.logger.warn({ path: this.path, err: { message: (err as Error).message }, pauseSeconds: PAUSE_MS / 1000 }, 'the delivery history could not be written; its events are dropped for a while, mail is not affected');
        this.dropped(events.length);
      },
    );
    this.writes.add(write);
    void write.finally(() => {
      this.sent -= events.length;
      this.writes.delete(write);
    });
  }

  private dropped(count: number): void {
    this.opts.onDropped?.(count);
    this.droppedSinceWarning += count;
    const now = Date.now();
    // one warning a minute at most, with the count since the last one
    if (now - this.warnedAt < 60_000) return;
    this.opts.logger.warn({ path: this.path, dropped: this.droppedSinceWarning }, 'delivery history events dropped (the writer is full, failing or stopped); see sendas_history_events_dropped_total');
    this.warnedAt = now;
    this.droppedSinceWarning = 0;
  }
}
