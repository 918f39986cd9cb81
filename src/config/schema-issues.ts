import type { z } from 'zod';
import { closest, type ReportIssue } from './issues.js';
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
      at([...path, key], `unknown key "${key}"${hint ? ` (did you mean "${hint}"?)` : ''}; known keys here: ${known.join(', ')}`, true);
    }
    return;
  }
  if (getIn(raw, path) === undefined && issue.code === 'invalid_type') {
    at(path, 'is required');
    return;
  }
  at(path, issue.message);
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
  secrets: 'secrets',
};

function knownKeysAt(path: Path): string[] {
  const last = [...path].reverse().find((p): p is string => typeof p === 'string');
  if (last === undefined) return KNOWN_KEYS.root;
  // an identity's own OAuth settings are only its refresh token; the rest is its server's
  if (last === 'oauth' && path.includes('override')) return ['refresh_token'];
  return Object.hasOwn(SECTION, last) ? KNOWN_KEYS[SECTION[last]!] : [];
}
