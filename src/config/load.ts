import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { checkDkim } from './dkim.js';
import { checkCluster, clusterTokenWarnings } from './cluster.js';
import { decryptSecrets, type Decryption } from './decrypt.js';
import { ConfigError, errnoText, sortIssues, type ConfigIssue } from './issues.js';
import { withPreset } from './presets.js';
import { checkListeners } from './listeners.js';
import { isRecord } from './raw.js';
import { checkPresetNames, checkRelations } from './relations.js';
import { configSchema } from './schema.js';
import { reportSchemaIssue } from './schema-issues.js';
import { resolveSecrets, secretFilesOf } from './secret-refs.js';
import { buildSnapshot } from './snapshot.js';
import { KEY_FILE_ENV } from './secret-key.js';
import type { ConfigSnapshot, ConfigWarning } from './types.js';
import { parseYaml } from './yaml.js';

export { closest, ConfigError, formatIssue, formatIssues, formatPath, type ConfigIssue } from './issues.js';

export interface LoadOptions {
  /** Environment to resolve {env: NAME} secrets and the secret key from; defaults to process.env. */
  readonly env?: NodeJS.ProcessEnv;
}

export interface ParseOptions extends LoadOptions {
  /** The key and the {age: …} ciphertexts, opened by loadConfigText; without it a ciphertext is reported. */
  readonly decryption?: Decryption;
  /** The text already parsed (loadConfigText has, to find the ciphertexts): parsing 10,000 agents twice doubled a reload. */
  readonly parsed?: ReturnType<typeof parseYaml>;
}

/**
 * Reads, decrypts and validates the file; rejects with ConfigError listing every problem found.
 * "load" is asynchronous because decrypting {age: …} secrets is; "parse" (parseConfig) is the
 * synchronous validation of text whose ciphertexts are already open.
 */
export async function loadConfigFile(file: string, opts: LoadOptions = {}): Promise<ConfigSnapshot> {
  const absolute = resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (err) {
    throw new ConfigError(absolute, [{ path: '', line: undefined, col: undefined, message: `cannot read the configuration file (${errnoText(err)})` }]);
  }
  return loadConfigText(text, absolute, opts);
}

/** parseConfig after opening the key and every {age: …} secret of the text. */
export async function loadConfigText(text: string, file: string, opts: LoadOptions = {}): Promise<ConfigSnapshot> {
  const env = opts.env ?? process.env;
  const yaml = parseYaml(text);
  // a syntax error or a non-mapping: parseConfig says so
  const decryption = isRecord(yaml.value) ? await decryptSecrets(yaml.value, dirname(file), env) : undefined;
  return parseConfig(text, file, { env, decryption, parsed: yaml });
}

/** Validates YAML text; `file` names it in messages and anchors relative {file: …} secret paths. */
export function parseConfig(text: string, file: string, opts: ParseOptions = {}): ConfigSnapshot {
  const env = opts.env ?? process.env;
  const yaml = opts.parsed ?? parseYaml(text);
  if (yaml.syntaxIssues.length > 0) throw new ConfigError(file, yaml.syntaxIssues);
  const raw = yaml.value;
  if (!isRecord(raw)) {
    throw new ConfigError(file, [{ path: '', line: 1, col: 1, message: 'the file must be a YAML mapping with at least a `servers:` list' }]);
  }
  const issues: ConfigIssue[] = [];
  const report = (path: Parameters<typeof yaml.issueAt>[0], message: string, onKey = false) => void issues.push(yaml.issueAt(path, message, onKey));
  // an unknown preset is one problem: what it would have filled in is not asked for again
  const presets = checkPresetNames(raw, report);
  const at: typeof report = (path, message, onKey) => (presets.isFollowOn(path) ? undefined : report(path, message, onKey));

  // a preset fills in what the YAML leaves out; explicit keys win (config/presets.ts)
  if (Array.isArray(raw.servers)) raw.servers = raw.servers.map((srv: unknown) => (isRecord(srv) ? withPreset(srv) : srv));
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) reportSchemaIssue(issue, raw, at);
  }
  // cross-key rules and secrets run on the raw document even when the schema failed, so one run
  // of `sendas check` lists every problem rather than one layer at a time
  const decryption = opts.decryption;
  const secrets = resolveSecrets(raw, dirname(file), env, at, decryption?.values);
  if (decryption?.keyProblem) reportKeyProblem(decryption, at, issues);
  const warnings = [...checkRelations(raw, at), ...checkListeners(raw, secrets, at), ...checkDkim(raw, secrets, at), ...checkCluster(raw, secrets, at), ...keyWarnings(decryption, dirname(file), env), ...clusterTokenWarnings(raw, decryption)];
  // the key file is watched and fingerprinted like a secret file: a rotated key is a reload
  const secretFiles = [...secretFilesOf(secrets), ...(decryption?.place?.file ? [decryption.place.file] : [])];

  if (issues.length > 0 || !parsed.success) {
    throw new ConfigError(file, issues.length > 0 ? sortIssues(issues) : [{ path: '', line: undefined, col: undefined, message: 'invalid configuration' }], secretFiles);
  }
  return buildSnapshot({ data: parsed.data, secrets, file, text, warnings, env, secretKey: decryption?.key, secretFiles, lineOf: (path) => yaml.issueAt(path, '').line });
}

/** A configured key that is unusable is a config error even when nothing is encrypted yet: state_dir files are encrypted to it. */
function reportKeyProblem(decryption: Decryption, at: (path: (string | number)[], message: string) => void, issues: ConfigIssue[]): void {
  const place = decryption.place!;
  if (place.setBy === 'secrets.key_file') at(['secrets', 'key_file'], decryption.keyProblem!);
  else issues.push({ path: '', line: undefined, col: undefined, message: `${place.setBy}: ${decryption.keyProblem!}` });
}

/** Both the YAML and the variable name a key file: the YAML's is used, and ops should know the variable is not. */
function keyWarnings(decryption: Decryption | undefined, baseDir: string, env: NodeJS.ProcessEnv): ConfigWarning[] {
  const place = decryption?.place;
  const fromEnv = env[KEY_FILE_ENV];
  if (place?.setBy !== 'secrets.key_file' || !fromEnv || resolve(baseDir, fromEnv) === place.file) return [];
  return [{ path: 'secrets.key_file', message: `${KEY_FILE_ENV} names ${resolve(baseDir, fromEnv)}, but secrets.key_file (${place.file}) is used: the config file wins` }];
}
