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

/**
 * The listeners of `listen:` with their key paths: the single mapping is "listen", a list's items
 * "listen[0]", …, so every message points at the place the key is written.
 */
export function listenEntries<T>(listen: T | readonly T[] | undefined): [string, T][] {
  if (Array.isArray(listen)) return listen.map((l, i) => [`listen[${i}]`, l as T]);
  return listen === undefined || listen === null ? [] : [['listen', listen as T]];
}

/** The same, as a YAML path for issue positions. */
export function listenPath(path: string): Path {
  const m = /^listen\[(\d+)\]$/.exec(path);
  return m ? ['listen', Number(m[1])] : ['listen'];
}
