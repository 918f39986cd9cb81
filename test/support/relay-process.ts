import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface RelayProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** Every stdout line so far (JSON log lines). */
  readonly lines: string[];
  readonly stderr: () => string;
  /** Resolves with the first JSON log line after line index `after` that matches. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, opts?: { after?: number; timeoutMs?: number }): Promise<Record<string, unknown>>;
  /** Peak resident memory of the process so far, in bytes (Linux VmHWM). */
  peakRss(): number;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Runs `sendas serve` as a real process (the built CLI) and waits for its "listening" log line.
 * The config should set `listen.port: 0`: the port the OS picked is read from that line.
 * `cli` is the built CLI to run (default: this tree's dist/cli/main.js).
 */
export async function startRelayProcess(configFile: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 10_000, cli = CLI): Promise<RelayProcess> {
  const child = spawn(process.execPath, [cli, 'serve', '--config', configFile], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: { match: (l: Record<string, unknown>) => boolean; after: number; resolve: (l: Record<string, unknown>) => void }[] = [];
  const parse = (line: string): Record<string, unknown> | undefined => {
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`relay did not start within ${timeoutMs} ms; stderr: ${stderr}`)), timeoutMs);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      const parsed = parse(line);
      if (parsed) {
        for (const w of [...waiters]) {
          if (lines.length - 1 >= w.after && w.match(parsed)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(parsed);
          }
        }
      }
      try {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === 'sendas listening' && entry.port) {
          clearTimeout(timer);
          resolve(entry.port);
        }
      } catch {
        // not a JSON log line: log.format line writes "… INFO  sendas listening host=… port=N …"
        const port = / sendas listening .*\bport=(\d+)/.exec(line)?.[1];
        if (port) {
          clearTimeout(timer);
          resolve(Number(port));
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`relay exited with ${code} before listening; stderr: ${stderr}`));
    });
  });

  return {
    child,
    port,
    lines,
    stderr: () => stderr,
    waitForLog: (match, { after = 0, timeoutMs = 10_000 } = {}) => {
      for (const line of lines.slice(after)) {
        const parsed = parse(line);
        if (parsed && match(parsed)) return Promise.resolve(parsed);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`expected log line did not appear within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ match, after, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      });
    },
    peakRss: () => {
      const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
      const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
      return Number(kb) * 1024;
    },
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** A queue-mode relay.yaml in `dir` for the test upstream on `upstreamPort`: the server account and channel support with its own password file (support.secret). */
export function writeQueueRelayConfig(dir: string, upstreamPort: number, retry = '200ms'): string {
  const file = join(dir, 'relay.yaml');
  writeFileSync(
    file,
    `http: false
listen:
  port: 0
queue:
  retry: [${retry}]
servers:
  - name: main
    host: 127.0.0.1
    port: ${upstreamPort}
    security: none
    username: relay@acme.example
    password: server-secret-1
channels:
  - name: support
    address: support@acme.example
    override:
      password: {file: support.secret}
`,
  );
  return file;
}
