import { queueWriteError, isSystemError } from '../errors/local.js';
import type { QueueEntryMeta } from '../queue/entry.js';
import type { QueueStore } from '../queue/store.js';
import type { MessageInFlight } from './in-flight.js';
import type { OutcomeLog } from './outcome-log.js';
import type { MessageDecision } from './process.js';
import { signedBy, signingKeyFor, signWhileStoring } from './dkim.js';

/** Where reception puts a message in `delivery: queue`: the store, and whoever delivers what it holds. */
export interface QueueIntake {
  readonly store: QueueStore;
  /** The entry is durable: deliver it. */
  enqueue(meta: QueueEntryMeta): void;
}

/** delivery: queue — 250 once the message, its envelope and its routing are durably on disk. */
export async function acceptIntoQueue(m: MessageInFlight, decision: MessageDecision, queue: QueueIntake, log: OutcomeLog): Promise<string> {
  const { msg } = m;
  const { store } = queue;
  const key = signingKeyFor(msg.snapshot, decision);
  const signing = key ? signWhileStoring(m, key) : undefined;
  const accepting = store.accept(msg.id, signing ?? m.body, (size) => ({ ...entryMeta(m, decision, size), ...(signing ? { dkimSignature: signing.signature } : {}) }));
  let meta: QueueEntryMeta;
  try {
    meta = await Promise.race([accepting, m.failed]);
  } catch (err) {
    // A failed queue write stops the store reading the message, and the pipeline then reports a
    // premature close, often first: the write's own system error is the one that says what happened.
    const own = await accepting.then(
      (written) => void store.remove(written.id).catch(() => undefined),
      (e: unknown) => e,
    );
    return m.refuse(queueWriteError(isSystemError(own) ? own : err, msg.id));
  }
  if (m.tooLarge) {
    // smtp-server answers 552: the entry must not be delivered
    await store.remove(meta.id);
    return m.refuse(m.guard.tooLarge());
  }
  queue.enqueue(meta);
  log.record('queued', { ...m.logFields(meta.size), ...(key ? { dkim: signedBy(key) } : {}) });
  const at = meta.receivedAt;
  for (const recipient of msg.envelope.rcptTo) log.traced(m.traceEvent('queued', recipient, at));
  const { account } = decision.resolution;
  return `2.0.0 Queued as ${msg.id}: sending as ${account.address} through ${account.server.name}`;
}

function entryMeta(m: MessageInFlight, decision: MessageDecision, size: number): QueueEntryMeta {
  const { msg } = m;
  const { resolution, plan } = decision;
  return {
    format: 1,
    id: msg.id,
    receivedAt: msg.receivedAt.toISOString(),
    client: { address: msg.client.address, login: msg.client.login },
    envelope: { originalFrom: msg.envelope.mailFrom ?? '', eightBit: msg.envelope.eightBit },
    identity: resolution.identity ? { kind: resolution.identity.kind, name: resolution.identity.name } : null,
    serverName: resolution.account.server.name,
    accountAddress: resolution.account.address,
    fromBefore: decision.headerFrom,
    fromAfter: plan.from.address,
    subject: decision.subject,
    ...(decision.messageId !== undefined ? { messageId: decision.messageId } : {}),
    size,
    notice: false,
    recipients: msg.envelope.rcptTo.map((address) => ({ address, status: 'pending' as const, attempts: 0 })),
    attempts: 0,
    nextAttemptAt: undefined,
    lastError: undefined,
  };
}
