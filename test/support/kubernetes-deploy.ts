/**
 * deploy/kubernetes as the tests read it: the objects `kubectl kustomize` would make (support/kubernetes.ts),
 * the relay's StatefulSet, container and Secret picked out of them, relay.yaml, and the relay's own
 * stop grace from src/. Shared by test/e2e/kubernetes.test.ts and kubernetes-pod.test.ts.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { envOf, runtimeStage } from './deploy-files.js';
import { assemble, readKustomization, readManifests, type K8sObject, type Loaded } from './kubernetes.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const DIR = join(REPO, 'deploy/kubernetes');
export const REDIS_DIR = join(DIR, 'redis');
export const read = (path: string) => readFileSync(join(REPO, path), 'utf8');
export const IMAGE_ENV = envOf(runtimeStage(read('Dockerfile')));

export const BASE = assemble(DIR);
export const REDIS_COMPONENT = readKustomization(REDIS_DIR);
export const REDIS = (REDIS_COMPONENT.resources ?? []).flatMap((r) => readManifests(join(REDIS_DIR, r)));
export const REDIS_PATCH = (REDIS_COMPONENT.patches ?? []).flatMap((p) => readManifests(join(REDIS_DIR, p.path)));

export const one = (objects: readonly Loaded[], kind: string, name?: string): K8sObject => {
  const found = objects.filter((o) => o.obj.kind === kind && (name === undefined || o.obj.metadata.name === name));
  expect(found.map((o) => `${o.obj.kind}/${o.obj.metadata.name}`), `exactly one ${kind}${name ? ` ${name}` : ''}`).toHaveLength(1);
  return found[0]!.obj;
};
export const all = (objects: readonly Loaded[], kind: string) => objects.filter((o) => o.obj.kind === kind).map((o) => o.obj);

export const sts = one(BASE, 'StatefulSet', 'sendas');
export const pod = sts.spec.template.spec;
export const container = pod.containers.find((c: { name: string }) => c.name === 'sendas');
export const secret = one(BASE, 'Secret', 'sendas');
export const RELAY_YAML = read('deploy/kubernetes/relay.yaml');
export const RELAY = parseYaml(RELAY_YAML) as { listen: { host: string; port: number }; http: { host: string; port: number; token: unknown }; cluster: { node_id?: string; redis: { url: unknown } }; queue?: { dir?: string }; state_dir?: string };

export type Port = { name?: string; containerPort: number };
export type Mount = { name: string; mountPath: string; subPath?: string; readOnly?: boolean };
export type Volume = { name: string; configMap?: { name: string }; secret?: { secretName: string }; emptyDir?: object };

/** A container port by name or number, as a targetPort or a probe's port names it. */
export const containerPort = (c: { ports?: Port[] }, ref: string | number): Port | undefined => c.ports?.find((p) => (typeof ref === 'number' ? p.containerPort === ref : p.name === ref));
export const mountOf = (path: string): Mount | undefined => (container.volumeMounts as Mount[]).find((m) => m.mountPath === path);
export const volumeOf = (m: Mount | undefined): Volume | undefined => (pod.volumes as Volume[]).find((v) => v.name === m?.name);
export const secretKeys = (s: K8sObject) => Object.keys({ ...(s.data ?? {}), ...(s.stringData ?? {}) }).sort();

/**
 * The relay's stop as src/ has it: the delivery grace (`shutdownGraceMs`' default) and smtp-server's
 * closeTimeout for sessions in progress. Read from the sources, so a change there fails here.
 */
export function relayStopMs(): { deliveriesMs: number; sessionsMs: number } {
  const num = (file: string, re: RegExp) => {
    const m = re.exec(read(file));
    if (!m) throw new Error(`${file} no longer matches ${re}: find the relay's stop grace again and update this test and terminationGracePeriodSeconds`);
    return Number(m[1]!.replace(/_/g, ''));
  };
  return { deliveriesMs: num('src/relay.ts', /shutdownGraceMs \?\? ([\d_]+)/), sessionsMs: num('src/listener/server.ts', /closeTimeout: ([\d_]+)/) };
}

