const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  KB: 1024,
  K: 1024,
  MB: 1024 ** 2,
  M: 1024 ** 2,
  GB: 1024 ** 3,
  G: 1024 ** 3,
};

/**
 * "25MB" → bytes. Units are binary (1 MB = 1,048,576 bytes), like Postfix's and most mail
 * servers' limits; a bare number is bytes. Returns undefined when the text is not a size.
 */
export function parseSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  if (!m) return undefined;
  const factor = UNITS[m[2]!.toUpperCase()];
  if (factor === undefined) return undefined;
  const bytes = Math.floor(Number(m[1]) * factor);
  return bytes > 0 ? bytes : undefined;
}

export function formatSize(bytes: number): string {
  if (bytes % 1024 ** 3 === 0) return `${bytes / 1024 ** 3}GB`;
  if (bytes % 1024 ** 2 === 0) return `${bytes / 1024 ** 2}MB`;
  if (bytes % 1024 === 0) return `${bytes / 1024}KB`;
  return `${bytes}B`;
}
