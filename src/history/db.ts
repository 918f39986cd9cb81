import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { TraceEvent, TraceEventKind } from './types.js';

/** The delivery history's file, in state_dir. */
export { HISTORY_FILE } from './protocol.js';

type Db = Database.Database;

/**
 * The history's one table: an event a row, the columns the TraceEvent's fields. Addresses compare
 * without regard to case (NOCASE: ASCII letters), as the queue and the config compare them.
 * WAL: `sendas trace` and the status page read while the relay writes.
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY,
  at TEXT NOT NULL,
  event TEXT NOT NULL,
  queue_id TEXT NOT NULL,
  message_id TEXT,
  envelope_from TEXT COLLATE NOCASE,
  recipient TEXT COLLATE NOCASE,
  identity TEXT,
  account TEXT,
  server TEXT,
  host TEXT,
  reply TEXT,
  attempt INTEGER,
  kind TEXT,
  fix TEXT
);
CREATE INDEX IF NOT EXISTS events_recipient ON events (recipient);
CREATE INDEX IF NOT EXISTS events_envelope_from ON events (envelope_from);
CREATE INDEX IF NOT EXISTS events_message_id ON events (message_id);
CREATE INDEX IF NOT EXISTS events_queue_id ON events (queue_id);
`;

/** The writer's connection: the file and its table made when missing. */
export function openForWriting(path: string): Db {
  mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  // the history is a record, not the queue: a power cut may lose its last events, never the mail
  db.pragma('synchronous = NORMAL');
  db.exec(SCHEMA);
  return db;
}

/** A reader's connection (sendas trace): undefined when there is no history yet. */
export function openForReading(path: string): Db | undefined {
  try {
    return new Database(path, { readonly: true, fileMustExist: true });
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_CANTOPEN') return undefined;
    throw err;
  }
}

/** Inserts events in one transaction (one commit for a whole batch). */
export function inserter(db: Db): (events: readonly TraceEvent[]) => void {
  const insert = db.prepare(
    `INSERT INTO events (at, event, queue_id, message_id, envelope_from, recipient, identity, account, server, host, reply, attempt, kind, fix)
     VALUES (@at, @event, @queueId, @messageId, @envelopeFrom, @recipient, @identity, @account, @server, @host, @reply, @attempt, @kind, @fix)`,
  );
  return db.transaction((events: readonly TraceEvent[]) => {
    for (const e of events) {
      insert.run({
        at: e.at,
        event: e.event,
        queueId: e.queueId,
        messageId: e.messageId ?? null,
        envelopeFrom: e.envelopeFrom ?? null,
        recipient: e.recipient ?? null,
        identity: e.identity ?? null,
        account: e.account ?? null,
        server: e.server ?? null,
        host: e.host ?? null,
        reply: e.reply ?? null,
        attempt: e.attempt ?? null,
        kind: e.kind ?? null,
        fix: e.fix ?? null,
      });
    }
  });
}

/** Deletes the events from before `before` (ISO time); returns how many. */
export function prune(db: Db, before: string): number {
  // rows come in time order: the old ones are those before the first new one, found without an index on time
  const first = db.prepare('SELECT seq FROM events WHERE at >= ? ORDER BY seq LIMIT 1').get(before) as { seq: number } | undefined;
  if (first) return db.prepare('DELETE FROM events WHERE seq < ?').run(first.seq).changes;
  return db.prepare('DELETE FROM events').run().changes;
}

/** What a query means: `<…>` dropped; with an `@` (or hashed, `h:…`) an address (recipient or envelope from) or a Message-ID, else a queue id or a Message-ID. */
export function normalizeQuery(query: string): string {
  const q = query.trim();
  return q.startsWith('<') && q.endsWith('>') ? q.slice(1, -1).trim() : q;
}

/** The events a query finds, oldest first: the newest `limit` of them. */
export function findEvents(db: Db, query: string, limit: number): TraceEvent[] {
  const q = normalizeQuery(query);
  if (q === '') return [];
  // an address, or its hash under log.redact (redact.ts), which may also be a Message-ID's
  const where = q.includes('@') || q.startsWith('h:') ? 'recipient = @q OR envelope_from = @q OR message_id = @q' : 'queue_id = @q OR message_id = @q';
  const rows = db.prepare(`SELECT * FROM (SELECT * FROM events WHERE ${where} ORDER BY seq DESC LIMIT @limit) ORDER BY seq`).all({ q, limit }) as Row[];
  return rows.map(eventOf);
}

/** The oldest event's time: how far back the history goes (undefined: empty). */
export function oldestEvent(db: Db): string | undefined {
  const row = db.prepare('SELECT min(at) AS at FROM events').get() as { at: string | null } | undefined;
  return row?.at ?? undefined;
}

interface Row {
  at: string;
  event: string;
  queue_id: string;
  message_id: string | null;
  envelope_from: string | null;
  recipient: string | null;
  identity: string | null;
  account: string | null;
  server: string | null;
  host: string | null;
  reply: string | null;
  attempt: number | null;
  kind: string | null;
  fix: string | null;
}

function eventOf(r: Row): TraceEvent {
  const e: Record<string, unknown> = { at: r.at, event: r.event as TraceEventKind, queueId: r.queue_id };
  const optional = { messageId: r.message_id, envelopeFrom: r.envelope_from, recipient: r.recipient, identity: r.identity, account: r.account, server: r.server, host: r.host, reply: r.reply, attempt: r.attempt, kind: r.kind, fix: r.fix };
  for (const [k, v] of Object.entries(optional)) if (v !== null) e[k] = v;
  return e as unknown as TraceEvent;
}
