import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { parseConfig } from '../../src/config/load.js';
import type { ConfigSnapshot } from '../../src/config/types.js';
import type { QueueEntryMeta, RecipientState } from '../../src/queue/entry.js';
import { HeaderRewriteStream } from '../../src/mail/header-stream.js';
import { processHeaders, type MessageDecision } from '../../src/reception/process.js';

/** A config with a server account (relay@), a channel with override (support@), one without (sales@), an agent (alice@). */
export const BASE_YAML = `
servers:
  - name: main
    default: true
    host: smtp.acme.example
    username: relay@acme.example
    password: server-pw
  - name: backup
    host: smtp2.acme.example
    username: backup@acme.example
    password: backup-pw
channels:
  - name: support
    address: support@acme.example
    display_name: Acme Support
    override:
      password: support-pw
  - name: sales
    address: sales@acme.example
  - name: books
    address: info@bücher.example
    server: backup
agents:
  - name: alice
    address: alice@acme.example
    override:
      password: alice-pw
clients:
  - username: crm
    password: crm-pw
  - username: alice-client
    password: x
    send_as: [alice]
  - username: two
    password: y
    send_as: [alice, sales]
`;

export function snapshotOf(yaml = BASE_YAML, extra = ''): ConfigSnapshot {
  return parseConfig(yaml + extra, '/test/relay.yaml', { env: {} });
}

export const TRACE = {
  queueId: 'TESTID',
  clientHelo: 'crm.local',
  clientAddress: '127.0.0.1',
  clientHostname: 'localhost',
  relayHostname: 'relay.test',
  authenticated: false,
  secure: false,
  recipients: ['customer@example.net'],
  receivedAt: new Date(Date.UTC(2026, 10, 21, 12, 0, 0)),
};

export interface Rewritten {
  decision: MessageDecision;
  output: Buffer;
  head: string;
  body: Buffer;
}

/** Runs a raw message through the header stage exactly as the relay does, in chunks of `chunkSize`. */
export async function rewrite(
  message: string | Buffer,
  opts: { snapshot?: ConfigSnapshot; envelopeFrom?: string; login?: string; chunkSize?: number } = {},
): Promise<Rewritten> {
  const snapshot = opts.snapshot ?? snapshotOf();
  let decision: MessageDecision | undefined;
  const stream = new HeaderRewriteStream({
    maxHeaderBytes: 1024 * 1024,
    onHeaders: (h) => {
      decision = processHeaders(snapshot, h, { envelopeFrom: opts.envelopeFrom, login: opts.login }, TRACE);
    },
  });
  const input = Buffer.isBuffer(message) ? message : Buffer.from(message, 'utf8');
  const size = opts.chunkSize ?? 7;
  const chunks: Buffer[] = [];
  for (let i = 0; i < input.length; i += size) chunks.push(input.subarray(i, i + size));
  const out: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    Readable.from(chunks).pipe(stream).on('data', (c: Buffer) => out.push(c)).on('end', resolve).on('error', reject);
    stream.on('error', reject);
  });
  const output = Buffer.concat(out);
  const end = output.indexOf('\r\n\r\n');
  return { decision: decision!, output, head: output.subarray(0, end + 2).toString('utf8'), body: output.subarray(end + 4) };
}

export function header(head: string, name: string): string[] {
  const unfolded = head.replace(/\r\n[ \t]/g, ' ');
  return unfolded
    .split('\r\n')
    .filter((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))
    .map((l) => l.slice(name.length + 1).trim());
}

export { text };

/** A queue entry of channel support's, accepted from the crm login, with these recipients; `extra` overrides any field. */
export function queueEntry(recipients: RecipientState[], extra: Partial<QueueEntryMeta> = {}): QueueEntryMeta {
  return {
    format: 1,
    id: 'ABCDEFGHJKLM',
    receivedAt: '2026-01-10T12:00:00.000Z',
    client: { address: '127.0.0.1', login: 'crm' },
    envelope: { originalFrom: 'crm@acme.example', eightBit: false },
    identity: { kind: 'channel', name: 'support' },
    serverName: 'main',
    accountAddress: 'support@acme.example',
    fromBefore: 'crm@acme.example',
    fromAfter: 'support@acme.example',
    subject: 'Hello',
    size: 123,
    notice: false,
    recipients,
    attempts: 1,
    nextAttemptAt: undefined,
    lastError: undefined,
    ...extra,
  };
}
