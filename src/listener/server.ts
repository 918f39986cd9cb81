import { createHash, timingSafeEqual, X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { SMTPServer, type SMTPServerAddress, type SMTPServerAuthentication, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import type { ConfigSnapshot, ListenConfig } from '../config/types.js';
import { RelayError, internalError, isRelayError } from '../errors/relay-error.js';
import type { Logger } from '../log.js';
import { newMessageId } from '../mail/message-id.js';
import { AllowList } from './access.js';
import { ReverseLookupCache } from './reverse-cache.js';
import type { IncomingMessage, MessageHandler } from '../reception/incoming.js';
import { ListenerGuard } from './guard.js';
import { authNeedsTls, ENCRYPTION_REQUIRED, installSmtpServerPatches, observeConnections, setAuthNeedsTls, warnAboutFailedPatches } from './smtp-server-adapter.js';

export interface ListenerOptions {
  /** The snapshot a new session uses; a session keeps the one it started with. */
  readonly getSnapshot: () => ConfigSnapshot;
  /** Which of the snapshot's `listeners` this one serves. */
  readonly index: number;
  readonly handleMessage: MessageHandler;
  readonly logger: Logger;
  readonly hostname: string;
  /** `limits:`; one guard for all listeners of a relay, so their counts add up. */
  readonly guard?: ListenerGuard;
}

/** What a session started with: the whole config and its listener's part of it. */
interface SessionConfig {
  readonly snapshot: ConfigSnapshot;
  readonly listen: ListenConfig;
  /** The client's address is in the listener's `allow`: looked up once per session. */
  readonly allowed: boolean;
}

/**
 * One listening socket facing the legacy software: smtp-server with SIZE, 8BITMIME, PIPELINING,
 * SMTPUTF8 and AUTH PLAIN/LOGIN against `clients`; with `tls: starttls` also STARTTLS, with
 * `tls: implicit` TLS from the first byte. smtp-server's built-in, publicly known certificate is
 * never used: a plain listener disables STARTTLS, a TLS listener always has the ops' own pair.
 */
export class Listener {
  private readonly server: SMTPServer;
  private readonly sessions = new Map<string, SessionConfig>();
  private readonly allowLists = new WeakMap<ListenConfig, AllowList>();
  /** The settings this listener was bound with; see listenOf. */
  private readonly bound: ListenConfig;
  /** The latest settings for this socket: a later snapshot that moved it elsewhere doesn't replace them. */
  private settings: ListenConfig;
  /** The certificate, key and version the secure context was last built from. */
  private tlsFrom: ListenConfig;
  private readonly guard: ListenerGuard;
  private draining = false;

  constructor(private readonly opts: ListenerOptions) {
    warnAboutFailedPatches(opts.logger, installSmtpServerPatches());
    const listen = opts.getSnapshot().listeners[opts.index]!;
    this.bound = listen;
    this.settings = listen;
    this.tlsFrom = listen;
    const snapshot = opts.getSnapshot();
    const guard = (this.guard = opts.guard ?? new ListenerGuard({ logger: opts.logger }));
    this.server = new SMTPServer({
      name: opts.hostname,
      banner: 'sendas relay',
      size: listen.maxMessageSize,
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      // who may log in without TLS is decided per session (sessionConfig, the auth-needs-tls patch)
      allowInsecureAuth: true,
      disabledCommands: listen.tls === 'starttls' ? [] : ['STARTTLS'],
      secure: listen.tls === 'implicit',
      ...tlsOptions(listen),
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
        const snapshot = opts.getSnapshot();
        const refusal = guard.admit(session.id, session.remoteAddress, snapshot.limits);
        if (refusal) return cb(refusal.toSmtpServerError());
        const listen = this.listenOf(snapshot);
        const allowed = this.allowListOf(listen).allows(session.remoteAddress);
        this.sessions.set(session.id, { snapshot, listen, allowed });
        const disabled = listen.tls === 'starttls' ? [] : ['STARTTLS'];
        // AUTH is offered only while there are client logins; decided per session, so a reload that adds the first one applies at once
        if (snapshot.clients.length === 0) disabled.push('AUTH');
        (session as SMTPServerSession & { disabledCommands?: string[] }).disabledCommands = disabled;
        // Postfix's smtpd_tls_auth_only for clients outside `allow`: their password never crosses the network in clear
        if (!listen.allowPlaintextAuth && !allowed) setAuthNeedsTls(session, true);
        cb();
      },
      onClose: (session) => {
        guard.release(session.id);
        this.sessions.delete(session.id);
      },
      onAuth: (auth, session, cb) => this.onAuth(auth, session, cb),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => cb(guard.recipientRefusal(session.remoteAddress, session.envelope.rcptTo, address.address, this.snapshotOf(session).limits)?.toSmtpServerError()),
      onData: (stream, session, cb) => this.onData(stream, session, cb),
    });
    observeConnections(this.server, guard.observer((id) => (this.sessions.get(id)?.snapshot ?? opts.getSnapshot()).limits));
    this.server.on('error', (err) => opts.logger.warn({ err: { message: err.message, code: (err as NodeJS.ErrnoException).code }, listener: listen.path }, 'client connection error'));
  }

  /** The settings bound at start (host, port, tls kind), e.g. for the start log line. */
  get config(): ListenConfig {
    return this.bound;
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

  /**
   * A reloaded config: the size limit applies from the next message, a new certificate or key
   * from the next connection (smtp-server builds the secure context each handshake starts with
   * from updateSecureContext's options).
   */
  applyLimits(snapshot: ConfigSnapshot): void {
    const listen = this.listenOf(snapshot);
    this.settings = listen;
    (this.server.options as { size?: number }).size = listen.maxMessageSize;
    (this.server.options as { socketTimeout?: number }).socketTimeout = backstopTimeout(snapshot);
    if (listen.tls === 'none' || sameTls(this.tlsFrom, listen)) return;
    try {
      this.server.updateSecureContext(tlsOptions(listen));
      this.tlsFrom = listen;
      this.opts.logger.info({ listener: listen.path, certificate: certificateSummary(listen.cert!.reveal()) }, `${listen.path}: new certificate served from the next connection`);
    } catch (err) {
      // config/listeners.ts tried the same pair, so this is only OpenSSL disagreeing with itself; the old pair stays
      this.opts.logger.error({ listener: listen.path, err: { message: (err as Error).message } }, `${listen.path}: the new certificate could not be used; still serving the previous one`);
    }
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

  /**
   * This listener's part of a snapshot. A reload that changed its host, port or tls kind needs a
   * restart (config/diff.ts says so in the reload log); until then it keeps the last settings
   * it had for its socket, rather than, say, offering STARTTLS on an implicit-TLS socket.
   */
  private listenOf(snapshot: ConfigSnapshot): ListenConfig {
    const now = snapshot.listeners[this.opts.index];
    return now && now.host === this.bound.host && now.port === this.bound.port && now.tls === this.bound.tls ? now : this.settings;
  }

  private sessionConfig(session: SMTPServerSession): SessionConfig {
    const known = this.sessions.get(session.id);
    if (known) return known;
    const snapshot = this.opts.getSnapshot();
    const listen = this.listenOf(snapshot);
    return { snapshot, listen, allowed: this.allowListOf(listen).allows(session.remoteAddress) };
  }

  private snapshotOf(session: SMTPServerSession): ConfigSnapshot {
    return this.sessionConfig(session).snapshot;
  }

  private allowListOf(listen: ListenConfig): AllowList {
    let list = this.allowLists.get(listen);
    if (!list) {
      list = new AllowList(listen.allow);
      this.allowLists.set(listen, list);
    }
    return list;
  }

  private onAuth(auth: SMTPServerAuthentication, session: SMTPServerSession, cb: (err: Error | null | undefined, response?: { user: string }) => void): void {
    if (!session.secure && authNeedsTls(session)) {
      // only reached when the auth-needs-tls patch is missing (it answers before the credentials)
      this.opts.logger.warn({ client: session.remoteAddress, login: auth.username }, 'client login refused: no TLS and not in listen.allow');
      cb(new RelayError('access', { code: ENCRYPTION_REQUIRED.code, enhanced: ENCRYPTION_REQUIRED.enhanced }, ENCRYPTION_REQUIRED.text).toSmtpServerError());
      return;
    }
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
    const { snapshot, allowed } = this.sessionConfig(session);
    if (allowed) return cb();
    this.opts.logger.warn({ client: session.remoteAddress }, 'relaying refused: client neither logged in nor in listen.allow');
    const how = snapshot.clients.length > 0 ? 'log in with one of the relay client accounts, or connect' : 'connect';
    cb(new RelayError('access', { code: 530, enhanced: '5.7.0' }, `Authentication required: ${how} from an address in listen.allow`).toSmtpServerError());
  }

  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const mailFrom = session.envelope.mailFrom === false ? undefined : session.envelope.mailFrom;
    const args = (mailFrom?.args ?? {}) as Record<string, string | boolean | undefined>;
    const { snapshot, listen } = this.sessionConfig(session);
    const message: IncomingMessage = {
      id: newMessageId(),
      snapshot,
      listener: listen,
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

/** smtp-server's TLS options for a listener: the ops' pair, Node's default ciphers, the minimum version. */
function tlsOptions(listen: ListenConfig): { key?: string; cert?: string; minVersion?: 'TLSv1.2' | 'TLSv1.3' } {
  if (listen.tls === 'none') return {};
  return { key: listen.key!.reveal(), cert: listen.cert!.reveal(), minVersion: listen.minTlsVersion };
}

function sameTls(a: ListenConfig, b: ListenConfig): boolean {
  return a.minTlsVersion === b.minTlsVersion && a.cert?.reveal() === b.cert?.reveal() && a.key?.reveal() === b.key?.reveal();
}

/** Subject, expiry and fingerprint: enough for ops to see which certificate is live, nothing secret. */
function certificateSummary(pem: string): { subject: string; validTo: string; fingerprint256: string } | undefined {
  try {
    const c = new X509Certificate(pem);
    return { subject: c.subject.replace(/\n/g, ', '), validTo: c.validTo, fingerprint256: c.fingerprint256 };
  } catch {
    return undefined;
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

