/**
 * The queue's file worker (file-worker-thread.ts) and its client (file-worker.ts). Buffers
 * arrive as Uint8Array (structured cloning drops the Buffer prototype).
 */
export type FileProtocol = {
  /** Writes `chunks` to `tmp` (created exclusively, 0600), fsyncs it, renames it to `path`, fsyncs the directory. */
  write: { request: { tmp: string; path: string; chunks: Uint8Array[] }; reply: void };
  /** Deletes a file; one already gone is not an error. */
  /** Appends a record to the directory's current segment, durably. */
  append: { request: { dir: string; record: Uint8Array; firstSegment: number; segmentBytes: number }; reply: AppendPlace };
  /** A durable done mark: written and fdatasync'd (the directory too, once per .done file). */
  done: { request: { dir: string; segment: number; id: string }; reply: void };
  /** Deletes a segment's files unless it is the one being appended to. */
  release: { request: { dir: string; segment: number }; reply: void };
  /** Closes the journal directory's files. */
  close: { request: { dir: string }; reply: void };
};

/** An append's place: the segment and the record's offset in it. */
export interface AppendPlace {
  readonly segment: number;
  readonly offset: number;
}
