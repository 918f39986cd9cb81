import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import { OpsServer } from '../../src/ops/http.js';
import { compiledCli, runProcess } from '../support/cli.js';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { swaks } from '../support/swaks.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, message, relayYaml, startRelay, type RunningRelay } from './harness.js';

/** Two relays sharing one Redis, as two replicas behind one load balancer would. */
describe('two relays sharing the guessing limiter through Redis; sendas status --cluster', () => {
  let redis: TestRedis;
  let upstream: TestUpstream;
  let a: RunningRelay;
  let b: RunningRelay;
  let cli: string;
  const prefix = `e2e${process.pid}`;

  const yaml = (node: string) =>
    relayYaml(
      upstream.port,
      `limits: {auth: {failures_per_address: 4, window: 1m, lockout: 1m, delay: 10ms, max_delay: 20ms}}\ncluster:\n  redis: {url: "${redis.url}", key_prefix: ${prefix}}\n  node_id: ${node}\n`,
    );
  const auth = (relay: RunningRelay, password: string) =>
    swaks({ server: '127.0.0.1', port: relay.port, auth: { user: 'crm', password }, from: 'crm@crm.local', to: 'customer@example.net', data: message({ From: 'support@acme.example', Subject: 'x' }) });
  const status = (...args: string[]) => runProcess(process.execPath, [cli, 'status', ...args, '--config', args.includes('--url') ? withToken : a.configFile], { cwd: a.dir, env: { PATH: process.env.PATH } });
  // relay a's monitoring port as `sendas serve` runs it, with http.token; the CLI's config names the token
  let ops: OpsServer;
  let opsUrl: string;
  let withToken: string;

  beforeAll(async () => {
    [redis, upstream, cli] = await Promise.all([startRedis({ password: 'redis-secret-7' }), startTestUpstream({ accounts: ACCOUNTS }), compiledCli(mkdtempSync(join(tmpdir(), 'sendas-status-cli-')))]);
    a = await startRelay(yaml('relay-a'), { ops: true });
    b = await startRelay(yaml('relay-b'));
    // b's first heartbeat was after a's: a sees it at its next one
    await a.relay.cluster!.registry.heartbeat();
    ops = new OpsServer({ ready: () => a.relay.ready(), status: () => a.relay.status(), registry: a.relay.metrics.registry, logger: pino({ level: 'silent' }), token: () => new Secret('ops-token-5', 'inline') });
    const at = await ops.listen('127.0.0.1', 0);
    opsUrl = `http://127.0.0.1:${at.port}`;
    withToken = join(a.dir, 'cli.yaml');
    writeFileSync(withToken, `${readFileSync(a.configFile, 'utf8')}\nhttp: {host: 127.0.0.1, port: ${at.port}, token: ops-token-5}\n`);
  }, 120_000);
  afterAll(async () => {
    await ops?.close();
    await a?.stop();
    await b?.stop();
    await upstream?.close();
    await redis?.stop();
  });

  it('wrong passwords on the first relay lock the address out on the second', async () => {
    for (let i = 0; i < 4; i++) expect((await auth(a, `wrong-guess-${i}`)).finalCode).toBe(535);
    await a.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('auth lockout scope=address address=127.0.0.1 failures=4'));
    const locked = await auth(b, 'crm-secret-4');
    expect(locked.finalReply).toMatch(/^454 4\.7\.0 Too many failed logins from this address/);
    expect(await b.metrics()).toMatch(/^sendas_client_limits_total\{limit="auth_lockout"\} 1$/m);
    expect(await a.metrics()).toMatch(/^sendas_cluster_redis_up 1$/m);
    expect(await a.metrics()).toMatch(/^sendas_cluster_nodes 2$/m);
  });

  it('/status has the cluster: Redis up and both replicas', async () => {
    const s = JSON.parse((await a.ops('/status')).text) as { cluster: { node: string; redis: string; nodes: { node: string }[] } };
    expect(s.cluster).toMatchObject({ node: 'relay-a', redis: 'up' });
    expect(s.cluster.nodes.map((n) => n.node)).toEqual(['relay-a', 'relay-b']);
    expect((await a.ops('/')).text).toContain('<tr data-node="relay-b">');
  });

  it('sendas status --cluster prints the registry from Redis; a clear sentence and exit 1 when Redis is gone', async () => {
    const table = await status('--cluster');
    expect(table.stderr).toBe('');
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`Redis 127.0.0.1:${redis.port} up, prefix ${prefix}: 2 replicas in the registry`);
    expect(lines[1]).toMatch(/^NODE\s+VERSION\s+CONFIG\s+QUEUED\s+HEARTBEAT$/);
    expect(lines[2]).toMatch(/^relay-a\s+\d+\.\d+\.\d+\S*\s+\S+\s+0\s+\d+s ago$/);
    expect(lines[3]).toMatch(/^relay-b\s/);
    expect(table.stdout).not.toContain('redis-secret-7');

    const json = JSON.parse((await status('--cluster', '--json')).stdout) as { redis: string; nodes: { node: string; queueDepth: number }[] };
    expect(json.nodes.map((n) => n.node)).toEqual(['relay-a', 'relay-b']);

    expect((await status()).code).toBe(2);

    await redis.kill();
    // it exits right after saying so, not after ioredis' 2 s disconnect timer: timed from its
    // message to its exit, so a slow start of the CLI on a loaded machine does not count
    const said = { at: 0 };
    const child = spawn(process.execPath, [cli, 'status', '--cluster', '--config', a.configFile], { cwd: a.dir, env: { PATH: process.env.PATH }, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr.once('data', () => (said.at = performance.now()));
    await new Promise((resolve) => child.once('exit', resolve));
    expect(performance.now() - said.at).toBeLessThan(1_000);
    const down = await status('--cluster');
    expect(down.code).toBe(1);
    expect(down.stdout).toBe('');
    expect(down.stderr).toMatch(new RegExp(`^sendas status --cluster: cannot reach the cluster's Redis at 127\\.0\\.0\\.1:${redis.port} \\(.+\\); `));
    expect(down.stderr).not.toContain('redis-secret-7');

    // the relay's own view while Redis is down: the replicas it last saw, and that it runs on its share
    for (const deadline = Date.now() + 10_000; a.relay.cluster!.up && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
    const seen = await status('--cluster', '--url', opsUrl);
    expect(seen.stderr).toBe('');
    expect(seen.code).toBe(0);
    expect(seen.stdout.split('\n')[0]).toMatch(new RegExp(`^relay-a at ${opsUrl}: Redis DOWN \\(.+\\), each replica on its own share \\(limits divided by 2\\) since \\S+; 2 replicas last seen$`));
    expect(seen.stdout).toMatch(/^relay-b\s/m);
    expect(seen.stdout).not.toContain('ops-token-5');
    writeFileSync(withToken, readFileSync(withToken, 'utf8').replace('token: ops-token-5', 'token: wrong-token'));
    const refused = await status('--cluster', '--url', opsUrl);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(`sendas status --cluster: the relay at ${opsUrl} refused the http.token of ${withToken}\n`);
  }, 40_000);
});
