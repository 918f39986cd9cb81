import type { Path } from './raw.js';

export interface ConfigIssue {
  /** Key path such as "servers[0].security"; "" for the file as a whole. */
  readonly path: string;
  readonly line: number | undefined;
  readonly col: number | undefined;
  readonly message: string;
}

/** Reports a problem at a key path; `onKey`: point at the key itself rather than its value. */
export type ReportIssue = (path: Path, message: string, onKey?: boolean) => void;

export class ConfigError extends Error {
  readonly issues: readonly ConfigIssue[];
  readonly file: string;
  /** Secret files the file references, readable or not: a watcher keeps an eye on them. */
  readonly secretFiles: readonly string[];

  constructor(file: string, issues: ConfigIssue[], secretFiles: readonly string[] = []) {
    super(formatIssues(file, issues));
    this.name = 'ConfigError';
    this.file = file;
    this.issues = issues;
    this.secretFiles = secretFiles;
  }
}

export function formatIssues(file: string, issues: readonly ConfigIssue[]): string {
  const head = `${file}: ${issues.length} problem${issues.length === 1 ? '' : 's'} in the configuration`;
  return [head, ...issues.map((i) => `  ${formatIssue(file, i)}`)].join('\n');
}

export function formatIssue(file: string, issue: ConfigIssue): string {
  const where = issue.line !== undefined ? `${file}:${issue.line}:${issue.col ?? 1}` : file;
  return issue.path ? `${where} ${issue.path}: ${issue.message}` : `${where} ${issue.message}`;
}

export function formatPath(path: Path): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

/** In file order, so the list reads top to bottom like the file; issues without a position last. */
export function sortIssues(issues: readonly ConfigIssue[]): ConfigIssue[] {
  return [...issues].sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity) || (a.col ?? 0) - (b.col ?? 0));
}

/** The system's reason in the words an admin reads ("no such file"), not the errno symbol. */
export function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT') return 'no such file';
  if (e?.code === 'EACCES') return 'permission denied';
  if (e?.code === 'EISDIR') return 'is a directory';
  return e?.code ?? String(err);
}

/** The known key closest to a typo, when it is close enough to be what was meant. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
