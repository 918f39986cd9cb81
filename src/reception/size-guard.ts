import { Transform, type TransformCallback } from 'node:stream';
import { RelayError } from '../errors/relay-error.js';

/**
 * Stops the pipeline as soon as smtp-server flags the message as over `max_message_size`, so an
 * oversized message is never completed upstream while the client is told 552.
 */
export class SizeGuard extends Transform {
  constructor(
    private readonly source: { sizeExceeded?: boolean },
    private readonly limit: number,
  ) {
    super();
  }

  tooLarge(): RelayError {
    return new RelayError('message', { code: 552, enhanced: '5.3.4' }, `Message exceeds the maximum size of ${this.limit} bytes`);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.source.sizeExceeded) done(this.tooLarge());
    else done(null, chunk);
  }
}
