/** The history's file in state_dir. Here, not in db.ts, so the main thread never loads SQLite for a name. */
export const HISTORY_FILE = 'history.sqlite';

import type { TraceEvent } from './types.js';

/**
 * The history's writer thread (writer-thread.ts) and its client (writer.ts). Every request names
 * the file: the thread opens it at the first one, so it needs no start-up message of its own.
 */
export type HistoryProtocol = {
  /** Appends events; all the writes of one batch of requests are one transaction. */
  write: { request: { path: string; events: TraceEvent[] }; reply: void };
  /** Deletes the events from before `before` (ISO time); replies how many. */
  prune: { request: { path: string; before: string }; reply: number };
  /** The events a query finds (db.ts findEvents), oldest first. */
  find: { request: { path: string; query: string; limit: number }; reply: TraceEvent[] };
  /** Opens (or creates) the file, so the thread and the file are ready before the first message. */
  open: { request: { path: string }; reply: undefined };
  /** The oldest event's time, if any. */
  oldest: { request: { path: string }; reply: string | undefined };
};
