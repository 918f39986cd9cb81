// mailauth 4.9 ships no type declarations; these cover the SPF check and the DMARC record lookup
// sendas's deliverability check uses (src/deliverability/).
declare module 'mailauth/lib/spf/index.js' {
  export type SpfResolver = (name: string, rrtype: string) => Promise<unknown>;
  export interface SpfResponse {
    domain: string;
    'client-ip': string;
    status: { result: 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror'; comment?: string };
    /** The SPF record the verdict came from. */
    rr?: string;
  }
  export function spf(opts: { sender: string; ip: string; helo?: string; mta?: string; resolver?: SpfResolver; maxResolveCount?: number; maxVoidCount?: number }): Promise<SpfResponse>;
}

declare module 'mailauth/lib/dmarc/get-dmarc-record.js' {
  /** The parsed tags of a DMARC record (lower-case keys), false when the domain and its organizational domain publish none. */
  export interface DmarcRecordTags {
    readonly [tag: string]: string | number | boolean | undefined;
    readonly v?: string;
    readonly p?: string;
    readonly sp?: string;
    readonly adkim?: string;
    readonly aspf?: string;
    readonly pct?: number;
    readonly rua?: string;
    /** The record's text. */
    readonly rr: string;
    /** The record came from the organizational domain, not the From domain itself. */
    readonly isOrgRecord: boolean;
  }
  export default function getDmarcRecord(domain: string, resolver: (name: string, rrtype: string) => Promise<unknown>): Promise<DmarcRecordTags | false>;
}
