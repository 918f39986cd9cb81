import { serverOf, type ConfigSnapshot, type ServerConfig } from '../config/types.js';
import { wireAddress } from '../mail/address.js';

/** Who sends the mail of a server: decides which DKIM selectors and which sending addresses count. */
export type Provider = 'microsoft365' | 'google';

/**
 * One From domain as it leaves through one server: what the receiver's DMARC check sees. The
 * From that leaves is the account's address (reception/align.ts: rewrite makes it so, reject
 * refuses anything else), and MAIL FROM is the same address, so the SPF domain is this domain too.
 */
export interface SendingDomain {
  /** The From domain: ASCII, lower case. */
  readonly domain: string;
  /**
   * The MAIL FROM domain, which SPF is evaluated for. planAlignment puts the account address in
   * MAIL FROM as well as in From, so it is the From domain; kept apart because DMARC compares
   * the two (aspf), and a null sender (<>, failure notices) is not covered (README).
   */
  readonly envelopeDomain: string;
  readonly server: ServerConfig;
  /** The From addresses of this domain that leave through the server. */
  readonly addresses: readonly string[];
  /** Who sends with them, for the report: "channel support", "agent alice", "server main's account". */
  readonly senders: readonly string[];
}

export function providerOf(server: ServerConfig): Provider | undefined {
  const host = server.host.toLowerCase();
  // smtp-mail.outlook.com is consumer Outlook.com: its own domains, not a tenant's
  if (server.type === 'graph' || server.preset === 'office365' || host === 'smtp.office365.com') return 'microsoft365';
  if (server.preset === 'gmail' || host === 'smtp.gmail.com' || host === 'smtp-relay.gmail.com') return 'google';
  return undefined;
}

export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf('@') + 1).toLowerCase();
}

/**
 * Every From domain the config can send as, by domain and server, in the file's order. An
 * identity that overrides sends as its own address; one that doesn't, as its server's account.
 * The default server's own account sends the failure notices (and, with unknown_sender:
 * default, mail of unknown senders).
 */
export function sendingDomains(snapshot: ConfigSnapshot): SendingDomain[] {
  const rows = new Map<string, { domain: string; envelopeDomain: string; server: ServerConfig; addresses: string[]; senders: string[] }>();
  const add = (server: ServerConfig, address: string, sender: string) => {
    if (!address.includes('@')) return;
    const wire = wireAddress(address).toLowerCase();
    const domain = domainOf(wire);
    const key = `${server.name}\u0000${domain}`;
    let row = rows.get(key);
    if (!row) rows.set(key, (row = { domain, envelopeDomain: domain, server, addresses: [], senders: [] }));
    if (!row.addresses.includes(wire)) row.addresses.push(wire);
    row.senders.push(sender);
  };
  for (const identity of snapshot.identities) {
    const server = serverOf(snapshot, identity);
    // an identity on a server without an account of its own and without override can't send (relations.ts refuses it)
    add(server, identity.override ? identity.address : server.address, `${identity.kind} ${identity.name}`);
  }
  const main = snapshot.defaultServer;
  if (main.address) add(main, main.address, `server ${main.name}'s own account (failure notices${snapshot.policy.unknownSender === 'default' ? ', unknown senders' : ''})`);
  return [...rows.values()].map((r) => Object.freeze({ ...r, addresses: Object.freeze(r.addresses), senders: Object.freeze(r.senders) }));
}
