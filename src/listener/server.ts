import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAddress, type SMTPServerAuthentication, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import type { ConfigSnapshot } from '../config/types.js';
import { RelayError, internalError, isRelayError } from '../errors/relay-error.js';
import type { Logger } from '../log.js';
import { newMessageId } from '../mail/message-id.js';
import { AllowList } from './access.js';
import { ReverseLookupCache } from './reverse-cache.js';
import type { IncomingMessage, MessageHandler } from '../reception/incoming.js';
import { ListenerGuard } from './guard.js';
import { installSmtpServerPatches, observeConnections, warnAboutFailedPatches } from './smtp-server-adapter.js';

export interface ListenerOptions {
  /** The snapshot a new session uses; a session keeps the one it started with. */
  readonly getSnapshot: () => ConfigSnapshot;
  readonly handleMessage: MessageHandler;
  readonly logger: Logger;
  readonly hostname: string;
  /** `limits:`; one guard for all listeners of a relay, so their counts add up. */
  readonly guard?: ListenerGuard;
}

/**
 * The SMTP side facing the legacy software: smtp-server with SIZE, 8BITMIME, PIPELINING,
 * SMTPUTF8 and AUTH PLAIN/LOGIN against `clients`. STARTTLS is not offered (no certificate is
 * configured yet), so smtp-server's built-in, publicly known certificate is never used, and
 * legacy clients that can't do TLS may still log in.
 */
export class Listener {
  private readonly server: SMTPServer;
  private readonly snapshots = new Map<string, ConfigSnapshot>();
  private readonly allowLists = new WeakMap<ConfigSnapshot, AllowList>();
  private draining = false;
  private readonly guard: ListenerGuard;

