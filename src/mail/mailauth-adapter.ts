/**
 * Everything sendas takes from mailauth's DKIM internals, in one place: the streaming relaxed
 * body hash, header-field selection, relaxed header canonicalization and the DKIM-Signature
 * formatting (folding, A-labels for d=). mailauth's own DkimSigner is not used whole: it signs
 * with the synchronous crypto.sign on the caller's thread (RSA-2048 is about 1 ms, on the thread
 * that runs every client session), and its DkimSignStream keeps the whole message in memory.
 * sendas signs with the asynchronous crypto.sign (libuv's pool) instead (mail/dkim-sign.ts).
 * mailauth 4.9 has no types: the shapes below are what its lib/ files do. When mailauth is
 * upgraded, this file and test/unit/dkim-sign.test.ts are what to check.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** A header line as mailauth's parseHeaders gives it. */
interface ParsedHeaderLine {
  readonly key: string | null;
  readonly casedKey: string | undefined;
  readonly line: Buffer;
}

interface BodyHasher {
  update(chunk: Buffer): void;
  digest(encoding: 'base64'): string;
}

/** The tags of the DKIM-Signature being made, as mailauth's relaxedHeaders returns them (b= comes last). */
export type SignatureTags = Record<string, string | number>;

interface MailauthParts {
  readonly dkimBody: (canonicalization: string, hashAlgo: string, maxBodyLength: false) => BodyHasher;
  readonly generateCanonicalizedHeader: (
    type: 'DKIM',
    lines: { keys: string; headers: ParsedHeaderLine[] },
    opts: { signingDomain: string; selector: string; algorithm: string; canonicalization: string; bodyHash: string; signTime: Date },
  ) => { canonicalizedHeader: Buffer; dkimHeaderOpts: SignatureTags };
  readonly tools: {
    parseHeaders: (buf: Buffer) => { parsed: ParsedHeaderLine[] };
    getSigningHeaderLines: (parsed: ParsedHeaderLine[], fieldNames: string) => { keys: string; headers: ParsedHeaderLine[] };
    formatSignatureHeaderLine: (type: 'DKIM', values: SignatureTags, folded: boolean) => string;
  };
}

let parts: MailauthParts | undefined;

/** Loaded at the first signature: mailauth's modules cost a fifth of a second at every start, and most relays sign nothing. */
function mailauth(): MailauthParts {
  parts ??= {
    dkimBody: (require('mailauth/lib/dkim/body/index.js') as Pick<MailauthParts, 'dkimBody'>).dkimBody,
    generateCanonicalizedHeader: (require('mailauth/lib/dkim/header/index.js') as Pick<MailauthParts, 'generateCanonicalizedHeader'>).generateCanonicalizedHeader,
    tools: require('mailauth/lib/tools.js') as MailauthParts['tools'],
  };
  return parts;
}

const CANONICALIZATION = 'relaxed/relaxed';

/** The relaxed/sha256 body hash, fed the body chunk by chunk (it holds only trailing empty lines back). */
export function relaxedBodyHasher(): BodyHasher {
  return mailauth().dkimBody(CANONICALIZATION, 'sha256', false);
}

export interface SignatureInput {
  /** The bytes the signature's b= is computed over: the signed fields and the DKIM-Signature without b=, relaxed. */
  readonly canonicalized: Buffer;
  readonly tags: SignatureTags;
}

/**
 * What to sign for a header section: each field of `fields` the message has (every occurrence,
 * bottom up, as RFC 6376 §5.4.2 has verifiers take them), plus each name of `oversign` once more,
 * which matches no field: a From added later breaks the signature instead of being shown.
 */
export function signatureInput(headerSection: Buffer, fields: readonly string[], oversign: readonly string[], tags: { domain: string; selector: string; algorithm: string; bodyHash: string; time: Date }): SignatureInput {
  const { tools, generateCanonicalizedHeader } = mailauth();
  const { parsed } = tools.parseHeaders(headerSection);
  const signing = tools.getSigningHeaderLines(parsed, fields.join(':'));
  const keys = [signing.keys, ...oversign].filter((k) => k !== '').join(': ');
  const { canonicalizedHeader, dkimHeaderOpts } = generateCanonicalizedHeader('DKIM', { keys, headers: signing.headers }, {
    signingDomain: tags.domain,
    selector: tags.selector,
    algorithm: tags.algorithm,
    canonicalization: CANONICALIZATION,
    bodyHash: tags.bodyHash,
    signTime: tags.time,
  });
  return { canonicalized: canonicalizedHeader, tags: dkimHeaderOpts };
}

/** The DKIM-Signature header field, folded, with its CRLF. */
export function signatureField(tags: SignatureTags, b: string): string {
  return `${mailauth().tools.formatSignatureHeaderLine('DKIM', { ...tags, b }, true)}\r\n`;
}
