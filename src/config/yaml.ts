import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { formatPath, type ConfigIssue } from './issues.js';
import type { Path } from './raw.js';

/** A parsed relay.yaml that can say where (line, column) any key path of it is written. */
export interface PositionedYaml {
  /** Syntax errors: when there are any, nothing else about the file is checked. */
  readonly syntaxIssues: ConfigIssue[];
  readonly value: unknown;
  issueAt(path: Path, message: string, onKey?: boolean): ConfigIssue;
}

export function parseYaml(text: string): PositionedYaml {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const syntaxIssues = doc.errors.map((err): ConfigIssue => {
    const pos = lineCounter.linePos(err.pos[0]);
    return { path: '', line: pos.line, col: pos.col, message: `YAML syntax: ${yamlErrorText(err.code, err.message)}` };
  });
  return {
    syntaxIssues,
    value: syntaxIssues.length > 0 ? undefined : doc.toJS(),
    issueAt(path, message, onKey = false) {
      const pos = positionOf(doc, lineCounter, path, onKey);
      return { path: formatPath(path), line: pos?.line, col: pos?.col, message };
    },
  };
}

function positionOf(doc: Document, lc: LineCounter, path: Path, onKey: boolean): { line: number; col: number } | undefined {
  // walk up until a node that exists: a missing key is reported where its parent is
  for (let depth = path.length; depth >= 0; depth--) {
    const sub = path.slice(0, depth);
    if (onKey && depth === path.length && sub.length > 0) {
      const parent = sub.length === 1 ? doc.contents : doc.getIn(sub.slice(0, -1), true);
      if (isMap(parent)) {
        const key = sub[sub.length - 1];
        const pair = parent.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === key);
        const range = pair && isScalar(pair.key) ? pair.key.range : undefined;
        if (range) return lc.linePos(range[0]);
      }
      continue;
    }
    const node = sub.length === 0 ? doc.contents : doc.getIn(sub, true);
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    if (range) return lc.linePos(range[0]);
  }
  return undefined;
}

/**
 * The yaml library quotes source text in some messages ("Invalid escape sequence \\Uhunter22"),
 * and that text can be part of a password written inline. Only the library's own words are kept.
 */
function yamlErrorText(code: string, message: string): string {
  if (code === 'BAD_DQ_ESCAPE') return 'invalid escape sequence in a double-quoted string (use single quotes for values with backslashes)';
  const first = (message.split('\n')[0] ?? message).replace(/ at line \d+, column \d+:?$/, '');
  return first.replace(/\\\S*/g, '…').replace(/"[^"]*"|'[^']*'/g, '…');
}
