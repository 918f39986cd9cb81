import { decryptWith, KeyMismatchError } from './age.js';
import { isRecord } from './raw.js';
import { secretPlacesIn, type Decrypted } from './secret-refs.js';
import { CONFIGURE_KEY, keyPlaceOf, keyWhere, readSecretKey, type KeyPlace, type SecretKey } from './secret-key.js';

/** The key and every {age: …} ciphertext of a document, opened before the synchronous validation. */
export interface Decryption {
  readonly place: KeyPlace | undefined;
  readonly key: SecretKey | undefined;
  /** Why the configured key could not be used; reported at `secrets.key_file` (or the variable). */
  readonly keyProblem: string | undefined;
  /** By ciphertext: its plaintext or the sentence saying why not (each secret place reports its own). */
  readonly values: ReadonlyMap<string, Decrypted>;
}

/**
 * The one asynchronous step of loading a config (age-encryption decrypts in promises): reads the
 * key and opens every ciphertext at a secret place, all of them, so `sendas check` names each one
 * the key cannot open rather than the first.
 */
export async function decryptSecrets(raw: Record<string, unknown>, baseDir: string, env: NodeJS.ProcessEnv): Promise<Decryption> {
  const place = keyPlaceOf(raw, baseDir, env);
  let key: SecretKey | undefined;
  let keyProblem: string | undefined;
  if (place) {
    try {
      key = await readSecretKey(place, env);
    } catch (err) {
      keyProblem = (err as Error).message;
    }
  }
  const ciphertexts = new Set(secretPlacesIn(raw).flatMap(({ value }) => (isRecord(value) && typeof value.age === 'string' && value.age !== '' ? [value.age] : [])));
  const values = new Map<string, Decrypted>();
  await Promise.all([...ciphertexts].map(async (c) => values.set(c, await open(c, place, key))));
  return { place, key, keyProblem, values };
}

async function open(ciphertext: string, place: KeyPlace | undefined, key: SecretKey | undefined): Promise<Decrypted> {
  if (!place) return { problem: `is encrypted, but no key is configured: ${CONFIGURE_KEY}` };
  if (!key) return { problem: `cannot decrypt: the key in ${keyWhere(place)} is not usable (see ${place.setBy})` };
  let value: string;
  try {
    value = await decryptWith(key, ciphertext);
  } catch (err) {
    const message = (err as Error).message;
    return { problem: err instanceof KeyMismatchError ? `cannot decrypt with the key in ${key.where} (${message})` : message };
  }
  if (value === '') return { problem: 'decrypts to an empty value' };
  return { value, source: `age, key ${key.where}` };
}
