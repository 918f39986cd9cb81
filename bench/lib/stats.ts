/** Small statistics helpers: medians across runs, percentiles within a run. */

/** Median of the finite numbers given; undefined when there are none. */
export function median(values: readonly (number | undefined | null)[]): number | undefined {
  const nums = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v)).sort((a, b) => a - b);
  if (nums.length === 0) return undefined;
  const mid = Math.floor(nums.length / 2);
  return nums.length % 2 === 1 ? nums[mid]! : (nums[mid - 1]! + nums[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of the values; undefined when there are none. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}

/** Rounds to the given number of decimals (keeps undefined). */
export function round(value: number | undefined, decimals = 1): number | undefined {
  if (value === undefined) return undefined;
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

/** a / b, or undefined when either is missing or b is 0. */
export function ratio(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined || b === undefined || b === 0) return undefined;
  return a / b;
}

/**
 * Medians, key by key, of a list of flat records of numbers (one record per run). Keys missing
 * from a run are ignored for that run.
 */
export function medianRecord(runs: readonly Record<string, number | undefined>[]): Record<string, number | undefined> {
  const keys = new Set(runs.flatMap((r) => Object.keys(r)));
  const out: Record<string, number | undefined> = {};
  for (const key of keys) out[key] = median(runs.map((r) => r[key]));
  return out;
}
