import { createHash } from 'node:crypto';
import type { SecretReference } from './secret-refs.js';

/**
 * A short hash that changes when the file or any secret it references changes (a password
 * rotated in its file is a new config too). Secrets go in as their own digests, so the version
 * can't be used to test a guessed password without also knowing the whole file.
 */
export function configVersion(text: string, secrets: readonly SecretReference[], keyRecipient?: string): string {
  const hash = createHash('sha256').update(text);
  // a new key with the same YAML is a new config: state_dir files are encrypted to the new one
  if (keyRecipient) hash.update('\0key\0').update(keyRecipient);
  for (const ref of secrets) {
    hash.update('\0').update(ref.path).update('\0').update(ref.secret ? createHash('sha256').update(ref.secret.reveal()).digest() : '-');
  }
  return hash.digest('hex').slice(0, 12);
}
