import { hostname } from 'node:os';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import type { AddressInfo } from 'node:net';
import type { ConfigSnapshot } from './config/types.js';
import { deliverInThread, deliverNow, type DeliveryOutcome } from './delivery/send.js';
import type { UpstreamEnvelope } from './mail/envelope.js';
import { takeIfSmall } from './mail/small-message.js';
import { QueueRunner } from './delivery/queue-runner.js';
import { createNoticeWriter } from './notify/notice-writer.js';
import { QueueStore } from './queue/store.js';
import type { QueueEntryMeta } from './queue/entry.js';
import { QueueControl } from './queue/control.js';
import { RelayError, isRelayError } from './errors/relay-error.js';
import type { Logger } from './log.js';
import { Listener, type IncomingMessage } from './listener/server.js';
import { HeaderRewriteStream, HeaderTooLargeError } from './mail/header-stream.js';
import { processHeaders, type MessageDecision } from './reception/process.js';
import { TransportPools } from './transport/pools.js';
import { UpstreamThread } from './transport/upstream-thread.js';
import { DEFAULT_TUNING } from './transport/options.js';
import { ConfigError, loadConfigFile, type ConfigIssue } from './config/load.js';
import { describeChange, diffSnapshots, isEmptyChange, type ConfigChange } from './config/diff.js';
import { accountFor, type Account } from './config/account.js';
import { RelayMetrics } from './ops/metrics.js';
import { TokenProvider } from './oauth/tokens.js';
import { relayStatus, type RelayStatus } from './ops/status.js';
import { access, constants } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** The largest header section accepted; the body is never held in memory, the header is. */
const MAX_HEADER_BYTES = 1024 * 1024;

export interface RelayOptions {
  readonly snapshot: ConfigSnapshot;
  readonly logger: Logger;
  /** Name used in the greeting, EHLO upstream and Received headers; defaults to the host name. */
  readonly hostname?: string;
  /** On stop, how long running deliveries may take before the rest is left queued. */
  readonly shutdownGraceMs?: number;
}

/**
 * The relay: listener → identity resolution → header policy → delivery → upstream transport,
 * wired together. It holds the current config snapshot; everything downstream reads the
 * snapshot a message was accepted under.
 */
export class Relay {
  private snapshot: ConfigSnapshot;
  private readonly logger: Logger;
  private readonly listener: Listener;
  private readonly pools: TransportPools;
  private readonly hostname: string;
  private readonly queue: { store: QueueStore; runner: QueueRunner; control: QueueControl } | undefined;
  /** Upstream SMTP for small messages of password and no-auth accounts, off the main thread (upstream-thread.ts). */
  private readonly upstreamThread: UpstreamThread;
  private readonly graceMs: number;
  readonly metrics: RelayMetrics;
  private readonly tokens: TokenProvider;
  private loadedAt = new Date();
  private lastReloadError: { at: Date; issues: readonly ConfigIssue[] } | undefined;
  private lastSeenFiles: string | undefined;

