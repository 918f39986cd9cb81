import type { z } from 'zod';
import { closest, formatPath, type ReportIssue } from './issues.js';
import { getIn, type Path } from './raw.js';
import { KNOWN_KEYS } from './schema.js';

/** One zod issue in the admin's words: an unknown key with the known ones (and the likely typo), a required key, zod's own message otherwise. */
export function reportSchemaIssue(issue: z.core.$ZodIssue, raw: Record<string, unknown>, at: ReportIssue): void {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
  // `listen:` is a mapping or a list, `http:` false or a mapping: report the problems of the form
  // that was written, not "invalid input"
  if (issue.code === 'invalid_union') {
    // a branch refused at its top (wrong type, or not the literal such as `false`) is not the form written
    const written = issue.errors.filter((branch) => !branch.some((i) => (i.code === 'invalid_type' || i.code === 'invalid_value') && i.path.length === 0));
    if (written.length === 1) {
      for (const inner of written[0]!) reportSchemaIssue({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue, raw, at);
      return;
    }
  }
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeysAt(path);
    for (const key of issue.keys) {
      const hint = closest(key, known);
      const elsewhere = hint ? undefined : belongsElsewhere(key, path);
      if (elsewhere) at([...path, key], `unknown key here; did you mean ${elsewhere}`, true);
      else at([...path, key], `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}; known keys here: ${known.join(', ')}`, true);
    }
    return;
  }
  const value = getIn(raw, path);
  if (value === undefined && issue.code === 'invalid_type') {
    at(path, 'is required');
    return;
  }
  const quoted = quotedValue(issue, value, path);
  at(path, quoted ?? issue.message);
}

/**
 * `port: "587"`: YAML reads a quoted number (or true/false) as text. Only a string that would be a
 * number or a boolean without its quotes can have come from quotes (`yes` is text in YAML 1.2).
 */
function quotedValue(issue: z.core.$ZodIssue, value: unknown, path: readonly (string | number)[]): string | undefined {
  if (typeof value !== 'string' || (issue.code !== 'invalid_type' && issue.code !== 'invalid_union')) return undefined;
  const plain = /^[-+]?\d+(\.\d+)?$/.test(value) ? value : /^(true|false)$/i.test(value) ? value.toLowerCase() : undefined;
  if (plain === undefined) return undefined;
  const key = path[path.length - 1];
  return `"${value}" is a string because of the quotes; ${typeof key === 'string' ? `write ${key}: ${plain}` : `write ${plain} without them`}`;
}

/** The mappings a section holds, whose keys are often written one level too far out. */
const CHILDREN: Readonly<Partial<Record<keyof typeof KNOWN_KEYS, readonly (keyof typeof KNOWN_KEYS)[]>>> = {
  root: ['listen', 'limits', 'queue', 'policy', 'log', 'http'],
  servers: ['tls', 'oauth', 'alternate', 'daily'],
  identity: ['override'],
  limits: ['limitsAuth'],
  cluster: ['clusterRedis'],
};
/** The key a child section is written under (limits.auth's keys are KNOWN_KEYS.limitsAuth). */
const KEY_OF: Readonly<Partial<Record<keyof typeof KNOWN_KEYS, string>>> = { limitsAuth: 'auth', clusterRedis: 'redis' };

/**
 * A key that is not known at its level but is one of a mapping's beside or above it: indented out
 * of `override:` (`password` beside it), or into a mapping it doesn't belong to. The text after
 * "did you mean", or undefined when nowhere near has it.
 */
function belongsElsewhere(key: string, path: Path): string | undefined {
  const children = (section: keyof typeof KNOWN_KEYS | undefined) => (section ? (CHILDREN[section] ?? []) : []).map((child) => ({ child, under: KEY_OF[child] ?? child }));
  // a mapping held here: the key exactly, else its closest spelling there (`pasword` beside override:)
  const here = children(sectionAt(path));
  const exact = here.filter(({ child }) => KNOWN_KEYS[child].includes(key)).map((c) => ({ ...c, key }));
  const near = exact.length > 0 ? exact : here.flatMap((c) => {
    const hint = closest(key, KNOWN_KEYS[c.child]);
    return hint ? [{ ...c, key: hint }] : [];
  });
  if (near.length > 0) return `${near.map((c) => `${c.under}.${c.key}`).join(' or ')}? (indent it under ${near.map((c) => `${c.under}:`).join(' or ')})`;
  const lastKey = [...path].reverse().find((p): p is string => typeof p === 'string');
  if (lastKey === undefined) return undefined;
  const parent = path.slice(0, path.lastIndexOf(lastKey));
  // one level out: the mapping this one is written under
  if (knownKeysAt(parent).includes(key)) return `${formatPath([...parent, key])}? (indent it less, beside ${lastKey}:)`;
  // a mapping beside this one (an oauth key under tls:)
  const sibling = children(sectionAt(parent)).find(({ under, child }) => under !== lastKey && KNOWN_KEYS[child].includes(key));
  if (sibling) return `${formatPath([...parent, sibling.under, key])}? (move it under ${sibling.under}:)`;
  return undefined;
}

/** The section a key path ends in, by its last named key: channels and agents are both identities. */
const SECTION: Readonly<Record<string, keyof typeof KNOWN_KEYS>> = {
  oauth: 'oauth',
  listen: 'listen',
  limits: 'limits',
  // servers' and overrides' `auth` is a value, so an unknown key under an `auth` mapping is under limits.auth
  auth: 'limitsAuth',
  clients: 'clients',
  servers: 'servers',
  tls: 'tls',
  alternate: 'alternate',
  daily: 'daily',
  queue: 'queue',
  channels: 'identity',
  agents: 'identity',
  override: 'override',
  policy: 'policy',
  log: 'log',
  http: 'http',
  dkim: 'dkim',
  deliverability: 'deliverability',
  history: 'history',
  secrets: 'secrets',
  cluster: 'cluster',
  redis: 'clusterRedis',
};

function knownKeysAt(path: Path): string[] {
  const last = [...path].reverse().find((p): p is string => typeof p === 'string');
  // an identity's own OAuth settings are only its refresh token; the rest is its server's
  if (last === 'oauth' && path.includes('override')) return ['refresh_token'];
  const section = sectionAt(path);
  return section ? KNOWN_KEYS[section] : [];
}

function sectionAt(path: Path): keyof typeof KNOWN_KEYS | undefined {
  const last = [...path].reverse().find((p): p is string => typeof p === 'string');
  if (last === undefined) return 'root';
  return Object.hasOwn(SECTION, last) ? SECTION[last] : undefined;
}
