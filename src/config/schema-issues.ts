import type { z } from 'zod';
import { closest, type ReportIssue } from './issues.js';
import { getIn, type Path } from './raw.js';
import { KNOWN_KEYS } from './schema.js';

/** One zod issue in the admin's words: an unknown key with the known ones (and the likely typo), a required key, zod's own message otherwise. */
export function reportSchemaIssue(issue: z.core.$ZodIssue, raw: Record<string, unknown>, at: ReportIssue): void {
  const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
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

function knownKeysAt(path: Path): string[] {
  const last = [...path].reverse().find((p): p is string => typeof p === 'string');
  if (last === 'oauth' && path.includes('override')) return ['refresh_token'];
  switch (last) {
    case 'oauth':
      return KNOWN_KEYS.oauth;
    case undefined:
      return KNOWN_KEYS.root;
    case 'listen':
      return KNOWN_KEYS.listen;
    case 'clients':
      return KNOWN_KEYS.clients;
    case 'servers':
      return KNOWN_KEYS.servers;
    case 'tls':
      return KNOWN_KEYS.tls;
    case 'alternate':
      return KNOWN_KEYS.alternate;
    case 'queue':
      return KNOWN_KEYS.queue;
    case 'channels':
    case 'agents':
      return KNOWN_KEYS.identity;
    case 'override':
      return KNOWN_KEYS.override;
    case 'policy':
      return KNOWN_KEYS.policy;
    case 'log':
      return KNOWN_KEYS.log;
    case 'http':
      return KNOWN_KEYS.http;
    default:
      return [];
  }
}
