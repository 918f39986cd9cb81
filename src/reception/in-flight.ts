import type { Readable, Transform } from 'node:stream';
import { receptionError } from '../errors/local.js';
import { RelayError } from '../errors/relay-error.js';
import { identityLabel, type TraceEvent, type TraceEventKind } from '../history/types.js';
import { HeaderRewriteStream } from '../mail/header-stream.js';
import type { IncomingMessage } from './incoming.js';
import type { OutcomeLog } from './outcome-log.js';
import { processHeaders, type MessageDecision } from './process.js';
import { SizeGuard } from './size-guard.js';
import { LineEnds } from './line-ends.js';
import { AttachmentGuard } from './attachment-guard.js';

/** The largest header section accepted; the body is never held in memory, the header is. */
const MAX_HEADER_BYTES = 1024 * 1024;

/**
 * One message between the client's DATA and the reply: the client's stream piped through the
 * size guard and the header rewrite, the decision taken once the header section is in, and
 * what the log line about it says. The queue and passthrough hand-offs take it whole.
 */
export class MessageInFlight {
  readonly started = performance.now();
  decision: MessageDecision | undefined;
  readonly guard: SizeGuard;
  /** The message as it leaves: aligned header section, then the body bytes as they came. */
  readonly body: HeaderRewriteStream;
  /** Resolves with the decision once the header section is in; rejects when the message is refused first. */
  readonly decided: Promise<MessageDecision>;
  /** Rejects when the pipeline fails (size, header section, client gone); never resolves. */
  readonly failed: Promise<never>;
  /** Resolves once the client's data stream has been read to its end (or closed). */
  readonly clientDone: Promise<void>;

  constructor(
    readonly msg: IncomingMessage,
    relayHostname: string,
    private readonly log: OutcomeLog,
  ) {
    const { snapshot } = msg;
    let decide!: (d: MessageDecision) => void;
    const decided = new Promise<MessageDecision>((resolve) => (decide = resolve));
    const listener = msg.listener;
    this.guard = new SizeGuard(msg.stream, listener.maxMessageSize, new LineEnds(listener.bareNewline));
    // every check before the header stream: it parses only what the line-end guard let through
    const checks: Transform[] = [this.guard];
    if (listener.maxAttachmentSize !== undefined) checks.push(new AttachmentGuard(listener.maxAttachmentSize));
    this.body = new HeaderRewriteStream({
      maxHeaderBytes: MAX_HEADER_BYTES,
      onHeaders: (headers) => {
        this.decision = processHeaders(
          snapshot,
          headers,
          { envelopeFrom: msg.envelope.mailFrom, login: msg.client.login },
          {
            queueId: msg.id,
            clientHelo: msg.client.helo,
            clientAddress: msg.client.address,
            clientHostname: msg.client.hostname,
            relayHostname,
            authenticated: msg.client.login !== undefined,
            secure: msg.client.secure,
            recipients: msg.envelope.rcptTo,
            receivedAt: msg.receivedAt,
          },
        );
        decide(this.decision);
      },
    });
    this.clientDone = drainedOrEnded(msg.stream);
    this.failed = new Promise<never>((_, reject) => {
      for (const check of checks) {
        check.once('error', (err) => {
          this.body.destroy(err);
          reject(err);
        });
      }
      this.body.once('error', reject);
    });
    this.failed.catch(() => undefined);
    this.decided = Promise.race([decided, this.failed]);
    msg.stream.once('close', () => {
      // smtp-server destroys the data stream when the client disconnects mid-DATA: abort the
      // upstream transaction too, so nodemailer drops its connection instead of ending DATA,
      // and the upstream discards the partial message
      if (!msg.stream.readableEnded) {
        this.guard.destroy(new RelayError('client', { code: 421, enhanced: '4.4.2' }, 'The client disconnected before the end of the message; nothing was relayed'));
      }
    });
    let tail: Transform = checks[0]!;
    msg.stream.pipe(tail);
    for (const check of checks.slice(1)) tail = tail.pipe(check);
    tail.pipe(this.body);
  }

  /** Stops reading into the pipeline; the client's data is still read to its end (it gets one reply). */
  stopReading(): void {
    this.msg.stream.unpipe(this.guard);
    this.msg.stream.resume();
  }

  /** Refuses the message: drains the client, logs the refusal, throws the reply's error. */
  async refuse(err: unknown): Promise<never> {
    this.stopReading();
    await this.clientDone;
    const relayError = receptionError(err, this.msg.id);
    const { rcptTo } = this.msg.envelope;
    this.log.record('refused', { ...this.logFields(this.msg.stream.byteLength), messageId: this.decision?.messageId, to: rcptTo, ...relayError.toLog() });
    // the line above is the trace of a refusal at SMTP time; the history gets a row per recipient, so a search by any of them finds it
    const at = new Date().toISOString();
    const reply = `${relayError.status.code} ${relayError.replyText}`;
    for (const recipient of rcptTo) this.log.kept(this.traceEvent('refused', recipient, at, { reply, kind: relayError.kind, ...(relayError.fix ? { fix: relayError.fix } : {}) }));
    throw relayError;
  }

  /** A trace event about one of this message's recipients. */
  traceEvent(event: TraceEventKind, recipient: string, at: string, more: Partial<TraceEvent> = {}): TraceEvent {
    const { msg, decision } = this;
    const account = decision?.resolution.account;
    return {
      at,
      event,
      queueId: msg.id,
      messageId: decision?.messageId,
      envelopeFrom: msg.envelope.mailFrom ?? '',
      recipient,
      identity: decision ? identityLabel(decision.resolution.identity) : undefined,
      account: account?.key,
      server: account?.server.name,
      ...more,
    };
  }

  /** smtp-server flagged the message as over the size limit (it answers 552 itself). */
  get tooLarge(): boolean {
    return this.msg.stream.sizeExceeded === true;
  }

  /** The fields every log line about this message carries. */
  logFields(size: number | undefined): Record<string, unknown> {
    const { msg, decision } = this;
    return {
      id: msg.id,
      client: msg.client.address,
      login: msg.client.login,
      envelopeFrom: msg.envelope.mailFrom ?? '<>',
      recipients: msg.envelope.rcptTo.length,
      ...(decision ? decisionFields(decision) : {}),
      size,
      durationMs: Math.round(performance.now() - this.started),
    };
  }
}


function decisionFields(decision: MessageDecision): Record<string, unknown> {
  const { resolution, plan, headerFrom } = decision;
  return {
    identity: identityLabel(decision.resolution.identity),
    matchedBy: resolution.matchedBy,
    server: resolution.account.server.name,
    upstreamLogin: resolution.account.server.auth === 'none' ? undefined : resolution.account.username,
    fromBefore: headerFrom,
    fromAfter: plan.from.address,
    envelopeAfter: plan.envelopeFrom || '<>',
  };
}


function drainedOrEnded(stream: Readable): Promise<void> {
  if (stream.readableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
  });
}
