const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "15m" → 900000. Units: ms, s, m, h, d; a bare number is seconds. Undefined when not a duration. */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value * 1000 : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(value);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[(m[2] ?? 's').toLowerCase()]!);
}

/** 900000 → "15m": the largest unit that divides evenly, for logs and tables. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)}s` : `${ms}ms`;
}

/** A human age for tables: "3m", "2h 5m", "1d 4h". */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export interface Rate {
  readonly count: number;
  readonly windowMs: number;
}

/** "30/min" → 30 per 60 s. Windows: s, sec, second, m, min, minute, h, hour, d, day. */
export function parseRate(value: string): Rate | undefined {
  const m = /^\s*(\d+)\s*\/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$/i.exec(value);
  if (!m) return undefined;
  const unit = m[2]!.toLowerCase();
  const windowMs = unit.startsWith('s') ? 1000 : unit.startsWith('m') ? 60_000 : unit.startsWith('h') ? 3_600_000 : 86_400_000;
  const count = Number(m[1]);
  return count > 0 ? { count, windowMs } : undefined;
}