  constructor(opts: RelayOptions) {
    this.snapshot = opts.snapshot;
    this.logger = opts.logger;
    this.hostname = opts.hostname ?? hostname();
    this.graceMs = opts.shutdownGraceMs ?? 5_000;
    this.tokens = new TokenProvider({ stateDir: () => this.snapshot.stateDir, logger: this.logger, loginHint: `sendas oauth login --config ${this.snapshot.file}` });
    this.pools = new TransportPools({ ...DEFAULT_TUNING, helo: this.hostname }, this.tokens);
    this.metrics = new RelayMetrics({
      queueStats: () => this.queue?.runner.stats() ?? { depth: 0, oldestAgeSeconds: 0 },
      upstreamConnections: () => this.pools.openConnections() + this.upstreamThread.openConnections(),
    });
    this.metrics.setConfigVersion(this.snapshot.version);
    this.lastSeenFiles = this.filesFingerprint();
    const upstreamThread = (this.upstreamThread = new UpstreamThread(this.pools, { ...DEFAULT_TUNING, helo: this.hostname }));
    if (this.snapshot.delivery === 'queue') {
      const store = new QueueStore(this.snapshot.queue.dir);
      const getSnapshot = () => this.snapshot;
      let runner: QueueRunner | undefined;
      const writeNotice = createNoticeWriter({ store, getSnapshot, enqueue: (m) => runner?.enqueue(m), logger: this.logger, hostname: this.hostname });
      runner = new QueueRunner({ store, getSnapshot, pools: this.pools, logger: this.logger, maxPerAccount: DEFAULT_TUNING.maxConnections, writeNotice, metrics: this.metrics, upstreamThread });
      this.queue = { store, runner, control: new QueueControl(store, runner, this.logger) };
    }
    this.listener = new Listener({
      getSnapshot: () => this.snapshot,
      handleMessage: (m) => this.handleMessage(m),
      logger: this.logger,
      hostname: this.hostname,
    });
  }

  /** Binds the configured address (or the given override, e.g. port 0 in tests). */
  async start(bind?: { host?: string; port?: number }): Promise<AddressInfo> {
    if (this.queue) {
      // claim the queue directory first: two relays on one queue would deliver messages twice
      await this.queue.store.init();
      await this.queue.control.start();
      const pending = await this.queue.runner.start();
      this.logger.info({ dir: this.queue.store.dir, pending }, pending ? `picked up ${pending} queued message${pending === 1 ? '' : 's'}` : 'queue is empty');
    }
    // the first message must not pay for loading nodemailer in the thread
    await this.upstreamThread.ready();
    const host = bind?.host ?? this.snapshot.listen.host;
    const port = bind?.port ?? this.snapshot.listen.port;
    const address = await this.listener.listen(host, port);
    this.logger.info({ host: address.address, port: address.port, config: this.snapshot.file, version: this.snapshot.version }, 'sendas listening');
    for (const w of this.snapshot.warnings) this.logger.warn({ path: w.path }, w.message);
    return address;
  }

  get currentSnapshot(): ConfigSnapshot {
    return this.snapshot;
  }

