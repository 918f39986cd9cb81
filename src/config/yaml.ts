import { isMap, isScalar, LineCounter, parseDocument, type Document, type YAMLError } from 'yaml';
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
  const syntaxIssues = syntaxIssuesOf(doc.errors, text, lineCounter);
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
 * The library's errors, each at the line of the mistake and in indentation words where the
 * mistake is one. A key indented deeper than the one above it makes the library report the line
 * above (where the value it now seems to continue starts) twice: that is one mistake, on the line
 * below. Errors on a line already reported are follow-ons of that mistake.
 */
function syntaxIssuesOf(errors: readonly YAMLError[], text: string, lc: LineCounter): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const reported = new Set<number>();
  for (const err of errors) {
    const indentation = indentationMistake(err, text, lc);
    const start = lc.linePos(err.pos[0]).line;
    const { line, col } = indentation ?? lc.linePos(err.pos[0]);
    if (reported.has(start) || reported.has(line)) continue;
    reported.add(start).add(line);
    issues.push({ path: '', line, col, message: indentation?.message ?? `YAML syntax: ${yamlErrorText(err.code, err.message)}` });
  }
  return issues;
}

function indentationMistake(err: YAMLError, text: string, lc: LineCounter): { line: number; col: number; message: string } | undefined {
  const start = lc.linePos(err.pos[0]).line;
  if (err.code === 'BLOCK_AS_IMPLICIT_KEY' || err.code === 'MULTILINE_IMPLICIT_KEY') {
    // the mistake is the next line that says something: the key written too deep
    const lines = text.split(/\r?\n/);
    let line = start + 1;
    while (line <= lines.length && lines[line - 1]!.trim() === '') line++;
    if (line > lines.length) return undefined;
    const at = lineStart(lines[line - 1]!, line);
    return { ...at, message: `YAML syntax: wrong indentation: ${at.key}is indented deeper than the line above it, so YAML reads it as part of that line's value; line it up with the keys beside it` };
  }
  const written = text.split(/\r?\n/)[start - 1] ?? '';
  if (err.code === 'BAD_INDENT' || (err.code === 'MISSING_CHAR' && /without - indicator/.test(err.message))) {
    const at = lineStart(written, start);
    return { ...at, message: `YAML syntax: wrong indentation: ${at.key}is not at the same column as the keys above it; line it up with them, or indent it under the key it belongs to` };
  }
  return undefined;
}

/** Where a line's text starts and its key ("port: " → `"port:" `), named only when it is a plain key (never a value's text). */
function lineStart(text: string, line: number): { line: number; col: number; key: string } {
  const col = text.length - text.trimStart().length + 1;
  const key = /^\s*(?:- +)?([A-Za-z0-9_.-]+):(?:\s|$)/.exec(text)?.[1];
  return { line, col, key: key ? `"${key}:" ` : '' };
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
