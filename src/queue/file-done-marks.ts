import { closeSync, openSync } from 'node:fs';
import { PostBatch } from '../threads/post-batch.js';
import { writeAllSync } from './file-write.js';

interface Mark {
  readonly path: string;
  readonly id: string;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/**
 * The done marks of delivered and deleted journal entries, written by the main thread itself,
 * one write per .done file and event-loop turn, never fdatasync'd.
 *
 * Why not the file worker: its requests wait for the batch it is running, and then run after
 * that batch's writes and fdatasyncs — up to ~200 ms under load after the upstream's 250, and a
 * kill -9 in that time delivered the message a second time (0.5–1.9% of messages in one run). A
 * write() without fsync is all a mark needs to survive the process (the page cache stays), and it
 * does not wait behind another file's fsync. Marks that must be durable (an entry given a file of
 * its own) still go through the worker, after the file.
 */
export class DoneMarks {
  /** Open .done files (descriptors, O_APPEND): one open per segment, not per mark. */
  private readonly files = new Map<string, number>();
  private readonly pending = new PostBatch<Mark>((marks) => this.write(marks));

  /** Appends `id` to the .done file at `path` at the end of this turn; resolves once written. */
  mark(path: string, id: string): Promise<void> {
    return new Promise((resolve, reject) => this.pending.push({ path, id, resolve, reject }));
  }

  /** Writes what is asked now and closes the file (its segment is about to be deleted). */
  forget(path: string): void {
    this.pending.flush();
    this.closeFile(path);
  }

  /** Writes what is asked now and closes every file. */
  close(): void {
    this.pending.flush();
    for (const path of [...this.files.keys()]) this.closeFile(path);
  }

  private write(marks: Mark[]): void {
    const byFile = new Map<string, Mark[]>();
    for (const m of marks) {
      const same = byFile.get(m.path);
      if (same) same.push(m);
      else byFile.set(m.path, [m]);
    }
    for (const [path, ms] of byFile) {
      try {
        let fd = this.files.get(path);
        if (fd === undefined) this.files.set(path, (fd = openSync(path, 'a', 0o600)));
        writeAllSync(fd, [Buffer.from(ms.map((m) => `${m.id}\n`).join(''), 'latin1')]);
      } catch (err) {
        this.closeFile(path);
        for (const m of ms) m.reject(err as Error);
        continue;
      }
      for (const m of ms) m.resolve();
    }
  }

  private closeFile(path: string): void {
    const fd = this.files.get(path);
    if (fd === undefined) return;
    this.files.delete(path);
    try {
      closeSync(fd);
    } catch {}
  }
}
