import { Readable } from 'node:stream';
import type { ConfigSnapshot } from '../config/types.js';
import { accountFor } from '../config/account.js';
import type { Logger } from '../log.js';
import { addressKey } from '../mail/address.js';
import type { QueueEntryMeta, RecipientState } from '../queue/entry.js';
import { newMessageId } from '../mail/message-id.js';
import type { QueueStore } from '../queue/store.js';
import { isRelayError } from '../errors/relay-error.js';
import { composeNotice } from './dsn.js';
import { dkimDomainKey } from '../config/dkim.js';
import { dkimSignatureOf } from '../mail/dkim-sign.js';

export interface NoticeWriterDeps {
  readonly store: QueueStore;
  readonly getSnapshot: () => ConfigSnapshot;
  readonly enqueue: (meta: QueueEntryMeta) => void;
  readonly logger: Logger;
  readonly hostname: string;
}

/**
 * Writes the failure notice for a failed entry into the queue, as a message of its own: sent
 * through the default server's account, to the original envelope sender, with a copy to
 * `queue.notify`. The notice's envelope sender is null (<>), so a notice that fails in turn never
 * produces another notice; and a message that is itself a notice gets none.
 */
export function createNoticeWriter(deps: NoticeWriterDeps) {
  return async (meta: QueueEntryMeta, failed: RecipientState[], gaveUpAfter: string | undefined): Promise<void> => {
    if (meta.notice) return;
    const snapshot = deps.getSnapshot();
    const recipients: string[] = [];
    if (meta.envelope.originalFrom !== '') recipients.push(meta.envelope.originalFrom);
    const notify = snapshot.queue.notify;
    if (notify && !recipients.some((r) => addressKey(r) === addressKey(notify))) recipients.push(notify);
    if (recipients.length === 0) return;

    const account = accountFor(snapshot, undefined);
    if (isRelayError(account)) return; // the default server always has an account; the types allow for more
    const now = new Date();
    const notice = await composeNotice({
      reportingMta: deps.hostname,
      queueId: meta.id,
      arrivalDate: new Date(meta.receivedAt),
      from: { name: 'Mail Delivery System', address: account.address },
      to: recipients[0]!,
      recipients: failed.map((r) => ({
        address: r.address,
        status: r.lastError?.enhanced ?? '5.0.0',
        ...(r.lastError?.upstreamReply ? { diagnostic: r.lastError.upstreamReply } : {}),
        reason: r.lastError?.reason ?? 'delivery failed',
        ...(r.lastError?.fix ? { fix: r.lastError.fix } : {}),
        ...(r.lastError?.host ? { remoteMta: r.lastError.host } : {}),
        ...(r.lastError?.at ? { lastAttemptAt: new Date(r.lastError.at) } : {}),
      })),
      originalHeaders: await deps.store.headerSection(meta, 'failed'),
      ...(meta.subject ? { originalSubject: meta.subject } : {}),
      ...(gaveUpAfter ? { gaveUpAfter } : {}),
      date: now,
      messageIdDomain: account.address.slice(account.address.lastIndexOf('@') + 1),
    });

    // signed like every message that leaves with a From in a dkim: domain
    const key = snapshot.dkim.get(dkimDomainKey(account.address.slice(account.address.lastIndexOf('@') + 1)));
    const dkimSignature = key ? await dkimSignatureOf(key, notice, now) : undefined;
    const id = newMessageId();
    const noticeMeta = await deps.store.accept(id, Readable.from([notice]), (size) => ({
      format: 1,
      id,
      receivedAt: now.toISOString(),
      client: { address: 'sendas', login: undefined },
      envelope: { originalFrom: '', eightBit: false },
      identity: null,
      serverName: account.server.name,
      accountAddress: account.address,
      fromBefore: undefined,
      fromAfter: account.address,
      subject: `Undelivered Mail Returned to Sender`,
      size,
      ...(dkimSignature ? { dkimSignature } : {}),
      notice: true,
      recipients: recipients.map((address) => ({ address, status: 'pending' as const, attempts: 0 })),
      attempts: 0,
      nextAttemptAt: undefined,
      lastError: undefined,
    }));
    deps.logger.info({ id: noticeMeta.id, about: meta.id, to: recipients }, 'failure notice queued');
    deps.enqueue(noticeMeta);
  };
}
