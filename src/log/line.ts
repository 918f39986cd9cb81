import type { DestinationStream } from 'pino';

/** Fields every line has in its head (time, level, message) or that say nothing in a relay's own log. */
const HEAD = new Set(['time', 'level', 'msg', 'service', 'pid', 'hostname']);

/**
 * `log.format: line`: one human-readable line per event, for `docker logs` and terminals —
 * time, level, message, then the fields as key=value in the order they were logged. Addresses,
 * ids and hosts stay unquoted; a value with spaces, quotes or line breaks is quoted JSON-style,
 * so an event never spans two lines however long it is. Nested objects are flattened to
 * dotted keys (err.message=…, change.servers.added=backup).
 */
export function formatLine(json: string): string {
  let event: Record<string, unknown>;
  try {
    event = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.replace(/\r?\n/g, '\\n');
  }
  const parts = [String(event.time ?? ''), String(event.level ?? '').toUpperCase().padEnd(5), oneLine(String(event.msg ?? ''))];
  for (const [key, value] of Object.entries(event)) if (!HEAD.has(key)) pushField(parts, key, value, 0);
  return parts.join(' ');
}

function pushField(parts: string[], key: string, value: unknown, depth: number): void {
  if (value === undefined) return;
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && depth < 3) {
    for (const [k, v] of Object.entries(value)) pushField(parts, `${key}.${k}`, v, depth + 1);
    return;
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return;
    if (value.every((v) => v === null || typeof v !== 'object')) {
      parts.push(`${key}=${value.map((v) => scalar(v, true)).join(',')}`);
      return;
    }
  }
  parts.push(`${key}=${scalar(value, false)}`);
}

function scalar(value: unknown, inList: boolean): string {
  if (typeof value === 'string') return /^[^\s"=\\,]+$/.test(value) || (!inList && /^[^\s"=\\]+$/.test(value)) ? value : JSON.stringify(value);
  if (value === null || typeof value !== 'object') return String(value);
  return JSON.stringify(value);
}

function oneLine(text: string): string {
  return text.replace(/\r?\n/g, '\\n');
}

/** A pino destination that writes each event as one line (formatLine) to `out`. */
export function lineDestination(out: DestinationStream & { flush?: (cb?: (err?: Error) => void) => void }): DestinationStream & { flush: (cb?: (err?: Error) => void) => void } {
  return {
    write(chunk: string) {
      // pino writes one event per call, ending in "\n"
      out.write(`${formatLine(chunk.endsWith('\n') ? chunk.slice(0, -1) : chunk)}\n`);
    },
    flush(cb?: (err?: Error) => void) {
      if (out.flush) out.flush(cb);
      else cb?.();
    },
  };
}
