/**
 * The compiled relay run as a pod of deploy/kubernetes runs it: relay.yaml and the Secret's keys
 * laid out as the kubelet projects a ConfigMap and a Secret (updates swap `..data`), a real Redis,
 * the image's environment with the pod's name as HOSTNAME, and where this machine allows a mount
 * namespace, a read-only root. Asked what the probes and the ServiceMonitor ask, updated live,
 * stopped with SIGTERM as the kubelet stops it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { freePort } from '../support/upstream.js';
import { IMAGE_ENV, RELAY, RELAY_YAML, REPO, container, pod, secret, secretKeys, volumeOf, type Mount } from '../support/kubernetes-deploy.js';

/**
 * A directory as the kubelet projects a ConfigMap or Secret: the files in a timestamped directory,
 * `..data` pointing at it, each key a symlink through `..data`; an update swaps `..data` atomically.
 */
function project(dir: string, files: Record<string, string>, generation: number): void {
  mkdirSync(dir, { recursive: true });
  const at = `..gen_${generation}`;
  mkdirSync(join(dir, at));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, at, name), content);
  symlinkSync(at, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const name of Object.keys(files)) if (!existsSync(join(dir, name))) symlinkSync(join('..data', name), join(dir, name));
}

/** Whether this machine lets root make a mount namespace (a container may not). */
const CAN_UNSHARE = spawnSync('unshare', ['--mount', '--propagation', 'private', 'true']).status === 0;

/**
 * A stand-in for the CLI that runs it as readOnlyRootFilesystem does: in a mount namespace of its
 * own with / read-only, /tmp (the pod's emptyDir, where the test's volumes also are) writable and
 * the config and secret directories read-only. Signals are passed on; its exit code is the relay's.
 */
