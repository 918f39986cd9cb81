/**
 * Reading deploy/kubernetes as kubectl would, without a cluster: the kustomization's resources and
 * its ConfigMap generator put together, each object checked against the Kubernetes (and
 * prometheus-operator) schemas, and unknown keys found by TypeScript's excess-property check on the
 * models' own interfaces (the schemas' validators let unknown keys through; the API server with
 * kubectl's strict field validation would refuse them).
 */
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { ConfigMap, PersistentVolumeClaim, Secret, Service } from 'kubernetes-models/v1';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';

/** Any manifest object: what the checks read of it is narrowed where it is read. */
export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [key: string]: any };

/** A manifest object and the file it came from, for messages. */
export interface Loaded {
  readonly file: string;
  readonly obj: K8sObject;
}

interface Model {
  readonly validate: (obj: K8sObject) => void;
  /** The model's module and interface, for the unknown-key check. */
  readonly module: string;
}

const model = (module: string, Cls: new (data: never) => { validate(): void }): Model => ({ module, validate: (obj) => new Cls(obj as never).validate() });

/** Every kind deploy/kubernetes may hold; any other is an error (no schema to check it against). */
const MODELS: Record<string, Model> = {
  'v1/ConfigMap': model('kubernetes-models/v1/ConfigMap', ConfigMap),
  'v1/Secret': model('kubernetes-models/v1/Secret', Secret),
  'v1/Service': model('kubernetes-models/v1/Service', Service),
  'v1/PersistentVolumeClaim': model('kubernetes-models/v1/PersistentVolumeClaim', PersistentVolumeClaim),
  'apps/v1/StatefulSet': model('kubernetes-models/apps/v1/StatefulSet', StatefulSet),
  'apps/v1/Deployment': model('kubernetes-models/apps/v1/Deployment', Deployment),
  'policy/v1/PodDisruptionBudget': model('kubernetes-models/policy/v1/PodDisruptionBudget', PodDisruptionBudget),
  'networking.k8s.io/v1/NetworkPolicy': model('kubernetes-models/networking.k8s.io/v1/NetworkPolicy', NetworkPolicy),
  'monitoring.coreos.com/v1/ServiceMonitor': model('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor', ServiceMonitor),
};

const modelOf = (obj: K8sObject): Model => {
  const m = MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (!m) throw new Error(`${obj.apiVersion} ${obj.kind} ${obj.metadata?.name}: no schema known for this kind`);
  return m;
};

/** Every document of a multi-document YAML file; a YAML error is an error. */
export function readManifests(file: string): Loaded[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  const out: Loaded[] = [];
  for (const d of Array.isArray(docs) ? docs : [docs]) {
    if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
    const obj = d.toJS() as K8sObject | null;
    if (obj !== null) out.push({ file, obj });
  }
  return out;
}

/** Throws with the file, kind and name when the object breaks its schema. */
export function validateObject({ file, obj }: Loaded): void {
  try {
    modelOf(obj).validate(obj);
  } catch (err) {
    throw new Error(`${file}: ${obj.kind} ${obj.metadata?.name}: ${(err as Error).message}`);
  }
}

/**
 * Keys the objects' types do not have (a misspelt `readinesProbe`, a field at the wrong level):
 * each object becomes an object literal typed with its model's interface, and TypeScript's
 * excess-property check reports every unknown key at any depth. Returns one message per problem.
 */
export function unknownKeys(repo: string, objects: readonly Loaded[]): string[] {
  const virtual = join(repo, 'test/support/.kubernetes-keys.generated.ts');
  const starts: { at: number; what: string }[] = [];
  let text = '';
  objects.forEach(({ file, obj }, i) => {
    const { module } = modelOf(obj);
    text += `import type { I${obj.kind} as T${i} } from ${JSON.stringify(module)};\n`;
    starts.push({ at: 0, what: `${file}: ${obj.kind} ${obj.metadata?.name}` });
  });
  objects.forEach(({ obj }, i) => {
    starts[i]!.at = text.length;
    text += `export const o${i}: T${i} = ${JSON.stringify(obj, null, 1)};\n`;
  });
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
    // no DOM: only the models' types are needed, and the DOM's are most of what would be read
    lib: ['lib.es2022.d.ts'],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.fileExists = (f) => f === virtual || fileExists.call(host, f);
  host.readFile = (f) => (f === virtual ? text : readFile.call(host, f));
  host.getSourceFile = (f, lang, ...rest) => (f === virtual ? ts.createSourceFile(f, text, lang) : getSourceFile.call(host, f, lang, ...rest));
  const program = ts.createProgram([virtual], options, host);
  return ts
    .getPreEmitDiagnostics(program)
    .map((d) => {
      const where = d.file?.fileName === virtual && d.start !== undefined ? [...starts].reverse().find((s) => s.at <= d.start!)?.what : d.file?.fileName;
      return `${where ?? 'the generated check'}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
    });
}

export interface Kustomization {
  readonly resources?: string[];
  readonly components?: string[];
  readonly patches?: { path: string }[];
  readonly configMapGenerator?: { name: string; files: string[]; options?: { disableNameSuffixHash?: boolean; labels?: Record<string, string> } }[];
  readonly images?: { name: string; newName?: string; newTag?: string }[];
}

export function readKustomization(dir: string): Kustomization {
  const [doc] = readManifests(join(dir, 'kustomization.yaml'));
  return doc!.obj as unknown as Kustomization;
}

/**
 * The objects `kubectl kustomize DIR` makes, as far as this kustomization uses it: its resources
 * (files) and the generated ConfigMaps; `images` is left to kubectl (the manifests keep the name).
 */
export function assemble(dir: string): Loaded[] {
  const k = readKustomization(dir);
  const out: Loaded[] = (k.resources ?? []).flatMap((r) => readManifests(join(dir, r)));
  for (const g of k.configMapGenerator ?? []) {
    const data = Object.fromEntries(g.files.map((f) => [basename(f), readFileSync(join(dir, f), 'utf8')]));
    out.push({ file: join(dir, 'kustomization.yaml'), obj: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: g.name, ...(g.options?.labels ? { labels: g.options.labels } : {}) }, data } });
  }
  return out;
}

/** Whether a label selector's matchLabels (or a Service's selector map) picks a set of labels. */
export function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** Every {file: PATH} secret of a parsed config, wherever it is. */
export function fileSecrets(value: unknown, path = ''): { path: string; file: string }[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => fileSecrets(v, `${path}[${i}]`));
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (Object.keys(o).length === 1 && typeof o.file === 'string') return [{ path, file: o.file }];
    return Object.entries(o).flatMap(([k, v]) => fileSecrets(v, path ? `${path}.${k}` : k));
  }
  return [];
}

/** Every {env: NAME} of a parsed config. */
export function envSecrets(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(envSecrets);
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (Object.keys(o).length === 1 && typeof o.env === 'string') return [o.env];
    return Object.values(o).flatMap(envSecrets);
  }
  return [];
}
