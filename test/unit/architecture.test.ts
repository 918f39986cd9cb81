import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve, dirname, sep } from 'node:path';
import { describe, expect, it } from 'vitest';

const src = resolve(import.meta.dirname, '../../src');

/**
 * ARCHITECTURE.md's import rule, checked. Foundations (mail, errors, config, threads, log) import
 * only foundations listed before them. A stage imports foundations and the stages it hands work
 * to — listener → reception → queue / transport; delivery → queue, transport, notify — never one
 * that calls it. ops/ (metrics) is reported to from anywhere; cli/ and relay.ts wire everything.
 */
const ALLOWED: Record<string, readonly string[]> = {
  mail: [],
  errors: ['mail', 'threads'],
  config: ['mail', 'errors', 'log'],
  // the replicas' shared state (Redis): a foundation the stages that keep limits or tokens use
  cluster: ['mail', 'errors', 'config', 'log'],
  threads: [],
  log: [],
  ops: ['mail', 'errors', 'config', 'log', 'history', 'cluster'],
  history: ['mail', 'errors', 'config', 'log', 'threads'],
  listener: ['mail', 'errors', 'config', 'log', 'ops', 'reception', 'cluster'],
  reception: ['mail', 'errors', 'config', 'log', 'ops', 'history', 'queue', 'transport'],
  queue: ['mail', 'errors', 'config', 'log', 'ops', 'threads'],
  delivery: ['mail', 'errors', 'config', 'log', 'ops', 'history', 'queue', 'transport', 'notify', 'cluster'],
  notify: ['mail', 'errors', 'config', 'log', 'ops', 'queue'],
  transport: ['mail', 'errors', 'config', 'log', 'ops', 'threads', 'oauth', 'cluster'],
  oauth: ['mail', 'errors', 'config', 'log', 'cluster'],
  // reads the snapshot, looks up DNS, reports to /status (ops): nothing calls into it but the wiring
  deliverability: ['mail', 'errors', 'config', 'log', 'ops'],
  types: [],
};

function layerOf(file: string): string {
  const rel = relative(src, file).split(sep);
  return rel.length === 1 ? rel[0]!.replace(/\.(ts|js)$/, '') : rel[0]!;
}

function* sources(dir: string): Generator<string> {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* sources(path);
    else if (entry.name.endsWith('.ts')) yield path;
  }
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]!);
  return specs.map((spec) => resolve(dirname(file), spec));
}

describe('architecture', () => {
  it('every import runs toward a foundation or a stage the importer hands work to', () => {
    const wrong: string[] = [];
    for (const file of sources(src)) {
      const from = layerOf(file);
      const allowed = ALLOWED[from];
      if (allowed === undefined) continue; // cli/, relay.ts: the wiring
      for (const target of importsOf(file)) {
        const to = layerOf(target);
        if (to !== from && !allowed.includes(to)) wrong.push(`${relative(src, file)} imports ${relative(src, target)} (${from} → ${to})`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('knows every directory of src/ (a new one gets a row in ALLOWED and in ARCHITECTURE.md)', () => {
    const dirs = readdirSync(src, { withFileTypes: true }).filter((d) => d.isDirectory() && d.name !== 'cli').map((d) => d.name);
    expect(dirs.filter((d) => !(d in ALLOWED))).toEqual([]);
  });
});
