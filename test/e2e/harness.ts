import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { loadConfigText } from '../../src/config/load.js';
import { OpsServer } from '../../src/ops/http.js';
import { Relay } from '../../src/relay.js';

export interface RunningRelay {
  readonly port: number;
  /** Every listener's port, in the order of `listen:` (the first is `port`). */
  readonly ports: readonly number[];
  /** The directory holding relay.yaml (and var/queue by default). */
  readonly dir: string;
  readonly configFile: string;
  /** Every log line the relay wrote, parsed. */
  readonly logs: Record<string, unknown>[];
  /** The raw log output, for grepping secrets. */
  rawLog(): string;
  /** Resolves with the first log line (already written or still to come) that matches. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, opts?: { after?: number; timeoutMs?: number }): Promise<Record<string, unknown>>;
  /** Re-reads relay.yaml (and its secret files) as a SIGHUP would. */
  reload(): Promise<void>;
  /** The /metrics text. */
  metrics(): Promise<string>;
  /** With `ops: true`: GETs a monitoring path (/status, /metrics) from the relay's real ops server. */
  ops(path: string): Promise<{ status: number; text: string }>;
  stop(): Promise<void>;
  /** The Relay object itself, e.g. for /readyz through an OpsServer. */
  readonly relay: Relay;
}

/**
 * Starts the real Relay object with the given YAML, every listener on a free loopback port.
 * Unless the YAML says otherwise, the background DNS check is off (tests stay on loopback; it
 * would ask the system's resolver) and so is the delivery history (its thread and file cost a
 * third of a second per relay; `history: true` here, or a `history:` key, keeps the relay's default).
 */
export async function startRelay(yaml: string, opts: { env?: NodeJS.ProcessEnv; shutdownGraceMs?: number; ops?: boolean; history?: boolean } = {}): Promise<RunningRelay> {
  const dir = mkdtempSync(join(tmpdir(), 'sendas-e2e-'));
  const file = join(dir, 'relay.yaml');
  if (!/^deliverability:/m.test(yaml)) yaml = `${yaml}\ndeliverability: {check: false}\n`;
  if (!opts.history && !/^history:/m.test(yaml)) yaml = `${yaml}\nhistory: false\n`;
  writeFileSync(file, yaml);
  // as the CLI loads it: {age: …} secrets are decrypted
  const snapshot = await loadConfigText(yaml, file, { env: opts.env ?? {} });
  const chunks: string[] = [];
  const waiters: { match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      for (const text of chunk.toString().split('\n').filter(Boolean)) {
        const line = JSON.parse(text) as Record<string, unknown>;
        for (const w of [...waiters]) {
          if (w.match(line)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
      done();
    },
  });
  const parsedLogs = () =>
    chunks
      .join('')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const logger = pino({ level: 'debug', base: { service: 'sendas' } }, sink);
  const relay = new Relay({ snapshot, logger, hostname: 'relay.test', ...(opts.shutdownGraceMs !== undefined ? { shutdownGraceMs: opts.shutdownGraceMs } : {}) });
  const address = await relay.start({ host: '127.0.0.1', port: 0 });
  const ops = opts.ops ? new OpsServer({ ready: () => relay.ready(), status: () => relay.status(), registry: relay.metrics.registry, logger, trace: relay.trace }) : undefined;
  const opsPort = ops ? (await ops.listen('127.0.0.1', 0)).port : undefined;
  return {
    port: address.port,
    ports: relay.addresses.map((a) => a.port),
    dir,
    configFile: file,
    get logs() {
      return parsedLogs();
    },
    rawLog: () => chunks.join(''),
    waitForLog: (match, { after = 0, timeoutMs = 10_000 } = {}) => {
      const existing = parsedLogs().slice(after).find(match);
      if (existing) return Promise.resolve(existing);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('expected log line did not appear')), timeoutMs);
        waiters.push({ match, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      });
    },
    reload: () => relay.reloadFromFile('test').then(() => undefined),
    metrics: () => relay.metrics.registry.metrics(),
    ops: async (path) => {
      if (opsPort === undefined) throw new Error('startRelay without ops: true');
      const res = await fetch(`http://127.0.0.1:${opsPort}${path}`);
      return { status: res.status, text: await res.text() };
    },
    stop: async () => {
      await ops?.close();
      await relay.stop();
    },
    relay,
  };
}

/** A relay config in front of one test upstream. */
export function relayYaml(upstreamPort: number, extra = '', serverExtra = '', delivery = 'passthrough'): string {
  return `
delivery: ${delivery}
listen:
  max_message_size: 2MB
servers:
  - name: main
    default: true
    host: 127.0.0.1
    port: ${upstreamPort}
    security: none
    auth: login
    username: relay@acme.example
    password: server-secret-1
${serverExtra}
channels:
  - name: support
    address: support@acme.example
    display_name: Acme Support
    override:
      password: support-secret-2
  - name: sales
    address: sales@acme.example
agents:
  - name: alice
    address: alice@acme.example
    override:
      password: alice-secret-3
  - name: bob
    address: bob@acme.example
    override:
clients:
  - username: crm
    password: crm-secret-4
  - username: alice-desk
    password: alice-desk-secret-5
    send_as: [alice]
${extra}`;
}

export const ACCOUNTS = [
  { username: 'relay@acme.example', password: 'server-secret-1' },
  { username: 'support@acme.example', password: 'support-secret-2' },
  { username: 'alice@acme.example', password: 'alice-secret-3' },
];

export const SECRETS = ['server-secret-1', 'support-secret-2', 'alice-secret-3', 'crm-secret-4', 'alice-desk-secret-5'];

/** A message as legacy software writes it, CRLF line endings. */
export function message(headers: Record<string, string>, body = 'Hello,\r\n\r\nyour ticket #4711 was updated.\r\n'): string {
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/** Header section and body of a received message. */
export function split(raw: Buffer): { head: string; body: Buffer } {
  const end = raw.indexOf('\r\n\r\n');
  return { head: raw.subarray(0, end + 2).toString('utf8'), body: raw.subarray(end + 4) };
}

export function headerValues(head: string, name: string): string[] {
  return head
    .replace(/\r\n[ \t]/g, ' ')
    .split('\r\n')
    .filter((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))
    .map((l) => l.slice(name.length + 1).trim());
}
