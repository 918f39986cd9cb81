/**
 * Summarizes a V8 .cpuprofile (node --cpu-prof; `npm run bench -- --cpu-prof DIR` writes one per
 * sendas process): self time by function and by file/package, and inclusive time of the
 * functions given with --focus, and the call paths (--depth frames up) that lead to the self
 * time of the functions given with --callers. No dependencies, so it runs anywhere:
 *
 *   npx tsx bench/cpuprofile-summary.ts PROFILE.cpuprofile [--top 30] [--focus name,name] [--callers name,name] [--depth 4]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function where(url: string): string {
  if (!url) return '(native)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith('node:')) return url;
  const dist = url.indexOf('/dist/');
  return dist >= 0 ? url.slice(dist + 1) : url.replace(/^file:\/\//, '');
}

function main(): void {
  const { values, positionals } = parseArgs({
    options: { top: { type: 'string', default: '30' }, focus: { type: 'string' }, callers: { type: 'string' }, depth: { type: 'string', default: '4' } },
    allowPositionals: true,
  });
  const file = positionals[0];
  if (!file) throw new Error('usage: tsx bench/cpuprofile-summary.ts PROFILE.cpuprofile [--top N] [--focus a,b]');
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const idle = [...self.entries()].filter(([id]) => byId.get(id)!.callFrame.functionName === '(idle)').reduce((a, [, t]) => a + t, 0);
  const busy = total - idle;
  const pct = (t: number) => `${((100 * t) / busy).toFixed(1).padStart(5)}%`;
  const msStr = (t: number) => `${(t / 1000).toFixed(0).padStart(7)} ms`;

  const fnSelf = new Map<string, number>();
  const fileSelf = new Map<string, number>();
  for (const [id, t] of self) {
    const f = byId.get(id)!.callFrame;
    if (f.functionName === '(idle)') continue;
    const key = `${f.functionName || '(anonymous)'}  ${where(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    fnSelf.set(key, (fnSelf.get(key) ?? 0) + t);
    fileSelf.set(where(f.url), (fileSelf.get(where(f.url)) ?? 0) + t);
  }
  const top = Number(values.top);
  console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (not idle); percentages are of busy time`);
  console.log('\nself time by package / file:');
  for (const [k, t] of [...fileSelf].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${msStr(t)} ${pct(t)}  ${k}`);
  console.log('\nself time by function:');
  for (const [k, t] of [...fnSelf].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${msStr(t)} ${pct(t)}  ${k}`);

  if (values.focus) {
    // inclusive time: a sample counts for a function when the function is anywhere on its stack
    console.log('\ninclusive time:');
    for (const name of values.focus.split(',')) {
      let t = 0;
      for (const [id, dt] of self) {
        for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
          if (byId.get(cur)!.callFrame.functionName === name) {
            t += dt;
            break;
          }
        }
      }
      console.log(`${msStr(t)} ${pct(t)}  ${name}`);
    }
  }

  if (values.callers) {
    const depth = Number(values.depth);
    const frame = (id: number) => {
      const f = byId.get(id)!.callFrame;
      return `${f.functionName || '(anonymous)'}@${where(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    };
    for (const name of values.callers.split(',')) {
      const paths = new Map<string, number>();
      for (const [id, dt] of self) {
        if (byId.get(id)!.callFrame.functionName !== name) continue;
        const chain: string[] = [];
        for (let cur = parent.get(id); cur !== undefined && chain.length < depth; cur = parent.get(cur)) chain.push(frame(cur));
        const key = chain.join(' < ');
        paths.set(key, (paths.get(key) ?? 0) + dt);
      }
      console.log(`\nself time of ${name}, by caller chain (nearest first):`);
      for (const [k, t] of [...paths].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${msStr(t)} ${pct(t)}  ${k}`);
    }
  }
}

main();
