import type { Readable } from 'node:stream';
import type { ConfigSnapshot, ListenConfig } from '../config/types.js';

/** A message as the listener hands it to reception: the client's bytes still streaming in. */
export interface IncomingMessage {
  /** Short id used in the Received header, the reply and every log line about this message. */
  readonly id: string;
  /** The snapshot the client's session started with: the whole message is handled under it. */
  readonly snapshot: ConfigSnapshot;
  /** The settings of the listener it came in on (its size limit, …), from the same snapshot. */
  readonly listener: ListenConfig;
  readonly stream: Readable & { sizeExceeded?: boolean; byteLength?: number };
  readonly envelope: {
    /** undefined for the null sender <>. */
    readonly mailFrom: string | undefined;
    readonly rcptTo: readonly string[];
    readonly eightBit: boolean;
  };
  readonly client: {
    readonly address: string;
    readonly hostname: string | undefined;
    readonly helo: string;
    readonly login: string | undefined;
    readonly secure: boolean;
  };
  readonly receivedAt: Date;
}

/** Handles one message; resolves with the text of the 250 reply, rejects with a RelayError. */
export type MessageHandler = (message: IncomingMessage) => Promise<string>;
