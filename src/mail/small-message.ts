import { Readable } from 'node:stream';

/** The largest message handed whole to the upstream thread; the queue keeps the same bound in memory. */
export const SMALL_MESSAGE_BYTES = 64 * 1024;

/**
 * Reads a message stream until its end or until more than `limit` bytes have come.
 * Small: the whole message as one buffer (for the upstream thread). Larger: a stream that gives
 * the bytes already read and then the rest, as it arrives — memory stays bounded by `limit`.
 */
export function takeIfSmall(stream: Readable, limit = SMALL_MESSAGE_BYTES): Promise<{ bytes: Buffer } | { stream: Readable }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size <= limit) return;
      done();
      stream.pause();
      resolve({ stream: Readable.from(replay(chunks, stream), { objectMode: false }) });
    };
    const onEnd = () => {
      done();
      resolve({ bytes: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size) });
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('error', onError);
  });
}

async function* replay(head: Buffer[], rest: Readable): AsyncGenerator<Buffer> {
  yield* head;
  for await (const chunk of rest as AsyncIterable<Buffer>) yield chunk;
}
