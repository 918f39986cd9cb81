import { ThreadClient } from '../threads/client.js';
import { workerModule } from '../threads/module.js';
import type { AppendPlace, FileProtocol } from './file-protocol.js';

export type { AppendPlace } from './file-protocol.js';

/**
 * The queue's file work — append small entries to the journal, write an entry file durably,
 * durable done marks — done by one worker thread (file-worker-thread.ts) with plain
 * synchronous system calls, off the relay's main thread.
 *
 * Why: profiles of the benchmark showed the main thread, which runs every SMTP session, spending
 * a fifth of its time dispatching these calls to libuv's thread pool one by one (open, write,
 * fsync, close, rename, the directory's fsync, unlink), each a round trip through the event loop.
 * Here requests travel in batches (ThreadClient), and the requests that arrive while the worker is
 * busy form its next batch: group commit, one write and one fdatasync for all the journal records
 * of a batch, every request answered only once it is durable.
 *
 * The done marks of delivered entries are not written here (file-done-marks.ts), nor are
 * delivered entry files deleted here (store.remove): both would wait behind the acceptances'
 * fsyncs, and a crash in that time delivers the message again.
 */
class FileWorker {
  private readonly thread = new ThreadClient<FileProtocol>({ name: 'sendas queue files', module: workerModule(import.meta.url, 'file-worker-thread') });

  /** Writes the chunks to `tmp` (created exclusively, mode 0600), renames it to `path` and fsyncs the directory. */
  writeEntry(tmp: string, path: string, chunks: Buffer[]): Promise<void> {
    return this.thread.request('write', { tmp, path, chunks });
  }

  /**
   * Appends a journal record to the journal directory's current segment and resolves once it is
   * durable. The first segment this process opens there is `firstSegment` (or the next free
   * number); a new one is opened once the current one holds `segmentBytes` or after an error.
   */
  append(dir: string, record: Buffer, firstSegment: number, segmentBytes: number): Promise<AppendPlace> {
    return this.thread.request('append', { dir, record, firstSegment, segmentBytes });
  }

  /**
   * Records durably that an entry of a segment is gone (it has a file of its own now), after the
   * requests answered before this one: an entry file written by then is durable before the mark.
   */
  markDone(dir: string, segment: number, id: string): Promise<void> {
    return this.thread.request('done', { dir, segment, id });
  }

  /** Deletes a segment none of whose entries is left (not the one being appended to). */
  release(dir: string, segment: number): Promise<void> {
    return this.thread.request('release', { dir, segment });
  }

  /** Closes the journal directory's files: the next append opens a new segment. */
  async closeJournal(dir: string): Promise<void> {
    if (this.thread.running) await this.thread.request('close', { dir });
  }

  /** Stops the thread at once (tests: a worker that dies). */
  terminate(): Promise<void> {
    return this.thread.terminate();
  }
}

/** One per process: every queue store shares it (the CLI and the tests open several). */
export const fileWorker = new FileWorker();
