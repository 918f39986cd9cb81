/**
 * Processes, ports and /proc readings for the benchmark harness.
 *
 * Every child the harness starts is tracked, and every external resource (a Postfix instance)
 * registers a synchronous cleanup, so an exception, Ctrl-C or SIGTERM never leaves a relay, a
 * sink or a Postfix master running.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createServer, connect } from 'node:net';

const children = new Set<ChildProcess>();
const cleanups = new Set<() => void>();
let installed = false;

function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping everything it started\n`);
      cleanupAll();
      process.exit(130);
    });
  }
}

/** Kills every tracked child (SIGKILL) and runs every registered cleanup. Synchronous. */
export function cleanupAll(): void {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const fn of [...cleanups]) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
  cleanups.clear();
}

/** Registers a synchronous cleanup run at exit; returns its remover. */
export function onCleanup(fn: () => void): () => void {
  installHandlers();
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** spawn() whose child is killed when the harness exits, however it exits. */
export function spawnTracked(command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  installHandlers();
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', () => children.delete(child));
  return child;
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command to its end (asynchronously, so timers of the harness keep running). */
export function run(command: string, args: readonly string[], options: SpawnOptions = {}): Promise<CommandResult> {
  const started = performance.now();
  const child = spawnTracked(command, args, options);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - started }));
  });
}

/** Like run(), but a non-zero exit is an error naming the command and its output. */
export async function runOk(command: string, args: readonly string[], options: SpawnOptions = {}): Promise<CommandResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited with ${result.code}: ${(result.stderr || result.stdout).trim().slice(0, 2000)}`);
  }
  return result;
}

/** Resolves when the child exits (immediately when it already has). */
export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** SIGTERM, then SIGKILL after `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited(child);
  clearTimeout(timer);
}

/** A loopback TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Waits until something on 127.0.0.1:port answers with an SMTP greeting; resolves with the
 * time (performance.now()) the greeting arrived. The probe says QUIT and leaves.
 */
export async function waitForGreeting(port: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const at = await new Promise<number | undefined>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let buffer = '';
      const done = (value: number | undefined) => {
        socket.removeAllListeners();
        socket.on('error', () => undefined);
        socket.destroy();
        resolve(value);
      };
      socket.setTimeout(Math.max(100, deadline - performance.now()), () => done(undefined));
      socket.on('data', (d: Buffer) => {
        buffer += d.toString('latin1');
        if (/^220[ -].*\r?\n/m.test(buffer)) {
          const now = performance.now();
          socket.write('QUIT\r\n');
          done(now);
        }
      });
      socket.once('error', () => done(undefined));
      socket.once('close', () => done(undefined));
    });
    if (at !== undefined) return at;
    if (performance.now() > deadline) throw new Error(`nothing greeted on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await sleep(20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** VmRSS and VmHWM (peak RSS) of a process, in kB; undefined when it is gone. */
export function memoryOf(pid: number): { rssKb: number; hwmKb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    const hwm = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
    if (rss === undefined || hwm === undefined) return undefined;
    return { rssKb: Number(rss), hwmKb: Number(hwm) };
  } catch {
    return undefined;
  }
}

/** Proportional set size in kB (shared pages divided among their users); 0 when the process is gone. */
export function pssOf(pid: number): number {
  try {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    return Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name may contain spaces and parentheses: split after the last ')'
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU time in clock ticks: the process itself and its reaped children. */
export function cpuTicksOf(pid: number): { self: number; reapedChildren: number } | undefined {
  const f = statFields(pid);
  if (!f) return undefined;
  // fields after the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14)
  return { self: Number(f[11]) + Number(f[12]), reapedChildren: Number(f[13]) + Number(f[14]) };
}

/** Clock ticks per second for /proc/PID/stat (USER_HZ, 100 on Linux). */
export const TICKS_PER_SECOND = 100;

/** Direct children of a process (scans /proc). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(Number(name));
    if (f && Number(f[1]) === pid) out.push(Number(name));
  }
  return out;
}

/**
 * Samples a memory reading (kB) at a fixed interval and keeps its peak. Used for Postfix, whose
 * footprint is the sum over its processes (no single VmHWM), and for sendas's RSS over time.
 */
export class MemorySampler {
  private timer: NodeJS.Timeout | undefined;
  private peak = 0;
  private last = 0;
  private count = 0;

  constructor(
    private readonly read: () => number,
    private readonly intervalMs = 50,
  ) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    return this;
  }

  sample(): number {
    const value = this.read();
    this.last = value;
    this.count++;
    if (value > this.peak) this.peak = value;
    return value;
  }

  stop(): { peakKb: number; lastKb: number; samples: number } {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    return { peakKb: this.peak, lastKb: this.last, samples: this.count };
  }
}
