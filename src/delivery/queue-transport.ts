import type { Readable } from 'node:stream';
import { withSignature } from '../mail/dkim-sign.js';
import type { QueueStore } from '../queue/store.js';
import type { Transport } from '../transport/transport.js';
import type { QueueTransport } from './queue-runner.js';

/**
 * How a queue entry reaches the transport: from memory when the store still holds it (a
 * message's first attempt, up to 64 KiB) and the transport takes it whole, else streamed from
 * its file, so a large message never sits in memory.
 */
export function queueTransport(store: QueueStore, transport: Transport): QueueTransport {
  return {
    async send(meta, account, envelope, route) {
      const via = route.alternate ? route : undefined;
      // signed at acceptance (reception/dkim.ts): the signature goes in front, the stored bytes are as signed
      const signature = meta.dkimSignature;
      const bytes = transport.takesWhole(account) ? store.takeMessage(meta.id) : undefined;
      if (bytes) return transport.send(account, envelope, signature ? Buffer.concat([Buffer.from(signature, 'latin1'), bytes]) : bytes, via);
      let message: Readable | undefined;
      const open = () => (signature ? withSignature(signature, store.messageStream(meta)) : store.messageStream(meta));
      try {
        message = open();
        // Graph's draft path reads a large message more than once: from its file again, never from memory
        return await transport.send(account, envelope, message, via, open);
      } finally {
        // a transaction that failed before DATA never read the file: release it
        message?.destroy();
      }
    },
    primaryFailed: (server) => transport.primaryFailed(server),
  };
}
