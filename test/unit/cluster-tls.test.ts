/** rediss:// to a Redis that speaks only TLS (Debian's redis-server), with a private CA and client certificates. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../../src/cluster/cluster.js';
import { Secret } from '../../src/config/secret.js';
import type { ClusterConfig } from '../../src/config/types.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/tls', import.meta.url));
const CA = readFileSync(join(FIXTURES, 'ca.pem'), 'utf8');

let dir: string;
let open: TestRedis;
let strict: TestRedis;
let client: { cert: string; key: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sendas-redis-tls-'));
  // a client certificate from the test CA (its fixture certificate is for servers only)
  const key = join(dir, 'client.key');
  const csr = join(dir, 'client.csr');
  const cert = join(dir, 'client.pem');
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=sendas-replica'], { stdio: 'ignore' });
  execFileSync('bash', ['-c', `openssl x509 -req -in "$1" -CA "$2" -CAkey "$3" -set_serial 0x$(openssl rand -hex 8) -days 1 -out "$4" -extfile <(printf 'extendedKeyUsage=clientAuth')`, 'x', csr, join(FIXTURES, 'ca.pem'), join(FIXTURES, 'ca.key'), cert], { stdio: 'ignore', cwd: dir });
  client = { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
  const tls = { certFile: join(FIXTURES, 'server.pem'), keyFile: join(FIXTURES, 'server.key'), caFile: join(FIXTURES, 'ca.pem') };
  open = await startRedis({ tls: { ...tls, authClients: false } });
  strict = await startRedis({ tls: { ...tls, authClients: true } });
});
afterAll(async () => {
  await open?.stop();
  await strict?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A replica's store against `url`, started; the caller stops it. */
async function replica(url: string, tls?: ClusterConfig['tls']): Promise<Cluster> {
  const config: ClusterConfig = { url: new Secret(url, 'inline'), ...(tls ? { tls } : {}), keyPrefix: `tls${process.pid}`, nodeId: 'r1', leaseTtlMs: 3_000 };
  const c = new Cluster({ config, logger: pino({ level: 'silent' }), configVersion: () => 'v1', queueDepth: () => 0, startedAt: new Date() });
  await c.start();
  return c;
}

describe('cluster.redis over TLS (real redis-server, TLS only)', () => {
  it('verifies Redis against cluster.redis.tls.ca; without it the system CAs refuse the private one and the replica runs on its shares', async () => {
    const trusted = await replica(open.url, { ca: CA });
    expect(trusted.up).toBe(true);
    expect(trusted.status().nodes.map((n) => n.node)).toEqual(['r1']);
    await trusted.stop();

    const system = await replica(open.url);
    expect(system.up).toBe(false);
    expect(system.status()).toMatchObject({ redis: 'down', problem: expect.stringMatching(/certificate/i) });
    await system.stop();
  });

  it('a Redis that asks for client certificates (tls-auth-clients yes) lets in the replica with cert and key, and no other', async () => {
    const withCert = await replica(strict.url, { ca: CA, cert: client.cert, key: new Secret(client.key, 'inline') });
    expect(withCert.up).toBe(true);
    expect(await withCert.store.run((r) => r.ping())).toBe('PONG');
    await withCert.stop();

    const without = await replica(strict.url, { ca: CA });
    expect(without.up).toBe(false);
    await without.stop();
  });
});
