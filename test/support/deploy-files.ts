/**
 * Reading the deployment files as their tools would (as far as a machine without a Docker engine
 * allows): the Dockerfile's last stage, README's shell commands, `docker run`'s options.
 */

export interface Instruction {
  readonly op: string;
  readonly args: string;
}

/** Logical lines: `\` continuations joined, comment lines dropped (also inside a continuation). */
function logicalLines(text: string, comment = /^\s*#/): string[] {
  const out: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    if (comment.test(raw)) continue;
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (full) out.push(full);
  }
  return out;
}

/** The instructions of the Dockerfile's last stage (the image that runs). */
export function runtimeStage(dockerfile: string): Instruction[] {
  const all = logicalLines(dockerfile).map((l) => {
    const m = /^(\w+)\s+(.*)$/s.exec(l);
    if (!m) throw new Error(`not a Dockerfile instruction: ${l}`);
    return { op: m[1]!.toUpperCase(), args: m[2]! };
  });
  const from = all.map((i) => i.op).lastIndexOf('FROM');
  return all.slice(from + 1);
}

export function jsonArray(args: string): string[] {
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error(`not an exec-form array: ${args}`);
  return parsed;
}

/** `ENV A=1 B=2` (the form this Dockerfile uses). */
export function envOf(stage: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of stage.filter((x) => x.op === 'ENV')) {
    for (const pair of words(i.args)) {
      const eq = pair.indexOf('=');
      if (eq <= 0) throw new Error(`ENV without NAME=value: ${i.args}`);
      env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return env;
}

export function last(stage: Instruction[], op: string): string | undefined {
  return stage.filter((i) => i.op === op).at(-1)?.args;
}

/** Shell words: whitespace-separated, with '…' and "…" quoting (no expansion). */
export function words(line: string): string[] {
  const out: string[] = [];
  const re = /'([^']*)'|"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let current = '';
  let last = -1;
  for (const m of line.matchAll(re)) {
    const piece = m[1] ?? m[2] ?? m[3] ?? '';
    // adjacent pieces (a='b'c) are one word
    if (m.index === last) current += piece;
    else {
      if (last !== -1) out.push(current);
      current = piece;
    }
    last = m.index + m[0].length;
  }
  if (last !== -1) out.push(current);
  return out;
}

/** The body of a README section (from its `## ` heading to the next heading of that level). */
export function section(readme: string, heading: string): string {
  const start = readme.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README has no section ${heading}`);
  const level = heading.split(' ')[0]!;
  const rest = readme.slice(start + heading.length + 2);
  const next = rest.search(new RegExp(`^${level} `, 'm'));
  return next < 0 ? rest : rest.slice(0, next);
}

/** Commands of the ```sh blocks in a piece of README, continuations joined, `# …` comments cut. */
export function shellCommands(markdown: string): string[] {
  const out: string[] = [];
  for (const m of markdown.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const line of logicalLines(m[1]!)) out.push(line.replace(/\s+#\s.*$/, '').trim());
  }
  return out;
}

export interface DockerRun {
  readonly name?: string;
  readonly publish: { hostIp?: string; host: number; container: number }[];
  readonly volumes: { source: string; target: string; readOnly: boolean; named: boolean }[];
  /** `-e NAME` (from the caller's environment) or `-e NAME=value`. */
  readonly env: { name: string; value?: string }[];
  readonly image: string;
  readonly command: string[];
}

export function parseDockerRun(command: string): DockerRun {
  const w = words(command);
  if (w[0] !== 'docker' || w[1] !== 'run') throw new Error(`not docker run: ${command}`);
  const run: { -readonly [K in keyof DockerRun]: DockerRun[K] } = { publish: [], volumes: [], env: [], image: '', command: [] };
  let i = 2;
  for (; i < w.length && w[i]!.startsWith('-'); i++) {
    const opt = w[i]!;
    if (opt === '-d' || opt === '--rm') continue;
    const value = w[++i];
    if (value === undefined) throw new Error(`${opt} without a value`);
    if (opt === '--name') run.name = value;
    else if (opt === '--restart') continue;
    else if (opt === '-p') {
      const parts = value.split('/')[0]!.split(':');
      const [container, host, hostIp] = [Number(parts.at(-1)), Number(parts.at(-2) ?? parts.at(-1)), parts.length === 3 ? parts[0] : undefined];
      run.publish.push({ hostIp, host, container });
    } else if (opt === '-v') {
      const [source, target, mode] = value.split(':') as [string, string, string | undefined];
      run.volumes.push({ source, target, readOnly: mode === 'ro', named: !source.startsWith('/') && !source.startsWith('.') });
    } else if (opt === '-e') {
      const eq = value.indexOf('=');
      run.env.push(eq < 0 ? { name: value } : { name: value.slice(0, eq), value: value.slice(eq + 1) });
    } else throw new Error(`docker run option the test does not know: ${opt}`);
  }
  run.image = w[i] ?? '';
  run.command = w.slice(i + 1);
  return run;
}

/** Every `{env: NAME}` of a YAML config. */
export function envReferences(yaml: string): string[] {
  const names = new Set<string>();
  for (const line of yaml.split('\n')) {
    const code = line.replace(/(^|\s)#.*$/, '');
    for (const m of code.matchAll(/\{\s*env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}/g)) names.add(m[1]!);
  }
  return [...names].sort();
}
