/**
 * deploy/kubernetes as a cluster would take it, checked offline: every object against its schema
 * (kubernetes-models, prometheus-operator's models) and for unknown keys, then what no schema
 * sees — selectors, named ports, probes, the config and secret mounts, the stop's grace — and the
 * relay.yaml of the ConfigMap through the compiled `sendas check` (kubernetes-pod.test.ts runs it).
 * `kubectl kustomize` (built into kubectl) builds both variants when kubectl is on PATH.
 * `kubectl apply --dry-run=client` is not used: it asks an API server for the resource types even
 * with --validate=false.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { envSecrets, fileSecrets, readKustomization, readManifests, selects, unknownKeys, validateObject, type Loaded } from '../support/kubernetes.js';
import { BASE, DIR, IMAGE_ENV, REDIS, REDIS_COMPONENT, REDIS_DIR, REDIS_PATCH, RELAY, RELAY_YAML, REPO, all, container, containerPort, mountOf, one, pod, read, relayStopMs, secret, secretKeys, sts, volumeOf, type Mount } from '../support/kubernetes-deploy.js';

const KUBECTL = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;

describe('every manifest', () => {
  it('parses and each object passes its schema', () => {
    const objects = [...BASE, ...REDIS, ...REDIS_PATCH];
    expect(objects.length).toBeGreaterThan(8);
    for (const o of objects) validateObject(o);
  });

  it('has no key its kind does not know (what kubectl\'s strict field validation would refuse)', () => {
    expect(unknownKeys(REPO, [...BASE, ...REDIS])).toEqual([]);
  }, 60_000);

  it('is namespace-agnostic and every YAML file in the directory is used by a kustomization', () => {
    for (const { file, obj } of [...BASE, ...REDIS]) expect(obj.metadata.namespace, `${relative(REPO, file)} ${obj.kind}`).toBeUndefined();
    const used = new Set<string>();
    for (const [dir, k] of [[DIR, readKustomization(DIR)], [REDIS_DIR, REDIS_COMPONENT]] as const) {
      used.add(join(dir, 'kustomization.yaml'));
      for (const r of [...(k.resources ?? []), ...(k.patches ?? []).map((p) => p.path), ...(k.configMapGenerator ?? []).flatMap((g) => g.files)]) used.add(join(dir, r));
    }
    const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : d.name.endsWith('.yaml') ? [join(dir, d.name)] : []));
    expect(files(DIR).filter((f) => !used.has(f)).map((f) => relative(REPO, f))).toEqual([]);
  });
});

describe('the StatefulSet', () => {
  it('runs 3 replicas in parallel, its selector matching its pods, governed by a headless Service that selects them', () => {
    expect(sts.spec.replicas).toBe(3);
    expect(sts.spec.podManagementPolicy).toBe('Parallel');
    expect(selects(sts.spec.selector.matchLabels, sts.spec.template.metadata.labels)).toBe(true);
    const governing = one(BASE, 'Service', sts.spec.serviceName);
    expect(governing.spec.clusterIP).toBe('None');
    expect(selects(governing.spec.selector, sts.spec.template.metadata.labels)).toBe(true);
  });

  it('gives each pod a volume of its own for the queue and the state, where the image keeps them', () => {
    const templates = (sts.spec.volumeClaimTemplates as { metadata: { name: string } }[]).map((t) => t.metadata.name);
    for (const dir of [IMAGE_ENV.SENDAS_QUEUE_DIR!, IMAGE_ENV.SENDAS_STATE_DIR!]) {
      const m = mountOf(dir);
      expect(m, dir).toBeDefined();
      expect(templates).toContain(m!.name);
      expect(m!.readOnly).toBeFalsy();
    }
    // the container's env, where it names them, says the same as the image
    for (const e of (container.env ?? []) as { name: string; value?: string }[]) if (e.name in IMAGE_ENV) expect(e.value, e.name).toBe(IMAGE_ENV[e.name]);
    // a removed replica's queue is kept (it may still hold mail)
    expect(sts.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
  });

  it('runs as a non-root user with a read-only root, every directory the relay writes being a volume', () => {
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.securityContext.fsGroup).toBe(pod.securityContext.runAsGroup);
    expect(pod.securityContext.seccompProfile.type).toBe('RuntimeDefault');
    expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(volumeOf(mountOf('/tmp'))?.emptyDir).toBeDefined();
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(container.resources.requests.memory).toBeDefined();
    expect(container.resources.limits.memory).toBeDefined();
  });

  it('mounts the ConfigMap as the directory the container\'s --config names (no subPath: the symlink swap must reach the pod)', () => {
    const args = container.args as string[];
    expect(args[0]).toBe('serve');
    const config = args[args.indexOf('--config') + 1]!;
    expect(config).toBe(IMAGE_ENV.SENDAS_CONFIG);
    const m = mountOf(posix.dirname(config));
    expect(m, `a volume mounted at ${posix.dirname(config)}`).toBeDefined();
    expect(m!.subPath).toBeUndefined();
    expect(m?.readOnly).toBe(true);
    const cm = one(BASE, 'ConfigMap', volumeOf(m)?.configMap?.name);
    expect(Object.keys(cm.data)).toContain(posix.basename(config));
    expect(cm.data[posix.basename(config)]).toBe(RELAY_YAML);
    // a fixed name: a hashed one would roll every pod at each change instead of a live reload
    expect(readKustomization(DIR).configMapGenerator!.find((g) => g.name === cm.metadata.name)!.options?.disableNameSuffixHash).toBe(true);
  });

  it('mounts the Secret as files, holding every {file:} relay.yaml reads, and relay.yaml reads no {env:}', () => {
    const refs = fileSecrets(RELAY);
    expect(refs.map((r) => r.path).sort()).toEqual(expect.arrayContaining(['cluster.redis.url', 'http.token']));
    for (const r of refs) {
      const m = mountOf(posix.dirname(r.file));
      expect(m, `${r.path}: ${r.file} is not in a mounted directory`).toBeDefined();
      expect(m!.subPath).toBeUndefined();
      const v = volumeOf(m);
      expect(v?.secret?.secretName, r.path).toBe(secret.metadata.name);
      expect(secretKeys(secret), r.path).toContain(posix.basename(r.file));
    }
    expect(envSecrets(RELAY)).toEqual([]);
  });

  it('listens where its container ports say: SMTP on "smtp", monitoring on "monitoring", on every interface', () => {
    expect(containerPort(container, 'smtp')?.containerPort).toBe(RELAY.listen.port);
    expect(containerPort(container, 'monitoring')?.containerPort).toBe(RELAY.http.port);
    expect(RELAY.listen.host).toBe('0.0.0.0');
    expect(RELAY.http.host).toBe('0.0.0.0');
  });

  it('probes the monitoring port: /healthz for startup and liveness, /readyz for readiness', () => {
    for (const [probe, path] of [['startupProbe', '/healthz'], ['livenessProbe', '/healthz'], ['readinessProbe', '/readyz']] as const) {
      const p = container[probe] as { httpGet: { path: string; port: string | number } };
      expect(p?.httpGet?.path, probe).toBe(path);
      expect(containerPort(container, p.httpGet.port)?.containerPort, probe).toBe(RELAY.http.port);
    }
  });

  it('gives the stop more time than the relay takes: preStop, running deliveries, sessions in progress', () => {
    const { deliveriesMs, sessionsMs } = relayStopMs();
    const preStop = container.lifecycle.preStop.exec.command as string[];
    expect(preStop[0]).toBe('sleep');
    const needed = Number(preStop[1]) + (deliveriesMs + sessionsMs) / 1000;
    // and room for closing the queue, the pools and the history after the sessions
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(needed + 10);
    // the image stops on SIGTERM, which is what the kubelet sends
    expect(read('Dockerfile')).toMatch(/^STOPSIGNAL SIGTERM$/m);
  });
});

describe('Services, PodDisruptionBudget, ServiceMonitor', () => {
  const podLabels = sts.spec.template.metadata.labels as Record<string, string>;
  const services = all(BASE, 'Service');

  it('every Service selects the relay pods and targets a port its container has', () => {
    expect(services.map((s) => s.metadata.name).sort()).toEqual(['sendas-headless', 'sendas-monitoring', 'sendas-smtp']);
    for (const s of services) {
      expect(selects(s.spec.selector, podLabels), s.metadata.name).toBe(true);
      for (const p of s.spec.ports as { name: string; targetPort: string | number }[]) expect(containerPort(container, p.targetPort), `${s.metadata.name} ${p.name}`).toBeDefined();
    }
    const smtp = one(BASE, 'Service', 'sendas-smtp');
    expect(containerPort(container, smtp.spec.ports[0].targetPort)?.containerPort).toBe(RELAY.listen.port);
  });

  it('the PodDisruptionBudget lets one relay go at a time', () => {
    const pdb = one(BASE, 'PodDisruptionBudget');
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect(selects(pdb.spec.selector.matchLabels, podLabels)).toBe(true);
  });

  it('the ServiceMonitor scrapes only the monitoring Service, with the Secret key http.token reads, as job sendas', () => {
    const sm = one(BASE, 'ServiceMonitor');
    const picked = services.filter((s) => selects(sm.spec.selector.matchLabels, s.metadata.labels));
    expect(picked.map((s) => s.metadata.name)).toEqual(['sendas-monitoring']);
    const [endpoint] = sm.spec.endpoints as { port: string; path: string; authorization: { type: string; credentials: { name: string; key: string } } }[];
    const port = (picked[0]!.spec.ports as { name: string; targetPort: string }[]).find((p) => p.name === endpoint!.port);
    expect(containerPort(container, port!.targetPort)?.containerPort).toBe(RELAY.http.port);
    expect(endpoint!.path).toBe('/metrics');
    expect(endpoint!.authorization.type).toBe('Bearer');
    expect(endpoint!.authorization.credentials.name).toBe(secret.metadata.name);
    expect(endpoint!.authorization.credentials.key).toBe(posix.basename((RELAY.http.token as { file: string }).file));
    // deploy/prometheus/alerts.yml asks for job="sendas"
    expect(picked[0]!.metadata.labels?.[sm.spec.jobLabel]).toBe('sendas');
    expect(read('deploy/prometheus/alerts.yml')).toContain('up{job="sendas"}');
    // a relay answering 503 on /readyz is still scraped
    expect(picked[0]!.spec.publishNotReadyAddresses).toBe(true);
  });
});

describe('the optional Redis (redis/ component)', () => {
  const deployment = one(REDIS, 'Deployment');
  const service = one(REDIS, 'Service');
  const redisPod = deployment.spec.template;
  const patch = REDIS_PATCH[0]!.obj;

  it('is one Redis pod that the relay Services, the PDB and the relays\' own selectors do not pick', () => {
    expect(deployment.spec.replicas).toBe(1);
    expect(deployment.spec.strategy.type).toBe('Recreate');
    expect(selects(deployment.spec.selector.matchLabels, redisPod.metadata.labels)).toBe(true);
    expect(selects(service.spec.selector, redisPod.metadata.labels)).toBe(true);
    for (const s of [...all(BASE, 'Service').map((x) => x.spec.selector), sts.spec.selector.matchLabels, one(BASE, 'PodDisruptionBudget').spec.selector.matchLabels]) expect(selects(s, redisPod.metadata.labels)).toBe(false);
    const c = redisPod.spec.containers[0];
    expect(containerPort(c, service.spec.ports[0].targetPort)).toBeDefined();
    const policy = one(REDIS, 'NetworkPolicy');
    expect(selects(policy.spec.podSelector.matchLabels, redisPod.metadata.labels)).toBe(true);
    expect(selects(policy.spec.ingress[0].from[0].podSelector.matchLabels, sts.spec.template.metadata.labels)).toBe(true);
  });

  it('the Secret patch points redis-url at this Service with the password Redis starts with', () => {
    expect(patch.kind).toBe('Secret');
    expect(patch.metadata.name).toBe(secret.metadata.name);
    const url = new URL(patch.stringData['redis-url'] as string);
    expect(url.protocol).toBe('redis:');
    expect(url.hostname).toBe(service.metadata.name);
    expect(Number(url.port)).toBe(service.spec.ports[0].port);
    const env = (redisPod.spec.containers[0].env as { name: string; valueFrom: { secretKeyRef: { name: string; key: string } } }[]).find((e) => e.name === 'REDIS_PASSWORD')!;
    expect(env.valueFrom.secretKeyRef.name).toBe(secret.metadata.name);
    expect(decodeURIComponent(url.password)).toBe(patch.stringData[env.valueFrom.secretKeyRef.key]);
    // the key relay.yaml reads the URL from
    expect(Object.keys(patch.stringData)).toContain(posix.basename((RELAY.cluster.redis.url as { file: string }).file));
  });
});

describe('relay.yaml of the ConfigMap, with the Secret\'s keys as files where the pod mounts them', () => {
  const mountPath = (container.volumeMounts as Mount[]).find((m) => volumeOf(m)?.secret)!.mountPath;
  let work: string;
  let config: string;
  const values: string[] = [];
  const podEnv = () => ({ ...IMAGE_ENV, SENDAS_QUEUE_DIR: join(work, 'queue'), SENDAS_STATE_DIR: join(work, 'state'), HOSTNAME: 'sendas-1' });

  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'sendas-k8s-'));
    const secrets = join(work, 'secrets');
    mkdirSync(secrets);
    for (const key of secretKeys(secret)) {
      const value = key === 'redis-url' ? 'redis://127.0.0.1:6379/0' : `test-${key}-value`;
      if (key !== 'redis-url') values.push(value);
      writeFileSync(join(secrets, key), `${value}\n`);
    }
    config = join(work, 'relay.yaml');
    writeFileSync(config, RELAY_YAML.replaceAll(`${mountPath}/`, `${secrets}/`));
  });
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('passes the compiled `sendas check`, the queue and state in the pod\'s volumes', () => {
    const cli = join(REPO, 'dist/cli/main.js');
    expect(existsSync(cli), 'dist/ is built (npx tsc -p tsconfig.build.json)').toBe(true);
    const env = { PATH: process.env.PATH, ...podEnv() };
    const r = spawnSync(process.execPath, [cli, 'check', '--config', config], { encoding: 'utf8', env, cwd: work });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`${config}: OK`);
    expect(r.stdout).toContain(`queue ${env.SENDAS_QUEUE_DIR} (from SENDAS_QUEUE_DIR)`);
    expect(r.stdout).toContain(`state ${env.SENDAS_STATE_DIR} (from SENDAS_STATE_DIR)`);
    for (const v of values) expect(r.stdout).not.toContain(v);
  });

  it('leaves node_id to each pod (its host name is the pod name), which a shared ConfigMap could not give', () => {
    expect(RELAY.cluster.node_id).toBeUndefined();
    const s = parseConfig(readFileSync(config, 'utf8'), config, { env: podEnv() });
    expect(s.cluster && s.cluster.nodeId).toBe('sendas-1');
    expect(s.queue.dir).toBe(podEnv().SENDAS_QUEUE_DIR);
    expect(s.stateDir).toBe(podEnv().SENDAS_STATE_DIR);
  });
});

describe('deploy/kubernetes/README.md', () => {
  const README = read('deploy/kubernetes/README.md');

  it('gives the stop\'s numbers as the manifest and the relay have them', () => {
    const { deliveriesMs, sessionsMs } = relayStopMs();
    const preStop = Number(container.lifecycle.preStop.exec.command[1]);
    expect(README).toContain(`terminationGracePeriodSeconds: ${pod.terminationGracePeriodSeconds}`);
    expect(README).toContain(`\`preStop\` waits ${preStop} s`);
    expect(README).toContain(`running get ${deliveriesMs / 1000} s`);
    expect(README).toContain(`up to ${sessionsMs / 1000} s more`);
    expect(README).toContain(`${preStop} + ${deliveriesMs / 1000} + ${sessionsMs / 1000} = ${preStop + (deliveriesMs + sessionsMs) / 1000} s`);
    expect(README).toContain(`ready for ${sts.spec.minReadySeconds} s`);
  });

  it('names the files, claims, Services and user the manifests have', () => {
    for (const f of [...(readKustomization(DIR).resources ?? []), 'relay.yaml', 'redis/']) expect(README).toContain(`\`${f}\``);
    for (const t of sts.spec.volumeClaimTemplates as { metadata: { name: string }; spec: { resources: { requests: { storage: string } } } }[]) {
      expect(README).toContain(`\`${t.metadata.name}-sendas-N\` (${t.spec.resources.requests.storage}`);
    }
    for (const s of all(BASE, 'Service')) expect(README).toContain(`\`${s.metadata.name}\``);
    expect(README).toContain(`uid and gid ${pod.securityContext.runAsUser}`);
    expect(README).toContain('kubectl apply -k deploy/kubernetes');
    expect(README).toContain('components: [redis]');
  });
});

if (!KUBECTL) console.warn('kubernetes.test.ts: kubectl is not on PATH, so `kubectl kustomize` is not run (the manifests are still checked file by file)');

describe.skipIf(!KUBECTL)('kubectl kustomize (skipped when kubectl is not on PATH)', () => {
  const kustomize = (dir: string): Loaded[] => {
    const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = join(mkdtempSync(join(tmpdir(), 'sendas-kustomize-')), 'out.yaml');
    writeFileSync(out, r.stdout);
    return readManifests(out);
  };
  const names = (objects: readonly Loaded[]) => objects.map((o) => `${o.obj.kind}/${o.obj.metadata.name}`).sort();

  it('builds deploy/kubernetes into the same objects, the image from images:, each passing its schema', () => {
    const built = kustomize(DIR);
    expect(names(built)).toEqual(names(BASE));
    for (const o of built) validateObject(o);
    const [image] = readKustomization(DIR).images!;
    expect(one(built, 'StatefulSet').spec.template.spec.containers[0].image).toBe(`${image!.newName}:${image!.newTag}`);
    expect(one(built, 'ConfigMap', 'sendas').data['relay.yaml']).toBe(RELAY_YAML);
  });

  it('with the redis component enabled as README says (uncommenting it), adds Redis and merges the Secret', () => {
    const copy = mkdtempSync(join(tmpdir(), 'sendas-kustomize-'));
    cpSync(DIR, copy, { recursive: true });
    const k = readFileSync(join(copy, 'kustomization.yaml'), 'utf8');
    const enabled = k.replace(/^# components:\n#   - redis$/m, 'components:\n  - redis');
    expect(enabled, 'kustomization.yaml has the commented-out components: [redis]').not.toBe(k);
    writeFileSync(join(copy, 'kustomization.yaml'), enabled);
    const built = kustomize(copy);
    rmSync(copy, { recursive: true, force: true });
    expect(names(built)).toEqual(names([...BASE, ...REDIS]));
    for (const o of built) validateObject(o);
    const merged = one(built, 'Secret', 'sendas');
    expect(secretKeys(merged)).toEqual([...new Set([...secretKeys(secret), ...Object.keys(REDIS_PATCH[0]!.obj.stringData)])].sort());
    expect(merged.stringData['redis-url']).toBe(REDIS_PATCH[0]!.obj.stringData['redis-url']);
  });
});
