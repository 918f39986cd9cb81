import type { ConfigSnapshot, IdentityConfig } from '../config/types.js';
import { RelayError } from '../errors/relay-error.js';
import { addressKey } from '../mail/address.js';
import { accountFor, type Account } from '../config/account.js';

/** What is known about who sends a message once its header is read. */
export interface SenderFacts {
  /** The single From header address, if the header names exactly one. */
  readonly headerFrom: string | undefined;
  /** MAIL FROM; undefined for the null sender <>. */
  readonly envelopeFrom: string | undefined;
  /** The relay login the client used; undefined when it relays by IP (`listen.allow`). */
  readonly login: string | undefined;
}

export type MatchedBy = 'header-from' | 'envelope-from' | 'login' | 'default-account';

export interface Resolution {
  /** undefined: nobody matched and unknown_sender: default sends with the default server's account. */
  readonly identity: IdentityConfig | undefined;
  readonly matchedBy: MatchedBy;
  readonly account: Account;
}

/**
 * Works out which channel or agent sends a message and with which account. Order: header From,
 * envelope sender, the one identity a login may send as, then `policy.unknown_sender`.
 */
export function resolveSender(snapshot: ConfigSnapshot, facts: SenderFacts): Resolution | RelayError {
  const byAddress = (addr: string | undefined) => (addr ? snapshot.identitiesByAddress.get(addressKey(addr)) : undefined);
  const client = facts.login !== undefined ? snapshot.clientsByUsername.get(facts.login) : undefined;

  let identity: IdentityConfig | undefined;
  let matchedBy: MatchedBy;
  if ((identity = byAddress(facts.headerFrom))) matchedBy = 'header-from';
  else if ((identity = byAddress(facts.envelopeFrom))) matchedBy = 'envelope-from';
  else if (client?.sendAs?.length === 1 && (identity = snapshot.identitiesByName.get(client.sendAs[0]!))) matchedBy = 'login';
  else matchedBy = 'default-account';

  if (!identity) {
    if (snapshot.policy.unknownSender === 'reject') {
      const shown = facts.headerFrom ?? facts.envelopeFrom;
      return new RelayError(
        'policy',
        { code: 550, enhanced: '5.7.1' },
        shown
          ? `Sender ${shown} is not a channel or agent of this relay, so it has no account to send with`
          : 'The message has no From address and no envelope sender that names a channel or agent of this relay',
      );
    }
  }

  // A login limited by send_as may only claim those identities. Falling back to the default
  // server's own account is not sending *as* anybody, so it stays allowed (README: clients).
  if (identity && client?.sendAs && !client.sendAs.includes(identity.name)) {
    return new RelayError(
      'policy',
      { code: 550, enhanced: '5.7.1' },
      `Login ${client.username} may not send as ${identity.kind} "${identity.name}" (${identity.address}); it may send as: ${client.sendAs.join(', ')}`,
    );
  }

  const account = accountFor(snapshot, identity);
  if (account instanceof RelayError) return account;
  return { identity, matchedBy, account };
}
