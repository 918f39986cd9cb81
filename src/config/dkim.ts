import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { domainToASCII } from 'node:url';
import { DEFAULTS } from './defaults.js';
import type { ReportIssue } from './issues.js';
import { asArray, isRecord, type Path } from './raw.js';
import type { RawConfig } from './schema.js';
import { secretAt, type SecretReference } from './secret-refs.js';
import type { ConfigWarning, DkimAlgorithm, DkimKeyConfig } from './types.js';

/**
 * `dkim:`: one signing key per From domain. The key is checked at load (a PEM private key, RSA of
 * at least 1024 bits or Ed25519, matching `algorithm:`), so a relay never starts, or reloads,
 * with a key that would fail at the first message.
 */

export interface DkimKeyFacts {
  readonly keyType: 'rsa' | 'ed25519';
  readonly bits: number | undefined;
  /** The DNS record's p= for this key (see DkimKeyConfig.publicKey). */
  readonly publicKey: string;
}

/** What a PEM private key is, or a sentence saying why it can't sign DKIM; never quotes the key. */
export function dkimKeyFacts(pem: string): DkimKeyFacts | { readonly problem: string } {
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) return { problem: 'is not a PEM private key (it should start with -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)' };
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    const text = String((err as Error).message);
    if (/bad password|encrypted|passphrase/i.test(text)) return { problem: 'is encrypted: give the key without a passphrase' };
    return { problem: `cannot be read as a private key (${text.replace(/^error:[0-9A-F]+:/i, '')})` };
  }
  const publicKey = createPublicKey(key);
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < DEFAULTS.dkim.minRsaBits) return { problem: `is an RSA key of ${bits} bits: DKIM needs at least ${DEFAULTS.dkim.minRsaBits} (RFC 8301), generate one of 2048 with \`sendas dkim keygen\`` };
    return { keyType: 'rsa', bits, publicKey: publicKey.export({ type: 'spki', format: 'der' }).toString('base64') };
  }
  if (key.asymmetricKeyType === 'ed25519') {
    // RFC 8463 publishes the bare 32-byte key, not the SubjectPublicKeyInfo around it
    const jwk = publicKey.export({ format: 'jwk' });
    return { keyType: 'ed25519', bits: undefined, publicKey: Buffer.from(jwk.x!, 'base64url').toString('base64') };
  }
  return { problem: `is a ${key.asymmetricKeyType ?? 'unknown'} key: DKIM signs with RSA (rsa-sha256) or Ed25519 (ed25519-sha256)` };
}

export function algorithmOf(keyType: DkimKeyFacts['keyType']): DkimAlgorithm {
  return keyType === 'rsa' ? 'rsa-sha256' : 'ed25519-sha256';
}

/**
 * The key of `ConfigSnapshot.dkim` and the form From domains are looked up in: lower case, no
 * trailing dot, an internationalized domain in A-labels (the d= a receiver compares, RFC 8616 §4).
 */
export function dkimDomainKey(domain: string): string {
  const bare = domain.trim().toLowerCase().replace(/\.$/, '');
  return domainToASCII(bare) || bare;
}

/** Reports unusable keys and duplicate domains; warns about RSA keys shorter than 2048 bits. */
export function checkDkim(raw: Record<string, unknown>, secrets: readonly SecretReference[], at: ReportIssue): ConfigWarning[] {
  const warnings: ConfigWarning[] = [];
  const secret = secretAt(secrets);
  const domains = new Map<string, number>();
  asArray(raw.dkim).forEach((entry, i) => {
    if (!isRecord(entry)) return;
    const path: Path = ['dkim', i];
    if (typeof entry.domain === 'string') {
      const domain = dkimDomainKey(entry.domain);
      const first = domains.get(domain);
      if (first !== undefined) at([...path, 'domain'], `duplicate domain "${domain}" (already signed by dkim[${first}]): one key per domain; to rotate, change that entry's selector and key`);
      else domains.set(domain, i);
    }
    if (Array.isArray(entry.headers) && !entry.headers.some((h) => typeof h === 'string' && h.toLowerCase() === 'from')) {
      at([...path, 'headers'], 'must include From: a signature that does not cover From is invalid (RFC 6376 §5.4)');
    }
    const pem = secret(`dkim[${i}].key`)?.reveal();
    if (pem === undefined) return;
    const facts = dkimKeyFacts(pem);
    if ('problem' in facts) {
      at([...path, 'key'], facts.problem);
      return;
    }
    const algorithm = typeof entry.algorithm === 'string' ? entry.algorithm.toLowerCase() : undefined;
    if (algorithm !== undefined && (algorithm === 'rsa-sha256' || algorithm === 'ed25519-sha256') && algorithm !== algorithmOf(facts.keyType)) {
      at([...path, 'algorithm'], `is ${algorithm} but the key is ${facts.keyType === 'rsa' ? 'an RSA' : 'an Ed25519'} key (${algorithmOf(facts.keyType)}): leave algorithm out to use the key's`);
    }
    if (facts.bits !== undefined && facts.bits < DEFAULTS.dkim.recommendedRsaBits) {
      warnings.push({ path: `dkim[${i}].key`, message: `the DKIM key for ${String(entry.domain)} has ${facts.bits} bits: use ${DEFAULTS.dkim.recommendedRsaBits} (some receivers ignore shorter keys)` });
    }
  });
  return warnings;
}

/** The snapshot's `dkim` map, from a document that passed checkDkim. */
export function dkimKeysOf(entries: RawConfig['dkim'], secrets: readonly SecretReference[], lineOf: (path: Path) => number | undefined): ReadonlyMap<string, DkimKeyConfig> {
  const secret = secretAt(secrets);
  return new Map(
    entries.map((e, i): [string, DkimKeyConfig] => {
      const key = secret(`dkim[${i}].key`)!;
      const facts = dkimKeyFacts(key.reveal()) as DkimKeyFacts;
      const domain = dkimDomainKey(e.domain);
      return [
        domain,
        Object.freeze({
          domain,
          selector: e.selector,
          key,
          algorithm: e.algorithm ?? algorithmOf(facts.keyType),
          keyType: facts.keyType,
          bits: facts.bits,
          publicKey: facts.publicKey,
          headers: Object.freeze([...(e.headers ?? DEFAULTS.dkim.headers)]),
          path: `dkim[${i}]`,
          line: lineOf(['dkim', i]),
        }),
      ];
    }),
  );
}

/** The text of the TXT record at `<selector>._domainkey.<domain>` that publishes this key. */
export function dkimTxtRecord(key: Pick<DkimKeyFacts, 'keyType' | 'publicKey'>): string {
  return `v=DKIM1; k=${key.keyType}; p=${key.publicKey}`;
}
