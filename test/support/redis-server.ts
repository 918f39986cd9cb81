import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import { freePort } from './upstream.js';

/** A real redis-server (Debian's package) on a free loopback port, its own data directory, no persistence. */
export interface TestRedis {
  readonly port: number;
  readonly url: string;
  /** SIGKILL and wait: the replicas see Redis gone mid-load. */
  kill(): Promise<void>;
  /** Starts it again on the same port (empty: nothing was persisted). */
  restart(): Promise<void>;
  /** SIGSTOP: it keeps its connections but answers nothing (commands sent now stay in flight). */
  pause(): void;
  stop(): Promise<void>;
}

/** TLS only (no plain port): the server certificate and key, the CA it checks client certificates against, and whether it asks for one. */
export interface TestRedisTls {
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  readonly authClients: boolean;
}

export async function startRedis(opts: { password?: string; tls?: TestRedisTls; replicaOf?: number } = {}): Promise<TestRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sendas-redis-'));
  let child: ChildProcess | undefined;
  const launch = async () => {
    const t = opts.tls;
    const ports = t ? ['--port', '0', '--tls-port', String(port), '--tls-cert-file', t.certFile, '--tls-key-file', t.keyFile, '--tls-ca-cert-file', t.caFile, '--tls-auth-clients', t.authClients ? 'yes' : 'no'] : ['--port', String(port)];
    const args = [...ports, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning'];
    if (opts.password) args.push('--requirepass', opts.password);
    // a replica of a master with the same password (it signs in to it with that)
    if (opts.replicaOf !== undefined) args.push('--replicaof', '127.0.0.1', String(opts.replicaOf), ...(opts.password ? ['--masterauth', opts.password] : []));
    const c = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    let out = '';
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    await waitForPort(port, 5_000, () => out, c);
  };
  const halt = async (signal: NodeJS.Signals) => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill(signal);
    await exited;
  };
  await launch();
  const auth = opts.password ? `:${encodeURIComponent(opts.password)}@` : '';
  return {
    port,
    url: `${opts.tls ? 'rediss' : 'redis'}://${auth}127.0.0.1:${port}`,
    kill: () => halt('SIGKILL'),
    restart: launch,
    pause: () => void child?.kill('SIGSTOP'),
    stop: async () => {
      await halt('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A Sentinel (redis-server --sentinel) on a free port watching the master on `masterPort` as
 * `name`: quorum 1, a master unanswering for `downAfterMs` is failed over to its replica.
 */
export async function startSentinel(name: string, masterPort: number, opts: { authPass?: string; password?: string; downAfterMs?: number } = {}): Promise<{ readonly port: number; stop(): Promise<void> }> {
  const downAfterMs = opts.downAfterMs ?? 500;
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sendas-sentinel-'));
  // Sentinel rewrites its file (what it learnt): a file of its own, never a shared one
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(conf, [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor ${name} 127.0.0.1 ${masterPort} 1`, `sentinel down-after-milliseconds ${name} ${downAfterMs}`, `sentinel failover-timeout ${name} 5000`, ...(opts.authPass ? [`sentinel auth-pass ${name} ${opts.authPass}`] : []), ...(opts.password ? [`requirepass ${opts.password}`] : []), ''].join('\n'));
  const c = spawn('redis-server', [conf, '--sentinel', '--loglevel', 'warning'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  await waitForPort(port, 5_000, () => out, c);
  return {
    port,
    stop: async () => {
      if (c.exitCode === null) {
        const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
        c.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function waitForPort(port: number, timeoutMs: number, output: () => string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode}): ${output()}`);
    const open = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port} within ${timeoutMs} ms: ${output()}`);
    // polling a port that is not open yet: redis-server has no readiness event to wait for
    await new Promise((r) => setTimeout(r, 25));
  }
}