function readOnlyRootCli(work: string, readOnly: string[]): string {
  const q = (x: string) => `'${x.replace(/'/g, `'\\''`)}'`;
  const script = ['set -e', 'mount --bind /tmp /tmp', ...readOnly.flatMap((d) => [`mount --bind ${q(d)} ${q(d)}`, `mount -o remount,bind,ro ${q(d)}`]), 'mount -o remount,bind,ro /', `exec ${q(process.execPath)} ${q(join(REPO, 'dist/cli/main.js'))} "$@"`].join('\n');
  const wrapper = join(work, 'read-only-root.mjs');
  writeFileSync(
    wrapper,
    `import { spawn } from 'node:child_process';
const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', ${JSON.stringify(script)}, 'sh', ...process.argv.slice(2)], { stdio: 'inherit' });
for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(s, () => child.kill(s));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
`,
  );
  return wrapper;
}

/** Polls until `ok` holds or the deadline passes (the kubelet's swap is seen through a debounced watch). */
async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe(`the relay as a pod runs it: ConfigMap and Secret projected by the kubelet, a real Redis${CAN_UNSHARE ? ', a read-only root' : ''}`, () => {
  const secretMount = (container.volumeMounts as Mount[]).find((m) => volumeOf(m)?.secret)!.mountPath;
  const configPath = (container.args as string[])[(container.args as string[]).indexOf('--config') + 1]!;
  const secretValues = (token: string, redisUrl: string) => Object.fromEntries(secretKeys(secret).map((k) => [k, k === 'redis-url' ? redisUrl : k === 'ops-token' ? token : `test-${k}-value`]));
  let work: string;
  let redis: TestRedis;
  let relay: RelayProcess;
  let httpPort: number;
  let configDir: string;
  let secretsDir: string;
  let redisUrl: string;
  let podText: (text: string) => string;
  const get = (path: string, token?: string) => fetch(`http://127.0.0.1:${httpPort}${path}`, token ? { headers: { authorization: `Bearer ${token}` } } : {});

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'sendas-k8s-pod-'));
    redis = await startRedis({ password: 'test-redis-password' });
    redisUrl = `redis://:test-redis-password@127.0.0.1:${redis.port}/0`;
    httpPort = await freePort();
    const smtpPort = await freePort();
    configDir = join(work, 'etc-sendas');
    secretsDir = join(work, 'run-secrets-sendas');
    // this machine's loopback and free ports instead of the pod's own interfaces and fixed ports;
    podText = (text) => text.replaceAll(`${secretMount}/`, `${secretsDir}/`).replaceAll('host: 0.0.0.0', 'host: 127.0.0.1').replace(`port: ${RELAY.listen.port}`, `port: ${smtpPort}`).replace(`port: ${RELAY.http.port}`, `port: ${httpPort}`) +
      // no DNS lookups from the test (the background deliverability check)
      '\ndeliverability:\n  check: false\n';
    project(secretsDir, secretValues('test-ops-token-1', redisUrl), 1);
    project(configDir, { [posix.basename(configPath)]: podText(RELAY_YAML) }, 1);
    // readOnlyRootFilesystem where this machine can show it (else the relay runs as it is)
    const cli = CAN_UNSHARE ? readOnlyRootCli(work, [configDir, secretsDir]) : undefined;
    relay = await startRelayProcess(join(configDir, posix.basename(configPath)), { ...IMAGE_ENV, SENDAS_QUEUE_DIR: join(work, 'queue'), SENDAS_STATE_DIR: join(work, 'state'), HOSTNAME: 'sendas-0' }, 30_000, cli);
  }, 60_000);
  afterAll(async () => {
    if (relay) await relay.stop();
    if (redis) await redis.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('answers every probe of the StatefulSet on its path, without a token', async () => {
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      const r = await get(container[probe].httpGet.path);
      expect(r.status, probe).toBe(200);
    }
  });

  it('serves /metrics to the ServiceMonitor\'s bearer token (the Secret\'s ops-token), and 401 without it', async () => {
    expect((await get('/metrics')).status).toBe(401);
    const r = await get('/metrics', 'test-ops-token-1');
    expect(r.status).toBe(200);
    expect(await r.text()).toContain('sendas_queue_depth');
  });

  it('joins the replicas\' registry in Redis under its pod name', async () => {
    const client = new Redis(redisUrl);
    try {
      await until('sendas-0 in the registry', async () => (await client.zrange('sendas:nodes', 0, -1)).includes('sendas-0'));
    } finally {
      client.disconnect();
    }
  });

  it('takes a Secret update (the ..data swap) live: the new token works, the old one no longer', async () => {
    project(secretsDir, secretValues('test-ops-token-2', redisUrl), 2);
    await until('the rotated token accepted', async () => (await get('/metrics', 'test-ops-token-2')).status === 200);
    expect((await get('/metrics', 'test-ops-token-1')).status).toBe(401);
  });

  it('takes a ConfigMap update (the ..data swap) live', async () => {
    const after = relay.lines.length;
    const edited = podText(RELAY_YAML).replace('agents:\n', 'agents:\n  - name: bob\n    address: bob@acme.example\n');
    project(configDir, { [posix.basename(configPath)]: edited }, 3);
    // (the Secret's reload line may still arrive after `after`: the one to wait for names the change)
    const line = await relay.waitForLog((l) => String(l.msg).startsWith('configuration reloaded') && String(l.msg).includes('agents:'), { after });
    expect(String(line.msg)).toContain('agents: +bob');
  });

  it('writes nothing beside its config and secret files (read-only mounts in the pod), only in the queue and state volumes', () => {
    const entries = (dir: string) => readdirSync(dir).filter((n) => !n.startsWith('..gen_')).sort();
    expect(entries(configDir)).toEqual(['..data', posix.basename(configPath)]);
    expect(entries(secretsDir)).toEqual(['..data', ...secretKeys(secret)].sort());
    // and nothing it tried to write failed (under the read-only root that would be EROFS)
    const problems = relay.lines.map((l) => JSON.parse(l) as { level: string; msg: string }).filter((l) => ['warn', 'error', 'fatal'].includes(l.level));
    expect(problems.map((l) => l.msg)).toEqual([]);
    expect(readdirSync(work).filter((n) => n !== 'read-only-root.mjs').sort()).toEqual(['etc-sendas', 'queue', 'run-secrets-sendas', 'state']);
  });

  it('stops on SIGTERM well within the grace the pod leaves after preStop, and leaves the registry', async () => {
    const preStop = Number(container.lifecycle.preStop.exec.command[1]);
    const started = Date.now();
    expect(await relay.stop()).toBe(0);
    expect(Date.now() - started).toBeLessThan((pod.terminationGracePeriodSeconds - preStop) * 1000);
    const client = new Redis(redisUrl);
    try {
      expect(await client.zrange('sendas:nodes', 0, -1)).not.toContain('sendas-0');
    } finally {
      client.disconnect();
    }
  });
});

