/**
 * The byte ranges of a Graph upload session. Microsoft: each PUT carries at most 4 MB and says
 * which bytes it holds ("Content-Range: bytes {start}-{end}/{total}", 0-based, end inclusive),
 * in order; upload sessions want every chunk but the last to be a multiple of 320 KiB.
 * 12 × 320 KiB = 3.75 MiB is the largest such chunk under 4 MiB.
 */
export const UPLOAD_CHUNK_UNIT = 320 * 1024;
export const UPLOAD_CHUNK_BYTES = 12 * UPLOAD_CHUNK_UNIT;

export interface ChunkRange {
  readonly start: number;
  readonly end: number;
  readonly total: number;
}

export function contentRange(r: ChunkRange): string {
  return `bytes ${r.start}-${r.end}/${r.total}`;
}

/** The ranges a file of `total` bytes is sent in, `chunkBytes` (a multiple of 320 KiB) at a time. */
export function chunkRanges(total: number, chunkBytes = UPLOAD_CHUNK_BYTES): ChunkRange[] {
  if (chunkBytes <= 0 || chunkBytes % UPLOAD_CHUNK_UNIT !== 0) throw new Error(`chunk size ${chunkBytes} is not a multiple of 320 KiB`);
  const ranges: ChunkRange[] = [];
  for (let start = 0; start < total; start += chunkBytes) ranges.push({ start, end: Math.min(start + chunkBytes, total) - 1, total });
  return ranges;
}

/**
 * Collects decoded pieces of an attachment into chunks of exactly `chunkBytes` (the last one
 * shorter) and hands each to `put` with its range, one at a time: at most one chunk is held.
 * The buffer is reused, so `put` must be done with it when its promise settles.
 */
export class ChunkedUpload {
  private readonly buffer: Buffer;
  private filled = 0;
  private sent = 0;

  constructor(
    private readonly total: number,
    private readonly put: (chunk: Buffer, range: ChunkRange) => Promise<void>,
    chunkBytes = UPLOAD_CHUNK_BYTES,
  ) {
    if (chunkBytes % UPLOAD_CHUNK_UNIT !== 0) throw new Error(`chunk size ${chunkBytes} is not a multiple of 320 KiB`);
    this.buffer = Buffer.allocUnsafe(Math.min(chunkBytes, Math.max(total, 1)));
  }

  async write(piece: Buffer): Promise<void> {
    let offset = 0;
    while (offset < piece.length) {
      if (this.sent + this.filled + (piece.length - offset) > this.total) throw new Error(`the attachment has more than the ${this.total} bytes it was measured at`);
      const n = piece.copy(this.buffer, this.filled, offset);
      this.filled += n;
      offset += n;
      if (this.filled === this.buffer.length) await this.flush();
    }
  }

  /** Sends what is left; the attachment must have had exactly `total` bytes. */
  async end(): Promise<void> {
    if (this.filled > 0) await this.flush();
    if (this.sent !== this.total) throw new Error(`the attachment has ${this.sent} bytes, not the ${this.total} it was measured at`);
  }

  private async flush(): Promise<void> {
    const range = { start: this.sent, end: this.sent + this.filled - 1, total: this.total };
    await this.put(this.buffer.subarray(0, this.filled), range);
    this.sent += this.filled;
    this.filled = 0;
  }
}
