import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { checkDkim } from './dkim.js';
import { ConfigError, errnoText, sortIssues, type ConfigIssue } from './issues.js';
import { withPreset } from './presets.js';
import { checkListeners } from './listeners.js';
import { isRecord } from './raw.js';
import { checkPresetNames, checkRelations } from './relations.js';
import { configSchema } from './schema.js';
import { reportSchemaIssue } from './schema-issues.js';
import { resolveSecrets, secretFilesOf } from './secret-refs.js';
import { buildSnapshot } from './snapshot.js';
import type { ConfigSnapshot } from './types.js';
import { parseYaml } from './yaml.js';

export { closest, ConfigError, formatIssue, formatIssues, formatPath, type ConfigIssue } from './issues.js';

export interface LoadOptions {
  /** Environment to resolve {env: NAME} secrets from; defaults to process.env. */
  readonly env?: NodeJS.ProcessEnv;
}

/** Reads and validates the file; throws ConfigError listing every problem found. */
export function loadConfigFile(file: string, opts: LoadOptions = {}): ConfigSnapshot {
  const absolute = resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (err) {
    throw new ConfigError(absolute, [{ path: '', line: undefined, col: undefined, message: `cannot read the configuration file (${errnoText(err)})` }]);
  }
  return parseConfig(text, absolute, opts);
}

/** Validates YAML text; `file` names it in messages and anchors relative {file: …} secret paths. */
export function parseConfig(text: string, file: string, opts: LoadOptions = {}): ConfigSnapshot {
  const env = opts.env ?? process.env;
  const yaml = parseYaml(text);
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
  const secrets = resolveSecrets(raw, dirname(file), env, at);
  const warnings = [...checkRelations(raw, at), ...checkListeners(raw, secrets, at), ...checkDkim(raw, secrets, at)];

  if (issues.length > 0 || !parsed.success) {
    throw new ConfigError(file, issues.length > 0 ? sortIssues(issues) : [{ path: '', line: undefined, col: undefined, message: 'invalid configuration' }], secretFilesOf(secrets));
  }
  return buildSnapshot({ data: parsed.data, secrets, file, text, warnings, env, lineOf: (path) => yaml.issueAt(path, '').line });
}
