/**
 * Reading the YAML document before it is validated: cross-key rules, presets and secrets look at
 * it even when the schema failed, so one `sendas check` lists every problem at once.
 */

export type Path = readonly (string | number)[];

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function asArray(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

export function getIn(value: unknown, path: Path): unknown {
  let cur = value;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[p];
  }
  return cur;
}
