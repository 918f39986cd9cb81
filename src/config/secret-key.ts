import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseIdentityFile, type AgeKey } from './age.js';
import { errnoText } from './issues.js';
import { getIn } from './raw.js';

/**
 * Where the relay finds the age key that opens {age: …} secrets. The YAML's `secrets.key_file`
 * wins, then SENDAS_SECRET_KEY_FILE, then SENDAS_SECRET_KEY (the identity itself): the same order
 * as state_dir and SENDAS_STATE_DIR, so the file says what the file says. The key itself is
 * never in the YAML: the point is a YAML that can be read by whoever holds it.
 */
export type KeyPlace =
  | { readonly setBy: 'secrets.key_file' | 'SENDAS_SECRET_KEY_FILE'; readonly file: string }
  | { readonly setBy: 'SENDAS_SECRET_KEY'; readonly file: undefined };

/** The key as loaded: its identities, its recipient, and where it came from (safe to show). */
export interface SecretKey extends AgeKey {
  readonly place: KeyPlace;
  /** "/run/secrets/sendas.agekey" or "SENDAS_SECRET_KEY": what messages name. */
  readonly where: string;
}

export const KEY_FILE_ENV = 'SENDAS_SECRET_KEY_FILE';
export const KEY_ENV = 'SENDAS_SECRET_KEY';

/** What to do when a ciphertext has no key to open it. */
export const CONFIGURE_KEY = `set secrets.key_file in the config (or ${KEY_FILE_ENV}) to the age identity file it was encrypted for; \`sendas secret keygen --out FILE\` makes one`;

/** The key's place from the (unvalidated) document and the environment; relative paths are relative to the YAML file. */
export function keyPlaceOf(raw: Record<string, unknown>, baseDir: string, env: NodeJS.ProcessEnv): KeyPlace | undefined {
  const configured = getIn(raw, ['secrets', 'key_file']);
  if (typeof configured === 'string' && configured !== '') return { setBy: 'secrets.key_file', file: resolve(baseDir, configured) };
  const fromEnv = env[KEY_FILE_ENV];
  if (fromEnv) return { setBy: KEY_FILE_ENV, file: resolve(baseDir, fromEnv) };
  if (env[KEY_ENV]) return { setBy: KEY_ENV, file: undefined };
  return undefined;
}

export function keyWhere(place: KeyPlace): string {
  return place.file ?? place.setBy;
}

/** Reads and checks the key; throws with a sentence naming the file (never its content). */
export async function readSecretKey(place: KeyPlace, env: NodeJS.ProcessEnv): Promise<SecretKey> {
  let text: string;
  if (place.file === undefined) {
    text = env[KEY_ENV] ?? '';
  } else {
    try {
      text = readFileSync(place.file, 'utf8');
    } catch (err) {
      throw new Error(`cannot read the key file ${place.file} (${errnoText(err)})`);
    }
  }
  try {
    return { ...(await parseIdentityFile(text)), place, where: keyWhere(place) };
  } catch (err) {
    throw new Error(`${place.file === undefined ? `the key in ${KEY_ENV}` : `the key file ${place.file}`} is not usable: ${(err as Error).message}`);
  }
}
