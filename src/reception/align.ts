import type { PolicyConfig } from '../config/types.js';
import { RelayError } from '../errors/relay-error.js';
import type { Resolution } from './identity.js';
import { addressKey } from '../mail/address.js';
import type { FromHeader, Mailbox } from '../mail/mailbox.js';

/** What the header section says about the sender, as far as alignment cares. */
export interface HeaderFacts {
  readonly from: FromHeader;
  readonly hasReplyTo: boolean;
  /** Addresses found in Sender header(s); an unparseable Sender counts as a mismatch. */
  readonly senders: readonly (string | undefined)[];
}

/** How From, Reply-To, Sender and the envelope sender must look when the message leaves. */
export interface AlignmentPlan {
  /** MAIL FROM upstream; "" keeps a null sender null. */
  readonly envelopeFrom: string;
  /** The From the message leaves with. */
  readonly from: Mailbox;
  /** True when the From header has to be written (address or display name differs, or missing). */
  readonly writeFrom: boolean;
  /** The From address the client wrote, when it differs from the account's. */
  readonly originalFrom: Mailbox | undefined;
  /** Reply-To to add (the original From), only when the message has none. */
  readonly addReplyTo: Mailbox | undefined;
  readonly dropSender: boolean;
}

/**
 * The single From address to resolve the identity with, or a refusal when the header can't be
 * sent as one account without guessing (several From addresses or From lines).
 */
export function headerFromAddress(from: FromHeader): string | undefined | RelayError {
  switch (from.kind) {
    case 'single':
      return from.mailbox.address;
    case 'missing':
    case 'no-address':
      return undefined;
    case 'several':
      return new RelayError(
        'message',
        { code: 550, enhanced: '5.6.0' },
        `The From header lists ${from.mailboxes.length} addresses (${from.mailboxes.map((m) => m.address).join(', ')}); a message is sent as one channel or agent, so send it with a single From address`,
      );
    case 'repeated':
      return new RelayError('message', { code: 550, enhanced: '5.6.0' }, `The message has ${from.count} From header lines; RFC 5322 allows exactly one`);
  }
}

/**
 * Decides the From rewrite. Pure: the caller applies the plan to the headers and the envelope.
 *
 * A null envelope sender stays null: RFC 5321 §4.5.5 reserves it for notices, and giving a
 * bounce a real return path invites bounce loops.
 */
export function planAlignment(policy: PolicyConfig, resolution: Resolution, header: HeaderFacts, envelopeFrom: string | undefined): AlignmentPlan | RelayError {
  const { account, identity } = resolution;
  const original = header.from.kind === 'single' ? header.from.mailbox : undefined;
  const addressChanges = !original || addressKey(original.address) !== addressKey(account.address);
  const name = identity?.displayName ?? original?.name ?? '';
  const from: Mailbox = { name, address: account.address };

  if (policy.from === 'reject') {
    if (addressChanges) {
      const who = identity ? `${identity.kind} "${identity.name}"` : `the default server's account`;
      return new RelayError(
        'policy',
        { code: 550, enhanced: '5.7.1' },
        original
          ? `From ${original.address} is not allowed: messages sent as ${who} must have From: ${account.address}`
          : `The message has no From address: messages sent as ${who} must have From: ${account.address}`,
      );
    }
    // reject mode never edits From, Reply-To or Sender: what the client wrote is what leaves
    return {
      envelopeFrom: envelopeFrom === undefined ? '' : account.address,
      from: original!,
      writeFrom: false,
      originalFrom: undefined,
      addReplyTo: undefined,
      dropSender: false,
    };
  }

  const nameChanges = original !== undefined && name !== original.name;
  return {
    envelopeFrom: envelopeFrom === undefined ? '' : account.address,
    from,
    writeFrom: addressChanges || nameChanges,
    originalFrom: addressChanges ? original : undefined,
    addReplyTo: addressChanges && original && !header.hasReplyTo ? original : undefined,
    dropSender: header.senders.some((s) => s === undefined || addressKey(s) !== addressKey(account.address)),
  };
}
