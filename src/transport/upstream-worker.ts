/**
 * The upstream side of queue delivery, in a worker thread (see upstream-thread.ts): nodemailer
 * pools keyed and fingerprinted by the main thread, messages read from the queue file or handed
 * over in memory, results sent back as plain data for the main thread to classify.
 */
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { parentPort } from 'node:worker_threads';
import type { Transporter } from 'nodemailer';
import type SMTPPool from 'nodemailer/lib/smtp-pool';
import { PostBatch } from '../threads/post-batch.js';
import { createPool, sendRaw } from './pools.js';
import { plainUpstreamError, type UpstreamRequest, type UpstreamReply } from './upstream-protocol.js';

const port = parentPort!;
const pools = new Map<string, { fingerprint: string; transporter: Transporter<SMTPPool.SentMessageInfo> }>();

function openConnections(): number {
  let open = 0;
  for (const { transporter } of pools.values()) open += (transporter.transporter as unknown as { _connections?: unknown[] })._connections?.length ?? 0;
  return open;
}

const replies = new PostBatch<UpstreamReply>((batch) => port.postMessage(batch));
function reply(message: UpstreamReply): void {
  replies.push(message);
}

port.on('message', (batch: UpstreamRequest[]) => {
  for (const req of batch) handle(req);
});

function handle(req: UpstreamRequest): void {
  if (req.op === 'retain') {
    for (const [key, entry] of pools) {
      if (req.wanted[key] !== entry.fingerprint) {
        entry.transporter.close();
        pools.delete(key);
      }
    }
    return;
  }
  if (req.op === 'close') {
    for (const { transporter } of pools.values()) transporter.close();
    pools.clear();
    replies.flush();
    port.close();
    return;
  }
  let pool = pools.get(req.key);
  if (!pool || pool.fingerprint !== req.fingerprint) {
    if (!req.options) {
      // the main thread sends the options with the first message of a pool it has not seen: it believes this one exists
      reply({ seq: req.seq, error: { message: 'upstream worker: pool options missing', code: 'EPOOL' }, open: openConnections() });
      return;
    }
    pool?.transporter.close();
    pool = { fingerprint: req.fingerprint, transporter: createPool(req.options) };
    pools.set(req.key, pool);
  }
  const message =
    'bytes' in req.message
      ? Readable.from([Buffer.from(req.message.bytes.buffer, req.message.bytes.byteOffset, req.message.bytes.byteLength)], { objectMode: false })
      : req.message.size === 0
        ? Readable.from([], { objectMode: false })
        : createReadStream(req.message.path, { start: 0, end: req.message.size - 1 });
  sendRaw(pool.transporter, req.envelope, message).then(
    (info) =>
      reply({
        seq: req.seq,
        info: {
          accepted: (info.accepted ?? []).map(String),
          rejectedErrors: ((info as { rejectedErrors?: unknown[] }).rejectedErrors ?? []).map(plainUpstreamError),
          response: info.response ?? '',
        },
        open: openConnections(),
      }),
    (err: unknown) => reply({ seq: req.seq, error: plainUpstreamError(err), open: openConnections() }),
  );
}

// the main thread waits for this before the relay says it is listening
port.postMessage('ready');
