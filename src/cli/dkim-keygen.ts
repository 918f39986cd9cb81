/**
 * `sendas dkim keygen`: a new signing key for one domain and selector. Writes the private key
 * (PEM, PKCS#8, mode 0600, never over an existing file) and prints the DNS record to publish and
 * the `dkim:` entry to paste into relay.yaml. Needs no configuration; never prints the private key.
 */
import { generateKeyPair } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { DEFAULTS } from '../config/defaults.js';
import { dkimDomainKey, dkimKeyFacts, dkimTxtRecord, type DkimKeyFacts } from '../config/dkim.js';
import { errnoText } from '../config/issues.js';
import { DNS_NAME } from '../config/schema.js';
import { DKIM_USAGE } from './usage.js';

interface Output {
  write(text: string): unknown;
}

const generate = promisify(generateKeyPair);

/** Exit codes: 0 written, 1 the file could not be written (it exists, no permission), 2 usage error. */
export async function dkimCommand(argv: readonly string[], out: Output, err: Output): Promise<number> {
  const usage = (text: string): number => {
    err.write(`sendas dkim: ${text}\n${DKIM_USAGE}\n`);
    return 2;
  };
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { domain: { type: 'string' }, selector: { type: 'string' }, type: { type: 'string' }, bits: { type: 'string' }, out: { type: 'string' } },
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    return usage((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (positionals[0] !== 'keygen' || positionals.length > 1) return usage(positionals.length === 0 ? 'missing subcommand' : `unknown subcommand "${positionals.join(' ')}"`);
  if (!values.domain || !DNS_NAME.test(dkimDomainKey(values.domain))) return usage('--domain must be the From domain to sign for, e.g. --domain acme.example');
  if (!values.selector || !DNS_NAME.test(values.selector)) return usage('--selector must be a DNS label such as s2026 (letters, digits, "-", "_")');
  const type = (values.type ?? 'rsa').toLowerCase();
  if (type !== 'rsa' && type !== 'ed25519') return usage('--type must be rsa or ed25519');
  if (type === 'ed25519' && values.bits !== undefined) return usage('--bits applies to --type rsa only (an Ed25519 key has one size)');
  const bits = Number(values.bits ?? DEFAULTS.dkim.recommendedRsaBits);
  if (!Number.isInteger(bits) || bits < DEFAULTS.dkim.minRsaBits || bits > 4096) return usage(`--bits must be a whole number from ${DEFAULTS.dkim.minRsaBits} to 4096 (2048 is what receivers expect)`);

  const domain = dkimDomainKey(values.domain);
  const selector = values.selector;
  const file = resolve(values.out ?? `${domain}.${selector}.key`);
  const pair = type === 'rsa' ? await generate('rsa', { modulusLength: bits }) : await generate('ed25519', {});
  const pem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  try {
    // wx: an existing key (perhaps the one DNS publishes) is never replaced
    await writeFile(file, pem, { flag: 'wx', mode: 0o600 });
  } catch (e) {
    err.write(`sendas dkim keygen: cannot write ${file} (${(e as NodeJS.ErrnoException).code === 'EEXIST' ? 'it exists; choose another --out or a new --selector' : errnoText(e)})\n`);
    return 1;
  }
  const facts = dkimKeyFacts(pem) as DkimKeyFacts;
  out.write(
    [
      `wrote the private key (${type === 'rsa' ? `RSA ${bits} bits` : 'Ed25519'}) to ${file} (mode 0600)`,
      '',
      'publish this DNS record (TXT):',
      `${dnsRecordLine(selector, domain, facts)}`,
      '',
      'and add this to relay.yaml:',
      'dkim:',
      `  - domain: ${domain}`,
      `    selector: ${selector}`,
      `    key: {file: ${JSON.stringify(file)}}`,
      '',
    ].join('\n'),
  );
  return 0;
}

/** The record in zone-file form; a TXT string holds at most 255 characters (RFC 1035 §3.3), a 2048-bit key needs two. */
export function dnsRecordLine(selector: string, domain: string, facts: Pick<DkimKeyFacts, 'keyType' | 'publicKey'>): string {
  const text = dkimTxtRecord(facts);
  const strings = text.match(/.{1,255}/g) ?? [''];
  return `${selector}._domainkey.${domain}. IN TXT ${strings.map((s) => `"${s}"`).join(' ')}`;
}
