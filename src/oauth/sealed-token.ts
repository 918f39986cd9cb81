import { decryptWith, encryptTo, type AgeKey } from '../config/age.js';
import type { SecretKey } from '../config/secret-key.js';
import { isRecord } from '../config/raw.js';

/**
 * A refresh token as a state_dir file holds it: in clear (no key configured, or a file from before
 * the key), or as `{age: "-----BEGIN AGE ENCRYPTED FILE-----…"}` encrypted to the key's recipient,
 * the same form as a secret in relay.yaml. The rest of the file (account, origin digest, time)
 * stays readable: it says whose token it is, not the token.
 */
export type StoredToken = string | { readonly age: string };

export function isStoredToken(v: unknown): v is StoredToken {
  return typeof v === 'string' || (isRecord(v) && typeof v.age === 'string');
}

/** What to write: encrypted when a key is configured. */
export async function sealToken(token: string, key: AgeKey | undefined): Promise<StoredToken> {
  return key ? { age: await encryptTo(key.recipient, token) } : token;
}

export type OpenedToken = { readonly token: string; readonly plain: boolean } | { readonly problem: string };

/** The token back; a sealed one needs the key (a sentence without the token when it can't be opened). */
export async function openToken(stored: StoredToken, key: SecretKey | undefined): Promise<OpenedToken> {
  if (typeof stored === 'string') return { token: stored, plain: true };
  if (!key) return { problem: 'it is encrypted, and no key is configured (secrets.key_file or SENDAS_SECRET_KEY_FILE)' };
  try {
    return { token: await decryptWith(key, stored.age), plain: false };
  } catch (err) {
    return { problem: `cannot decrypt it with the key in ${key.where} (${(err as Error).message})` };
  }
}
