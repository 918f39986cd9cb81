import type { Provider } from './targets.js';

/**
 * What DNS said about one From domain sent through one server, as plain values: the lookup layer
 * (lookup.ts) fills it in, verdict.ts judges it without any I/O.
 */
export interface DomainFacts {
  readonly domain: string;
  readonly server: string;
  readonly provider: Provider | undefined;
  readonly addresses: readonly string[];
  readonly senders: readonly string[];
  readonly spf: SpfFacts;
  readonly dkim: DkimFacts;
  readonly dmarc: DmarcFacts;
}

export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror';

export interface SpfFacts {
  /** The MAIL FROM domain SPF is evaluated for: the account address's, which sendas puts in MAIL FROM. */
  readonly domain: string;
  /** The domain's v=spf1 TXT records (more than one is a permerror). */
  readonly records: readonly string[];
  /** Where the receiver sees the mail come from, in words: "mx.acme.example (the host of server main)". */
  readonly origin: string;
  /** The SPF result for each address the mail leaves from. */
  readonly results: readonly { readonly ip: string; readonly result: SpfResult; readonly comment?: string }[];
  /** The mechanisms that would authorize those addresses: "include:spf.protection.outlook.com", "ip4:192.0.2.7". */
  readonly authorize: readonly string[];
  /** Whom `authorize` is for, when more than this row's origin (every server sending as the domain). */
  readonly authorizeFor?: string;
  /** The addresses could not be found (host unknown, DNS unreachable). */
  readonly error?: string;
}

export type PublishedKey =
  | { readonly kind: 'key'; readonly key: string; readonly record: string }
  /** `p=` empty: the key was revoked (RFC 6376 §3.6.1). */
  | { readonly kind: 'revoked'; readonly record: string }
  | { readonly kind: 'none' }
  | { readonly kind: 'error'; readonly error: string };

export interface DkimSelectorFacts {
  readonly selector: string;
  /** The signature's d=, which DMARC aligns with the From domain. */
  readonly signingDomain: string;
  /** Who signs with it: sendas with the configured key, or the provider. */
  readonly signer: 'sendas' | Provider;
  /** base64 of the public key sendas signs for (`dkim:` in the config); only when signer is sendas. */
  readonly configuredKey?: string;
  /** k= of the configured key's record. */
  readonly configuredKeyType?: 'rsa' | 'ed25519';
  readonly published: PublishedKey;
  /** Microsoft 365's selectors are CNAMEs into the tenant's onmicrosoft.com domain. */
  readonly cname?: string;
  /** What the CNAME should point to, when known (Microsoft 365: from the server's oauth.tenant). */
  readonly cnameTarget?: string;
}

export interface DkimFacts {
  /** Empty: nobody known signs this domain's mail (no `dkim:` entry, a server whose signing sendas can't know). */
  readonly selectors: readonly DkimSelectorFacts[];
}

export type DmarcFacts =
  | {
      readonly kind: 'record';
      /** The name the record was found at: the From domain's own, or its organizational domain's. */
      readonly at: string;
      readonly record: string;
      readonly fromOrgDomain: boolean;
      readonly p: string | undefined;
      readonly sp: string | undefined;
      readonly adkim: string | undefined;
      readonly aspf: string | undefined;
      readonly pct: number | undefined;
    }
  | { readonly kind: 'none' }
  | { readonly kind: 'error'; readonly error: string };
