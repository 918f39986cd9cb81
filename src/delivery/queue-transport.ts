import type { Readable } from 'node:stream';
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
      const bytes = transport.takesWhole(account) ? store.takeMessage(meta.id) : undefined;
      if (bytes) return transport.send(account, envelope, bytes, via);
      let message: Readable | undefined;
      try {
        message = store.messageStream(meta);
        // Graph's draft path reads a large message more than once: from its file again, never from memory
        return await transport.send(account, envelope, message, via, () => store.messageStream(meta));
      } finally {
        // a transaction that failed before DATA never read the file: release it
        message?.destroy();
      }
    },
    primaryFailed: (server) => transport.primaryFailed(server),
  };
}
