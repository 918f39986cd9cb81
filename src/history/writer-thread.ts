/**
 * The history's worker thread (its client and the reasons for it: writer.ts). better-sqlite3 is
 * synchronous: here it blocks nobody. The writes that arrive together (one batch from the main
 * thread, or several that queued up while the last transaction ran) are one transaction.
 */
import type Database from 'better-sqlite3';
import { ThreadServer, systemError } from '../threads/server.js';
import type { Request } from '../threads/protocol.js';
import { findEvents, inserter, oldestEvent, openForWriting, prune } from './db.js';
import type { HistoryProtocol } from './protocol.js';
import type { TraceEvent } from './types.js';

type HistoryRequest = Request<HistoryProtocol>;

interface Open {
  readonly db: Database.Database;
  readonly insert: (events: readonly TraceEvent[]) => void;
}

const open = new Map<string, Open>();

function db(path: string): Open {
  let o = open.get(path);
  if (!o) {
    const d = openForWriting(path);
    o = { db: d, insert: inserter(d) };
    open.set(path, o);
  }
  return o;
}

const server = new ThreadServer<HistoryProtocol>({
  receive(requests) {
    const writes = new Map<string, Extract<HistoryRequest, { op: 'write' }>[]>();
    for (const r of requests) {
      if (r.op === 'write') {
        const list = writes.get(r.body.path) ?? [];
        list.push(r);
        writes.set(r.body.path, list);
      }
    }
    for (const [path, list] of writes) {
      try {
        db(path).insert(list.flatMap((r) => r.body.events));
        for (const r of list) server.reply(r, undefined);
      } catch (err) {
        for (const r of list) server.fail(r, systemError(err));
      }
    }
    // reads after the writes of the same batch: a search sees what was recorded before it
    for (const r of requests) {
      try {
        if (r.op === 'open') server.reply(r, void db(r.body.path));
        else if (r.op === 'prune') server.reply(r, prune(db(r.body.path).db, r.body.before));
        else if (r.op === 'find') server.reply(r, findEvents(db(r.body.path).db, r.body.query, r.body.limit));
        else if (r.op === 'oldest') server.reply(r, oldestEvent(db(r.body.path).db));
      } catch (err) {
        server.fail(r, systemError(err));
      }
    }
  },
  close() {
    for (const o of open.values()) o.db.close();
    open.clear();
  },
});