  constructor(private readonly opts: ListenerOptions) {
    warnAboutFailedPatches(opts.logger, installSmtpServerPatches());
    const snapshot = opts.getSnapshot();
    const guard = (this.guard = opts.guard ?? new ListenerGuard({ logger: opts.logger }));
    this.server = new SMTPServer({
      name: opts.hostname,
      banner: 'sendas relay',
      size: snapshot.listen.maxMessageSize,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      allowInsecureAuth: true,
      disabledCommands: ['STARTTLS'],
      hideENHANCEDSTATUSCODES: false,
      logger: false,
      // the client's name for the Received header: one PTR query per address every few minutes, not one per connection
      resolver: new ReverseLookupCache(),
      // only a backstop: the guard's limits.idle_timeout comes first with its own reply (and it waits while the upstream works)
      socketTimeout: backstopTimeout(snapshot),
      closeTimeout: 30_000,
      onConnect: (session, cb) => {
        if (this.draining) {
          cb(new RelayError('internal', { code: 421, enhanced: '4.3.2' }, 'sendas is shutting down; try again in a moment').toSmtpServerError());
          return;
        }
        const current = opts.getSnapshot();
        const refusal = guard.admit(session.id, session.remoteAddress, current.limits);
        if (refusal) return cb(refusal.toSmtpServerError());
        this.snapshots.set(session.id, current);
        // AUTH is offered only while there are client logins; decided per session, so a reload that adds the first one applies at once
        (session as SMTPServerSession & { disabledCommands?: string[] }).disabledCommands = current.clients.length > 0 ? ['STARTTLS'] : ['STARTTLS', 'AUTH'];
        cb();
      },
      onClose: (session) => {
        guard.release(session.id);
        this.snapshots.delete(session.id);
      },
      onAuth: (auth, session, cb) => this.onAuth(auth, session, cb),
      onRcptTo: (address, session, cb) => cb(guard.recipientRefusal(session.remoteAddress, session.envelope.rcptTo, address.address, this.snapshotOf(session).limits)?.toSmtpServerError()),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onData: (stream, session, cb) => this.onData(stream, session, cb),
    });
    observeConnections(this.server, guard.observer((id) => (this.snapshots.get(id) ?? opts.getSnapshot()).limits));
    this.server.on('error', (err) => opts.logger.warn({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code } }, 'client connection error'));
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.server.off('error', onError);
        resolve();
      });
    });
    return this.server.server.address() as AddressInfo;
  }

  /** A reloaded config: limits that smtp-server reads per message apply from the next one. */
  applyLimits(snapshot: ConfigSnapshot): void {
    (this.server.options as { size?: number }).size = snapshot.listen.maxMessageSize;
    (this.server.options as { socketTimeout?: number }).socketTimeout = backstopTimeout(snapshot);
  }

  get listening(): boolean {
    return this.server.server.listening;
  }

  /** New sessions get 421 from now on; sessions in progress carry on. */
  drain(): void {
    this.draining = true;
  }

  /** Stops accepting connections; sessions in progress may finish (bounded by closeTimeout). */
  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private snapshotOf(session: SMTPServerSession): ConfigSnapshot {
    return this.snapshots.get(session.id) ?? this.opts.getSnapshot();
  }

  private allowListOf(snapshot: ConfigSnapshot): AllowList {
    let list = this.allowLists.get(snapshot);
    if (!list) {
      list = new AllowList(snapshot.listen.allow);
      this.allowLists.set(snapshot, list);
    }
    return list;
  }

  private onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, response?: { user: string }) => void): void {
    const snapshot = this.snapshotOf(session);
    const verify = () => {
      const client = snapshot.clientsByUsername.get(auth.username ?? '');
      if (client && typeof auth.password === 'string' && sameSecret(auth.password, client.password.reveal())) return client.username;
      this.opts.logger.warn({ client: session.remoteAddress, login: auth.username, method: auth.method }, 'client login refused');
      return undefined;
    };
    this.guard.authenticate(session.remoteAddress, auth.username ?? '', snapshot.limits.auth, verify).then(
      (user) => (typeof user === 'string' ? cb(null, { user }) : cb(user.toSmtpServerError())),
      (err: unknown) => cb(internalError(session.id, err).toSmtpServerError()),
    );
  }

  private onMailFrom(_address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    if (session.user) return cb();
    const snapshot = this.snapshotOf(session);
    if (this.allowListOf(snapshot).allows(session.remoteAddress)) return cb();
    this.opts.logger.warn({ client: session.remoteAddress }, 'relaying refused: client neither logged in nor in listen.allow');
    const how = snapshot.clients.length > 0 ? 'log in with one of the relay client accounts, or connect' : 'connect';
    cb(new RelayError('access', { code: 530, enhanced: '5.7.0' }, `Authentication required: ${how} from an address in listen.allow`).toSmtpServerError());
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const mailFrom = session.envelope.mailFrom === false ? undefined : session.envelope.mailFrom;
    const args = (mailFrom?.args ?? {}) as Record<string, string | boolean | undefined>;
    const message: IncomingMessage = {
      id: newMessageId(),
      snapshot: this.snapshotOf(session),
      stream,
      envelope: {
        mailFrom: mailFrom?.address ? mailFrom.address : undefined,
        rcptTo: session.envelope.rcptTo.map((r) => r.address),
        eightBit: String(args.BODY ?? '').toUpperCase() === '8BITMIME' || args.SMTPUTF8 === true,
      },
      client: {
        address: session.remoteAddress,
        hostname: session.clientHostname && session.clientHostname !== `[${session.remoteAddress}]` ? session.clientHostname : undefined,
        helo: session.hostNameAppearsAs || 'unknown',
        login: typeof session.user === 'string' ? session.user : undefined,
        secure: session.secure,
      },
      receivedAt: new Date(),
    };
    this.opts.handleMessage(message).then(
      (reply) => cb(null, reply),
      (err: unknown) => {
        if (isRelayError(err)) return cb(err.toSmtpServerError());
        this.opts.logger.error({ err, id: message.id }, 'unexpected failure handling a message');
        cb(internalError(message.id, err).toSmtpServerError());
      },
    );
  }
}

function backstopTimeout(snapshot: ConfigSnapshot): number {
  return snapshot.limits.idleTimeoutMs + 30_000;
}

function sameSecret(given: string, expected: string): boolean {
  // compare digests so the comparison takes the same time whatever the lengths
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

