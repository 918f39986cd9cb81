import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { looksLikeArmor } from './age.js';
import { errnoText, formatPath, type ReportIssue } from './issues.js';
import { getIn, isRecord, type Path } from './raw.js';
import { Secret } from './secret.js';

/** What a secret is for; the key path says whose it is. */
export type SecretKind = 'client login password' | 'password' | 'tls ca' | 'oauth client secret' | 'refresh token' | 'tls certificate' | 'tls key' | 'http token' | 'dkim key' | 'redis url';

/** How the YAML gives the value: written inline, {env: NAME}, {file: PATH} (absolute here), or {age: CIPHERTEXT} (config/decrypt.ts). */
export type SecretSource =
  | { readonly type: 'inline' }
  | { readonly type: 'env'; readonly name: string }
  | { readonly type: 'file'; readonly file: string }
  | { readonly type: 'age' };

/** What the loader made of an {age: …} ciphertext before the (synchronous) resolution: its plaintext, or why not. */
export type Decrypted = { readonly value: string; readonly source: string } | { readonly problem: string };

/** One secret of relay.yaml: where it is written, what it is for, where its value comes from, the value. */
export interface SecretReference {
  /** Key path, e.g. "channels[0].override.password". */
  readonly path: string;
  readonly kind: SecretKind;
  readonly source: SecretSource;
  /** Undefined when it could not be resolved: the problem was reported, so no snapshot is built. */
  readonly secret: Secret | undefined;
}

/**
 * Every place relay.yaml can hold a secret. Order is file-independent and fixed: it is the order of
 * the references, and so of the version digest.
 */
const PLACES: readonly { readonly list: 'clients' | 'servers' | 'channels' | 'agents' | 'listen' | 'http' | 'dkim' | 'cluster'; readonly key: Path; readonly kind: SecretKind }[] = [
  { list: 'clients', key: ['password'], kind: 'client login password' },
  { list: 'servers', key: ['password'], kind: 'password' },
  { list: 'servers', key: ['tls', 'ca'], kind: 'tls ca' },
  { list: 'channels', key: ['override', 'password'], kind: 'password' },
  { list: 'agents', key: ['override', 'password'], kind: 'password' },
  { list: 'servers', key: ['oauth', 'client_secret'], kind: 'oauth client secret' },
  { list: 'servers', key: ['oauth', 'refresh_token'], kind: 'refresh token' },
  { list: 'channels', key: ['override', 'oauth', 'refresh_token'], kind: 'refresh token' },
  { list: 'agents', key: ['override', 'oauth', 'refresh_token'], kind: 'refresh token' },
  { list: 'listen', key: ['cert'], kind: 'tls certificate' },
  { list: 'listen', key: ['key'], kind: 'tls key' },
  { list: 'http', key: ['token'], kind: 'http token' },
  { list: 'dkim', key: ['key'], kind: 'dkim key' },
  // the URL may carry the password (redis://:PASSWORD@host)
  { list: 'cluster', key: ['redis', 'url'], kind: 'redis url' },
  { list: 'cluster', key: ['redis', 'tls', 'ca'], kind: 'tls ca' },
  { list: 'cluster', key: ['redis', 'tls', 'cert'], kind: 'tls certificate' },
  { list: 'cluster', key: ['redis', 'tls', 'key'], kind: 'tls key' },
  { list: 'cluster', key: ['redis', 'sentinel', 'password'], kind: 'password' },
];

/** The items of a section with their YAML paths: a list's items, or `listen:`, `http:` and `cluster:` as one mapping. */
function itemsOf(raw: Record<string, unknown>, section: (typeof PLACES)[number]['list']): [Path, unknown][] {
  const value = raw[section];
  if (Array.isArray(value)) return value.map((item, i) => [[section, i], item]);
  return (section === 'listen' || section === 'http' || section === 'cluster') && isRecord(value) ? [[[section], value]] : [];
}