  /**
   * Re-reads the config file. Valid: the new snapshot replaces the old one at once (sessions in
   * progress keep theirs; queued messages use it at their next attempt) and pools of accounts
   * that changed or disappeared are closed. Invalid: the relay keeps serving with the last good
   * config, and the errors are logged and shown in /status until a valid file arrives.
   */
  reloadFromFile(reason: string): ConfigChange | undefined {
    // a SIGHUP and the watcher's event for the same edit, or an editor touching the file: only
    // parse when the bytes of the file or of a secret file changed
    const seen = this.filesFingerprint();
    if (seen !== undefined && seen === this.lastSeenFiles) return undefined;
    this.lastSeenFiles = seen;
    let next: ConfigSnapshot;
    try {
      next = loadConfigFile(this.snapshot.file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const repeated = this.lastReloadError && JSON.stringify(this.lastReloadError.issues) === JSON.stringify(err.issues);
      this.lastReloadError = { at: new Date(), issues: err.issues };
      this.metrics.reloads.inc({ result: 'failed' });
      if (!repeated) {
        this.logger.error(
          { reason, file: err.file, issues: err.issues, version: this.snapshot.version },
          `configuration reload failed; still serving with version ${this.snapshot.version}: ${err.issues.length} problem${err.issues.length === 1 ? '' : 's'}`,
        );
      }
      return undefined;
    }
    if (next.version === this.snapshot.version) {
      // an editor touched the file, or a directory event: nothing to do, but an earlier error is over
      if (this.lastReloadError) this.recovered(next, reason);
      return undefined;
    }
    return this.apply(next, reason);
  }

  /** A digest of the config file and the secret files it references, as they are on disk now. */
  private filesFingerprint(): string | undefined {
    try {
      const hash = createHash('sha256').update(readFileSync(this.snapshot.file));
      for (const f of this.snapshot.secretFiles) {
        try {
          hash.update('\0').update(readFileSync(f));
        } catch {
          hash.update('\0-');
        }
      }
      return hash.digest('hex');
    } catch {
      return undefined;
    }
  }

  /** Swaps in a validated snapshot. */
  apply(next: ConfigSnapshot, reason = 'api'): ConfigChange {
    const change = diffSnapshots(this.snapshot, next);
    this.snapshot = next;
    this.loadedAt = new Date();
    const hadError = this.lastReloadError !== undefined;
    this.lastReloadError = undefined;
    this.logger.level = next.log.level;
    this.listener.applyLimits(next);
    const wanted = this.wantedPools(next);
    const closed = this.pools.retain(wanted);
    this.upstreamThread.retain(wanted);
    this.metrics.reloads.inc({ result: 'ok' });
    this.metrics.setConfigVersion(next.version);
    const fields = { reason, version: next.version, change, closedPools: closed, ...(hadError ? { recovered: true } : {}) };
    const text = `configuration reloaded (version ${next.version}): ${describeChange(change)}`;
    if (change.needsRestart.length > 0) this.logger.warn(fields, `${text}. Restart sendas to apply ${change.needsRestart.join(', ')}`);
    else this.logger.info(fields, isEmptyChange(change) ? `configuration reloaded (version ${next.version}): secrets or formatting only` : text);
    for (const w of next.warnings) this.logger.warn({ path: w.path }, w.message);
    return change;
  }

  private recovered(current: ConfigSnapshot, reason: string): void {
    this.lastReloadError = undefined;
    this.metrics.reloads.inc({ result: 'ok' });
    this.logger.info({ reason, version: current.version, recovered: true }, `configuration is valid again (version ${current.version}, unchanged)`);
  }

  /** Every pool the new config can use, with its settings fingerprint: the rest are closed. */
  private wantedPools(snapshot: ConfigSnapshot): Map<string, string> {
    const wanted = new Map<string, string>();
    const add = (identity: Parameters<typeof accountFor>[1]) => {
      const account = accountFor(snapshot, identity);
      if (isRelayError(account)) return;
      const [key, fingerprint] = this.pools.identify(account);
      wanted.set(key, fingerprint);
      const alt = account.server.alternate;
      if (alt) {
        const [altKey, altFingerprint] = this.pools.identify(account, { host: alt.host, port: alt.port });
        wanted.set(altKey, altFingerprint);
      }
    };
    add(undefined);
    for (const identity of snapshot.identities) add(identity);
    return wanted;
  }

  /** /readyz: listener bound, config loaded, queue writable. */
  async ready(): Promise<{ ready: boolean; problems: string[] }> {
    const problems: string[] = [];
    if (!this.listener.listening) problems.push('the SMTP listener is not bound');
    if (this.queue) {
      try {
        for (const area of ['tmp', 'journal'] as const) await access(this.queue.store.areaDir(area), constants.W_OK);
      } catch {
        problems.push(`the queue directory ${this.queue.store.dir} is not writable`);
      }
    }
    return { ready: problems.length === 0, problems };
  }

  /** /status: what ops want to see at a glance. */
  status(): RelayStatus {
    return relayStatus({
      snapshot: this.snapshot,
      loadedAt: this.loadedAt,
      lastReloadError: this.lastReloadError,
      queue: this.queue?.runner.stats(),
    });
  }

  /**
   * New sessions get 421; running deliveries get `shutdownGraceMs` to finish; whatever is left
   * stays in the queue for the next start.
   */
  async stop(): Promise<void> {
    this.listener.drain();
    if (this.queue) {
      await this.queue.runner.stop(this.graceMs);
      await this.queue.control.stop();
    }
    await this.listener.close();
    await this.queue?.store.close();
    await this.upstreamThread.close();
    this.pools.closeAll();
  }

  private async handleMessage(msg: IncomingMessage): Promise<string> {
    const started = performance.now();
    const { snapshot } = msg;
    let decision: MessageDecision | undefined;
    const logBase = {
      id: msg.id,
      client: msg.client.address,
      login: msg.client.login,
      envelopeFrom: msg.envelope.mailFrom ?? '<>',
      recipients: msg.envelope.rcptTo.length,
    };

    let decided!: (d: MessageDecision) => void;
    const decidedP = new Promise<MessageDecision>((resolve) => (decided = resolve));
    const guard = new SizeGuard(msg.stream, snapshot.listen.maxMessageSize);
    const rewrite = new HeaderRewriteStream({
      maxHeaderBytes: MAX_HEADER_BYTES,
      onHeaders: (headers) => {
        decision = processHeaders(
          snapshot,
          headers,
          { envelopeFrom: msg.envelope.mailFrom, login: msg.client.login },
          {
            queueId: msg.id,
            clientHelo: msg.client.helo,
            clientAddress: msg.client.address,
            clientHostname: msg.client.hostname,
            relayHostname: this.hostname,
            authenticated: msg.client.login !== undefined,
            secure: msg.client.secure,
            recipients: msg.envelope.rcptTo,
            receivedAt: msg.receivedAt,
          },
        );
        decided(decision);
      },
    });
    const clientDone = drainedOrEnded(msg.stream);
    const failed = new Promise<never>((_, reject) => {
      guard.once('error', (err) => {
        rewrite.destroy(err);
        reject(err);
      });
      rewrite.once('error', reject);
    });
    failed.catch(() => undefined);
    msg.stream.once('close', () => {
      // smtp-server destroys the data stream when the client disconnects mid-DATA: abort the
      // upstream transaction too, so nodemailer drops its connection instead of ending DATA,
      // and the upstream discards the partial message
      if (!msg.stream.readableEnded) {
        guard.destroy(new RelayError('client', { code: 421, enhanced: '4.4.2' }, 'The client disconnected before the end of the message; nothing was relayed'));
      }
    });
    msg.stream.pipe(guard).pipe(rewrite);

    const refuse = async (err: unknown): Promise<never> => {
      // stop reading into the pipeline, but read the client's data to its end before replying
      msg.stream.unpipe(guard);
      msg.stream.resume();
      await clientDone;
      const relayError = toRelayError(err, msg.id);
      this.logOutcome('refused', { ...logBase, ...decisionLog(decision), size: msg.stream.byteLength, durationMs: ms(started), ...relayError.toLog() });
      throw relayError;
    };

    try {
      await Promise.race([decidedP, failed]);
    } catch (err) {
      return refuse(err);
    }
    if (this.queue) return this.acceptIntoQueue(msg, decision!, rewrite, guard, failed, refuse, logBase, started);
    return this.relayNow(msg, decision!, rewrite, guard, failed, clientDone, refuse, logBase, started);
  }

  /** delivery: queue — 250 once the message, its envelope and its routing are durably on disk. */
  private async acceptIntoQueue(
    msg: IncomingMessage,
    decision: MessageDecision,
    rewrite: Readable,
    guard: SizeGuard,
    failed: Promise<never>,
    refuse: (err: unknown) => Promise<never>,
    logBase: Record<string, unknown>,
    started: number,
  ): Promise<string> {
    const { store, runner } = this.queue!;
    const { resolution, plan } = decision;
    let meta: QueueEntryMeta;
    const accepting = store.accept(msg.id, rewrite, (size) => ({
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
      size,
      notice: false,
      recipients: msg.envelope.rcptTo.map((address) => ({ address, status: 'pending' as const, attempts: 0 })),
      attempts: 0,
      nextAttemptAt: undefined,
      lastError: undefined,
    }));
    try {
      meta = await Promise.race([accepting, failed]);
    } catch (err) {
      // A failed queue write stops the store reading the message, and the pipeline then reports a
      // premature close, often first: the write's own system error is the one that says what happened.
      const own = await accepting.then(
        (written) => void store.remove(written.id).catch(() => undefined),
        (e: unknown) => e,
      );
      return refuse(queueWriteError(isSystemError(own) ? own : err, msg.id));
    }
    if (msg.stream.sizeExceeded) {
      // smtp-server answers 552: the entry must not be delivered
      await store.remove(meta.id);
      return refuse(guard.tooLarge());
    }
    runner.enqueue(meta);
    this.logOutcome('queued', {
      ...logBase,
      ...decisionLog(decision),
      size: meta.size,
      durationMs: ms(started),
    });
    return `2.0.0 Queued as ${msg.id}: sending as ${resolution.account.address} through ${resolution.account.server.name}`;
  }

  /** delivery: passthrough — 250 only after the upstream accepted. */
  /**
   * A small message (the usual case) for a password or no-auth account is read to its end and
   * handed whole to the upstream thread, so the main thread, which runs every client session,
   * is spared the upstream conversation; the upstream transaction then starts after the client's
   * DATA instead of beside it. A larger one, or one for XOAUTH2 or Graph, is streamed through the
   * main thread's pools as it arrives (memory stays flat).
   */
  private async deliverPassthrough(account: Account, envelope: UpstreamEnvelope, rewrite: Readable, failed: Promise<never>): Promise<DeliveryOutcome> {
    if (!this.upstreamThread.handles(account)) return deliverNow(this.pools, account, envelope, rewrite);
    const taken = await Promise.race([takeIfSmall(rewrite), failed]);
    if ('bytes' in taken) return deliverInThread(this.upstreamThread, account, envelope, taken.bytes);
    return deliverNow(this.pools, account, envelope, taken.stream);
  }

  private async relayNow(
    msg: IncomingMessage,
    decision: MessageDecision,
    rewrite: Readable,
    guard: SizeGuard,
    failed: Promise<never>,
    clientDone: Promise<void>,
    refuse: (err: unknown) => Promise<never>,
    logBase: Record<string, unknown>,
    started: number,
  ): Promise<string> {
    const { account } = decision.resolution;
    this.logger.debug({ id: msg.id, server: account.server.name, account: account.key }, 'upstream transaction started');

    const envelope = { from: decision.plan.envelopeFrom, to: msg.envelope.rcptTo, eightBit: msg.envelope.eightBit };
    let outcome: DeliveryOutcome;
    try {
      outcome = await Promise.race([this.deliverPassthrough(account, envelope, rewrite, failed), failed]);
    } catch (err) {
      return refuse(err);
    }
    if (outcome.accepted.length === 0) {
      msg.stream.unpipe(guard);
      msg.stream.resume();
    }
    await clientDone;
    if (msg.stream.sizeExceeded) {
      // smtp-server answers 552 itself; the upstream never got the end of the message
      return refuse(guard.tooLarge());
    }

    const base = { ...logBase, ...decisionLog(decision), size: msg.stream.byteLength, durationMs: ms(started), upstreamReply: outcome.upstreamReply };
    const refusedText = outcome.refused.map((r) => `<${r.recipient}> ${r.error.upstreamReply ?? r.error.replyText}`).join('; ');
    if (outcome.accepted.length === 0) {
      // every recipient refused: pass on a temporary code if any refusal was temporary, so the client retries
      const first = outcome.refused.find((r) => r.error.temporary) ?? outcome.refused[0];
      const status = first?.error.status ?? { code: 550, enhanced: '5.1.1' };
      const err = new RelayError('recipient', status, `Upstream ${account.server.name} accepted none of the recipients: ${refusedText}`);
      this.logOutcome('refused', { ...base, ...err.toLog() });
      throw err;
    }
    if (outcome.refused.length > 0) {
      // SMTP has one reply per message: the accepted part was sent, so the reply is 250 and names the refused ones
      this.logOutcome('partial', { ...base, accepted: outcome.accepted.length, refused: outcome.refused.map((r) => ({ recipient: r.recipient, ...r.error.toLog() })) });
      return `2.0.0 Relayed as ${account.address} to ${outcome.accepted.length} of ${outcome.accepted.length + outcome.refused.length} recipients (id ${msg.id}); refused upstream: ${refusedText}`;
    }
    this.logOutcome('relayed', base);
    return `2.0.0 Relayed as ${account.address} through ${account.server.name} (id ${msg.id})`;
  }

  /** The one place a message's outcome at SMTP time is recorded: log line and metrics together. */
  private logOutcome(result: 'relayed' | 'queued' | 'partial' | 'refused', fields: Record<string, unknown>): void {
    const server = typeof fields.server === 'string' ? fields.server : 'none';
    if (result === 'refused') {
      this.metrics.refused.inc({ reason: String(fields.kind ?? 'internal'), server });
    } else {
      this.metrics.received.inc({ server });
      if (result !== 'queued') this.metrics.relayed.inc({ server });
    }
    const level = result === 'relayed' || result === 'queued' ? 'info' : 'warn';
    this.logger[level]({ result, ...fields }, `message ${result}`);
  }
}

function decisionLog(decision: MessageDecision | undefined): Record<string, unknown> {
  if (!decision) return {};
  const { resolution, plan } = decision;
  return {
    identity: resolution.identity ? `${resolution.identity.kind}:${resolution.identity.name}` : '(default account)',
    matchedBy: resolution.matchedBy,
    server: resolution.account.server.name,
    upstreamLogin: resolution.account.server.auth === 'none' ? undefined : resolution.account.username,
    fromBefore: decision.headerFrom,
    fromAfter: plan.from.address,
    envelopeAfter: plan.envelopeFrom || '<>',
  };
}

function toRelayError(err: unknown, id: string): RelayError {
  if (isRelayError(err)) return err;
  if (err instanceof HeaderTooLargeError) {
    return new RelayError('message', { code: 552, enhanced: '5.3.4' }, `The header section is larger than ${err.limit} bytes`);
  }
  return new RelayError('internal', { code: 451, enhanced: '4.3.0' }, `Internal error in the relay; the message was not sent (id ${id})`, { cause: err });
}

/**
 * A file-system failure while writing a queue entry, said as such: the client keeps the message
 * and retries (4xx), ops see the system's error code. A full disk is 452 4.3.1, "insufficient
 * system storage" (RFC 5321, RFC 3463), as Postfix answers.
 */
function queueWriteError(err: unknown, id: string): unknown {
  if (isRelayError(err) || !isSystemError(err)) return err;
  const { code } = err;
  const full = code === 'ENOSPC' || code === 'EDQUOT';
  return new RelayError('internal', full ? { code: 452, enhanced: '4.3.1' } : { code: 451, enhanced: '4.3.0' }, `The relay could not store the message in its queue (${code}${full ? ': the disk is full' : ''}); nothing was accepted, send it again later (id ${id})`, { cause: err });
}

/** An error of a system call (ENOSPC, EACCES…), as opposed to Node's own ERR_… codes. */
function isSystemError(err: unknown): err is NodeJS.ErrnoException & { code: string } {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code);
}

function ms(started: number): number {
  return Math.round(performance.now() - started);
}

/** Resolves once the client's data stream has been read to its end. */
function drainedOrEnded(stream: Readable): Promise<void> {
  if (stream.readableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
  });
}

/**
 * Stops the pipeline as soon as smtp-server flags the message as over `max_message_size`, so an
 * oversized message is never completed upstream while the client is told 552.
 */
class SizeGuard extends Transform {
  constructor(
    private readonly source: { sizeExceeded?: boolean },
    private readonly limit: number,
  ) {
    super();
  }

  tooLarge(): RelayError {
    return new RelayError('message', { code: 552, enhanced: '5.3.4' }, `Message exceeds the maximum size of ${this.limit} bytes`);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.source.sizeExceeded) done(this.tooLarge());
    else done(null, chunk);
  }
}
