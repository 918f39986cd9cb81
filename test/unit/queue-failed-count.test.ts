import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, expect, it } from 'vitest';
import { newMessageId } from '../../src/mail/message-id.js';
import { runQueueRequest } from '../../src/queue/control.js';
import { QueueStore } from '../../src/queue/store.js';
import { queueEntry } from './helpers.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** The failed area's size on /status and the status page: counted at start, kept as entries move. */
it('counts the failed area from init on: moved there, put back by retry, deleted, and again after a restart', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sendas-failed-'));
  dirs.push(dir);
  const store = new QueueStore(join(dir, 'queue'));
  await store.init();
  const accept = () => {
    const id = newMessageId();
    return store.accept(id, Readable.from([Buffer.from('Subject: x\r\n\r\nhi\r\n')]), (size) => queueEntry([{ address: 'a@example.net', status: 'failed', attempts: 1 }], { id, size, attempts: 1 }));
  };
  const [a, b, c] = [await accept(), await accept(), await accept()];
  expect(store.failedCount).toBe(0);
  for (const m of [a, b, c]) await store.moveToFailed(m);
  expect(store.failedCount).toBe(3);
  expect((await runQueueRequest(store, { op: 'retry', id: a.id })).ok).toBe(true);
  expect((await runQueueRequest(store, { op: 'delete', id: b.id })).ok).toBe(true);
  expect(store.failedCount).toBe(1);
  await store.close();

  const again = new QueueStore(join(dir, 'queue'));
  await again.init();
  expect(again.failedCount).toBe(1);
  await again.close();
});
