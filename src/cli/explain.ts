import { dkimDomainKey } from '../config/dkim.js';
import type { ConfigSnapshot } from '../config/types.js';
import { RelayError } from '../errors/relay-error.js';
import { limitsOf } from './report.js';
import { resolveSender } from '../reception/identity.js';
import { parseMailboxList, formatMailbox, type FromHeader } from '../mail/mailbox.js';
import { headerFromAddress, planAlignment } from '../reception/align.js';

export interface ExplainInput {
  /** The From header as the client would write it: "Alice <alice@acme.example>" or a bare address. */
  readonly from: string | undefined;
  readonly envelope: string | undefined;
  readonly login: string | undefined;
}

/** What the relay would do with a message, without sending anything. Returns the text and whether it would be relayed. */
export function explain(snapshot: ConfigSnapshot, input: ExplainInput): { text: string; relayed: boolean } {
  if (input.login !== undefined && !snapshot.clientsByUsername.has(input.login)) {
    return { text: `refused at AUTH: ${input.login} is not a login in clients (535 5.7.8)`, relayed: false };
  }
  const mailboxes = input.from === undefined ? [] : parseMailboxList(input.from);
  const from: FromHeader =
    input.from === undefined
      ? { kind: 'missing' }
      : mailboxes.length === 0
        ? { kind: 'no-address', raw: input.from }
        : mailboxes.length === 1
          ? { kind: 'single', mailbox: mailboxes[0]! }
          : { kind: 'several', mailboxes };
  const lines: string[] = [];
  const refuse = (err: RelayError) => {
    lines.push(`refused: ${err.status.code} ${err.replyText}`);
    return { text: lines.join('\n'), relayed: false };
  };

  const headerFrom = headerFromAddress(from);
  if (headerFrom instanceof RelayError) return refuse(headerFrom);
  // --envelope "<>" asks about a null sender; without --envelope the client is assumed to use its From
  const envelope = input.envelope === '<>' || input.envelope === '' ? undefined : (input.envelope ?? headerFrom ?? '');
  const resolution = resolveSender(snapshot, { headerFrom, envelopeFrom: envelope || undefined, login: input.login });
  if (resolution instanceof RelayError) return refuse(resolution);
  const { identity, account, matchedBy } = resolution;
  lines.push(`identity:       ${identity ? `${identity.kind} ${identity.name} (${identity.address}), matched by ${matchedBy}` : "none: the default server's own account (policy.unknown_sender: default)"}`);
  lines.push(`server:         ${account.server.name}${account.server.isDefault ? ' (default)' : ''} ${account.server.host}:${account.server.port} ${account.server.security}`);
  lines.push(`upstream login: ${account.server.auth === 'none' ? '(none: auth none)' : `${account.username} (${account.via === 'override' ? "the identity's own account" : "the server's account"}, auth ${account.server.auth})`}`);
  lines.push(`limits:         ${limitsOf(account.server)} (account ${account.key})`);

  const plan = planAlignment(snapshot.policy, resolution, { from, hasReplyTo: false, senders: [] }, envelope);
  if (plan instanceof RelayError) return refuse(plan);
  lines.push(`From:           ${formatMailbox(plan.from)}${plan.writeFrom ? ` (was ${input.from ?? 'missing'})` : ' (unchanged)'}`);
  lines.push(`Reply-To:       ${plan.addReplyTo ? `${formatMailbox(plan.addReplyTo)} (added: the original From)` : '(not added)'}`);
  lines.push(`envelope from:  ${plan.envelopeFrom ? `<${plan.envelopeFrom}>` : '<> (null sender kept)'}`);
  if (snapshot.dkim.size > 0) {
    const domain = dkimDomainKey(plan.from.address.slice(plan.from.address.lastIndexOf('@') + 1));
    const key = snapshot.dkim.get(domain);
    lines.push(`DKIM:           ${key ? `signed d=${key.domain} s=${key.selector} (${key.algorithm})` : `not signed (no dkim: entry for ${domain})`}`);
  }
  lines.push('result:         relayed');
  return { text: lines.join('\n'), relayed: true };
}