/**
 * Finds and resolves every secret of the (unvalidated) document; a problem (unset variable,
 * unreadable or empty file, a ciphertext that did not open) is reported at the secret's key path.
 * A value of the wrong shape is skipped: the schema reports it. {age: …} values were decrypted
 * beforehand (decryption is asynchronous); `decrypted` holds the outcome by ciphertext.
 */
export function resolveSecrets(raw: Record<string, unknown>, baseDir: string, env: NodeJS.ProcessEnv, at: ReportIssue, decrypted: ReadonlyMap<string, Decrypted> = new Map()): SecretReference[] {
  const refs: SecretReference[] = [];
  for (const { path, kind, value } of secretPlacesIn(raw)) {
    const source = sourceOf(value, baseDir);
    if (source) refs.push({ path: formatPath(path), kind, source, secret: resolveOne(value as string | Record<string, string>, source, env, decrypted, (m) => at(path, m)) });
  }
  return refs;
}

/** Every secret place present in the document, with its key path and the value as written. */
export function secretPlacesIn(raw: Record<string, unknown>): { path: Path; kind: SecretKind; value: unknown }[] {
  return PLACES.flatMap((place) => itemsOf(raw, place.list).map(([itemPath, item]) => ({ path: [...itemPath, ...place.key], kind: place.kind, value: getIn(item, place.key) })));
}

/** The {file: …} secrets' files, each once: what a watcher and the files fingerprint cover. */
export function secretFilesOf(refs: readonly SecretReference[]): string[] {
  return [...new Set(refs.flatMap((r) => (r.source.type === 'file' ? [r.source.file] : [])))];
}

/** The resolved value at a key path, for the snapshot builder. */
export function secretAt(refs: readonly SecretReference[]): (path: string) => Secret | undefined {
  const byPath = new Map(refs.map((r) => [r.path, r.secret]));
  return (path) => byPath.get(path);
}

function sourceOf(value: unknown, baseDir: string): SecretSource | undefined {
  if (typeof value === 'string') return { type: 'inline' };
  if (!isRecord(value)) return undefined;
  if (typeof value.env === 'string') return { type: 'env', name: value.env };
  // a relative path is relative to the YAML file, like the queue directory
  if (typeof value.file === 'string') return { type: 'file', file: resolve(baseDir, value.file) };
  if (typeof value.age === 'string') return { type: 'age' };
  return undefined;
}

function resolveOne(value: string | Record<string, string>, source: SecretSource, env: NodeJS.ProcessEnv, decrypted: ReadonlyMap<string, Decrypted>, problem: (message: string) => void): Secret | undefined {
  switch (source.type) {
    case 'inline':
      // a ciphertext pasted as `password: |` would be sent upstream as the password itself
      if (looksLikeArmor(value as string)) {
        problem('is an age ciphertext written as a plain string: write it as {age: …} (what `sendas secret encrypt` prints) so it is decrypted');
        return undefined;
      }
      return new Secret(value as string, 'inline');
    case 'age': {
      const outcome = decrypted.get((value as Record<string, string>).age!);
      if (outcome === undefined) {
        problem('is encrypted, and this reader does not decrypt: load the file with loadConfigFile');
        return undefined;
      }
      if ('problem' in outcome) {
        problem(outcome.problem);
        return undefined;
      }
      return new Secret(outcome.value, outcome.source);
    }
    case 'env': {
      const v = env[source.name];
      if (v === undefined || v === '') {
        problem(`environment variable ${source.name} is ${v === undefined ? 'not set' : 'empty'}`);
        return undefined;
      }
      return new Secret(v, `env ${source.name}`);
    }
    case 'file':
      try {
        // one trailing newline is what `echo` and most editors add; anything else is the secret
        const v = readFileSync(source.file, 'utf8').replace(/\r?\n$/, '');
        if (v === '') {
          problem(`secret file ${source.file} is empty`);
          return undefined;
        }
        return new Secret(v, `file ${source.file}`);
      } catch (err) {
        problem(`cannot read secret file ${source.file} (${errnoText(err)})`);
        return undefined;
      }
  }
}
