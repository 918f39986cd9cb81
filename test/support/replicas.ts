/**
 * Several `sendas serve` processes (the compiled CLI) sharing one Redis: each replica its own
 * config file, queue dir and state_dir, `listen.port: 0`, monitoring on a port picked by the OS.
 * For the cluster end-to-end tests (test/e2e/cluster*.test.ts).
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { startRelayProcess, type RelayProcess } from './relay-process.js';
import type { ReceivedMessage, TestUpstream } from './upstream.js';

export interface Replica {
  readonly node: string;
  readonly dir: string;
  readonly file: string;
  proc: RelayProcess;
  /** The monitoring port (http: port 0, read from the "monitoring on" line). */
  httpPort: number;
}

export interface ReplicaSet {
  readonly replicas: Replica[];
  /** Starts a replica again with the same config file, queue dir and state_dir (after a kill -9). */
  restart(r: Replica): Promise<void>;
  /** GET /status of a replica, parsed. */
  status(r: Replica): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/**
 * `servers` is the YAML of the servers: list (and `channels` of channels:), the same for every
 * replica; the cluster section names the node (r1, r2, …) and the shared key prefix.
 */
export async function startReplicas(opts: {
  count: number;
  redisUrl: string;
  prefix: string;
  servers: string;
  channels: string;
  cli: string;
  leaseTtl?: string;
  /** an age identity file's text: one key file for all replicas (`secrets.key_file`), which the shared OAuth tokens are encrypted to */
  secretKey?: string;
}): Promise<ReplicaSet> {
  const base = mkdtempSync(join(tmpdir(), `sendas-cluster-${opts.prefix}-`));
  const keyFile = join(base, 'secret.agekey');
  if (opts.secretKey) writeFileSync(keyFile, opts.secretKey, { mode: 0o600 });
  const replicas: Replica[] = [];
  const launch = async (r: Omit<Replica, 'proc' | 'httpPort'>): Promise<Replica> => {
    const proc = await startRelayProcess(r.file, {}, 15_000, opts.cli);
    const monitoring = await proc.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('monitoring on'));
    return { ...r, proc, httpPort: Number(monitoring.port) };
  };
  const made = Array.from({ length: opts.count }, (_, i) => {
    const node = `r${i + 1}`;
    const dir = join(base, node);
    mkdirSync(dir);
    const file = join(dir, 'relay.yaml');
    writeFileSync(
      file,
      `http: {host: 127.0.0.1, port: 0}
listen: {port: 0}
queue: {dir: ${join(dir, 'queue')}, retry: [200ms]}
state_dir: ${join(dir, 'state')}
deliverability: {check: false}
history: false
${opts.secretKey ? `secrets: {key_file: ${keyFile}}\n` : ''}cluster:
  redis: {url: ${opts.redisUrl}, key_prefix: ${opts.prefix}}
  node_id: ${node}
  lease_ttl: ${opts.leaseTtl ?? '2s'}
servers:
${opts.servers}
channels:
${opts.channels}
`,
    );
    return { node, dir, file };
  });
  replicas.push(...(await Promise.all(made.map(launch))));
  return {
    replicas,
    restart: async (r) => {
      const again = await launch(r);
      r.proc = again.proc;
      r.httpPort = again.httpPort;
    },
    status: async (r) => (await (await fetch(`http://127.0.0.1:${r.httpPort}/status`)).json()) as Record<string, unknown>,
    stop: async () => {
      await Promise.all(replicas.map((r) => r.proc.stop('SIGKILL')));
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/** A server entry of the test upstream for the servers: list, password sign-in. */
export function passwordServer(name: string, upstreamPort: number, extra = ''): string {
  return `  - name: ${name}
    host: 127.0.0.1
    port: ${upstreamPort}
    security: none
    username: ${name}@acme.example
    password: pw-${name}
${extra}`;
}

/** The channel that sends through a server (same address as the server's login). */
export function channelFor(server: string): string {
  return `  - {name: ${server}, address: ${server}@acme.example, server: ${server}}\n`;
}

export const UPSTREAM_ACCOUNT = (name: string) => ({ username: `${name}@acme.example`, password: `pw-${name}` });

/**
 * Sends `subjects` from the channel `from` to a replica as the legacy software would (nodemailer,
 * pooled, a few connections in parallel); resolves with the subjects that got a 250.
 */
export async function sendAll(port: number, from: string, subjects: readonly string[]): Promise<string[]> {
  const client = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true, pool: true, maxConnections: 3, maxMessages: Infinity });
  const accepted: string[] = [];
  await Promise.all(
    subjects.map((subject) =>
      client.sendMail({ from, to: 'customer@example.net', subject, text: `${subject}\n`, messageId: `<${subject}@test.example>` }).then(
        () => accepted.push(subject),
        () => undefined,
      ),
    ),
  );
  client.close();
  return accepted;
}

/** The Subject of a message the upstream received. */
export function subjectOf(m: ReceivedMessage): string {
  return /^Subject: (.*)$/m.exec(m.raw.toString('latin1').split('\r\n\r\n')[0]!)?.[1]?.trim() ?? '';
}

/** The messages of one login the upstream accepted. */
export function messagesOf(upstream: TestUpstream, login: string): ReceivedMessage[] {
  return upstream.messages.filter((m) => m.login === login);
}

/**
 * The most of `times` in any window of `windowMs`, sliding (each time opens a window). Callers
 * take the limiter's window less an allowance for the time from the relay's decision to what the
 * upstream recorded.
 */
export function mostInWindow(times: readonly number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[i]! - sorted[j]! >= windowMs) j++;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

/** Polls a condition (every 20 ms) until it holds; throws with `what` at the deadline. */
export async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string | (() => string)): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${typeof what === 'string' ? what : what()}`);
    // polling an outside condition (another process's state): there is no event to wait for
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The local TCP ports of a process's sockets (Linux /proc), to tell its upstream sessions from
 * the other replicas' (the upstream records each session's remote port).
 */
export function localPorts(pid: number): Set<number> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports = new Set<number>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && inodes.has(cols[9]!)) ports.add(parseInt(cols[1]!.split(':').at(-1)!, 16));
    }
  }
  return ports;
}
