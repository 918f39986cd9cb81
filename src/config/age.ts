// loaded when a key or a ciphertext is met: age-encryption's modules cost a tenth of a second at
// every start and every CLI command, and most configs have neither
const age = () => import('age-encryption');
import { Secret } from './secret.js';

/**
 * The age format (age-encryption.org/v1) is the one place sendas encrypts: the {age: …} secrets
 * of relay.yaml and the refresh tokens kept in state_dir. X25519 recipients, so whoever only
 * encrypts (ops pasting a password into the YAML) needs the public `age1…` recipient, not the
 * key; ASCII armor, so a ciphertext is text that fits a YAML string and a diff; and the `age`
 * command-line tool opens the same bytes.
 */

export const ARMOR_BEGIN = '-----BEGIN AGE ENCRYPTED FILE-----';
const ARMOR_END = '-----END AGE ENCRYPTED FILE-----';

/** The identities of an age identity file and the recipient new ciphertexts are encrypted to. */
export interface AgeKey {
  /** Every identity of the file, tried in turn: an old key kept below a new one still decrypts. */
  readonly identities: readonly Secret[];
  /** The first identity's public recipient (age1…): what state_dir files are encrypted to. */
  readonly recipient: string;
}

/**
 * Reads the text of an age identity file (as `age-keygen` and `sendas secret keygen` write it):
 * `AGE-SECRET-KEY-1…` lines, `#` comments and blank lines. Throws with a sentence that never
 * quotes the file's content.
 */
export async function parseIdentityFile(text: string): Promise<AgeKey> {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length === 0) throw new Error('it holds no age identity (an AGE-SECRET-KEY-1… line)');
  const identities: Secret[] = [];
  let recipient: string | undefined;
  for (const [i, line] of lines.entries()) {
    if (!/^AGE-SECRET-KEY-1[0-9A-Z]+$/.test(line)) throw new Error(`line ${i + 1} of its identities is not an age identity (AGE-SECRET-KEY-1…)`);
    try {
      const r = await (await age()).identityToRecipient(line);
      recipient ??= r;
    } catch {
      throw new Error(`identity ${i + 1} is not a valid age X25519 identity (damaged or cut short)`);
    }
    identities.push(new Secret(line, 'age identity'));
  }
  return { identities, recipient: recipient! };
}

/** A new identity file's text and its recipient. */
export async function newIdentityFile(now: Date): Promise<{ text: string; recipient: string }> {
  const { generateX25519Identity, identityToRecipient } = await age();
  const identity = await generateX25519Identity();
  const recipient = await identityToRecipient(identity);
  return { text: `# created: ${now.toISOString()}\n# public key: ${recipient}\n${identity}\n`, recipient };
}

export function isRecipient(value: string): boolean {
  return /^age1[02-9ac-hj-np-z]{58}$/.test(value);
}

/** The armored ciphertext of `plaintext` for `recipient`, ending in a newline. */
export async function encryptTo(recipient: string, plaintext: string): Promise<string> {
  const { Encrypter, armor } = await age();
  const e = new Encrypter();
  e.addRecipient(recipient);
  return armor.encode(await e.encrypt(plaintext));
}

/**
 * The plaintext of an armored ciphertext. Any YAML string style may have changed its line breaks
 * (a folded `>` scalar, a quoted string continued over lines): the base64 between the markers is
 * wrapped again as the armor wants it. Throws `age: …` for what the library refused.
 */
export async function decryptWith(key: AgeKey, armored: string): Promise<string> {
  const { armor, Decrypter } = await age();
  let bytes: Uint8Array;
  try {
    bytes = armor.decode(normalizeArmor(armored));
  } catch (err) {
    throw new Error(`is not an age ciphertext (age: ${(err as Error).message})`);
  }
  const d = new Decrypter();
  for (const identity of key.identities) d.addIdentity(identity.reveal());
  try {
    return await d.decrypt(bytes, 'text');
  } catch (err) {
    const message = (err as Error).message;
    // only this one is about the key; the rest means the text was damaged (or is not age at all)
    if (message.startsWith('no identity matched')) throw new KeyMismatchError(`age: ${message}`);
    throw new Error(`is not an age ciphertext, or it was damaged (age: ${message})`);
  }
}

/** The ciphertext is sound but was encrypted to another key. */
export class KeyMismatchError extends Error {}

export function looksLikeArmor(value: string): boolean {
  return value.trimStart().startsWith(ARMOR_BEGIN);
}

function normalizeArmor(text: string): string {
  const begin = text.indexOf(ARMOR_BEGIN);
  const end = text.indexOf(ARMOR_END);
  if (begin === -1 || end === -1 || end < begin) return text;
  const body = text.slice(begin + ARMOR_BEGIN.length, end).replace(/\s+/g, '');
  const lines = body.match(/.{1,64}/g) ?? [];
  return `${ARMOR_BEGIN}\n${lines.join('\n')}\n${ARMOR_END}\n`;
}
