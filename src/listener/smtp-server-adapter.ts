import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import type { Logger } from '../log.js';

/**
 * Every reach into smtp-server's internals is here, and nowhere else. smtp-server is pinned to an
 * exact version in package.json because of it; test/unit/smtp-server-adapter.test.ts is the
 * contract to run after changing that version. Each patch checks the internals it replaces before
 * touching them; one that can't be applied leaves smtp-server's own behaviour in place and is
 * reported, so the Listener can say at start what is lost instead of degrading silently.
 */

export type SmtpServerPatch = 'immediate-greeting' | 'enhanced-codes' | 'auth-needs-tls' | 'session-events';

/** A patch that was not applied: what the guard missed, and what a user loses because of it. */
export interface PatchFailure {
  readonly patch: SmtpServerPatch;
  readonly missing: string;
  readonly consequence: string;
}

interface ConnectionInternals {
  _server: { options: { maxClients?: number }; connections: Set<unknown> };
  name: string;
  init(): void;
  _setListeners(done: () => void): void;
  connectionReady(): void;
  send(code: number, data: unknown, context?: unknown): void;
  _getEnhancedStatusCode(code: number, context?: unknown): string;
  handler_EHLO(command: Buffer, callback: () => void): void;
  handler_AUTH(command: Buffer, callback: () => void): void;
  secure: boolean;
  session: { disabledCommands?: string[] };
  _onCommand(command: Buffer, callback?: () => void): void;
  _createParser(): ParserInternals;
  _onTimeout(): void;
  id: string;
  remoteAddress: string;
  _handlerPending?: boolean;
  _dataStream?: unknown;
  _parser?: ParserInternals | false;
  [EVENTS]?: ConnectionEvents | null;
}

interface ParserInternals {
  write(chunk: unknown, encoding?: unknown, cb?: unknown): boolean;
  _remainder?: string;
  _dataMode?: boolean;
}

/** What the session-events patch tells an observer about one connection, as it happens. */
export interface ConnectionEvents {
  /** The parser took a chunk from the client (after handling the lines it completed); `partialLine`: a command line has begun and not ended. */
  input(partialLine: boolean): void;
  /** A complete command line, before smtp-server handles it; false refuses it (the observer has replied and closed). */
  line(): boolean;
  /** A reply went out. */
  reply(code: number): void;
}

/** The few things an observer may ask of, or do to, a connection. */
export interface ConnectionHandle {
  readonly sessionId: string;
  readonly remoteAddress: string;
  /** sendas owes the client a reply: a handler has not called back, or the message is in and onData has not answered. */
  busy(): boolean;
  /** Replies 421 with this text ("4.4.2 sentence") and closes. */
  close421(text: string): void;
}

export type ConnectionObserver = (conn: ConnectionHandle) => ConnectionEvents;

const EVENTS = Symbol('sendas.connectionEvents');
const observers = new WeakMap<object, ConnectionObserver>();

/** Every connection of this server reports to the observer (once the session-events patch is in). */
export function observeConnections(server: object, observer: ConnectionObserver): void {
  observers.set(server, observer);
}

/**
 * The sessions whose AUTH must wait for TLS; read by the auth-needs-tls patch. A set beside the
 * sessions rather than a mark on them: a property added to smtp-server's session object after
 * it was built cost ~10 µs per connection in the benchmark (one connection per message).
 */
const AUTH_NEEDS_TLS = new WeakSet<object>();

/**
 * Says whether this session may log in only over TLS (a plain connection from outside
 * `allow`). The Listener also checks it in onAuth, so the rule holds if the patch is missing.
 */
export function setAuthNeedsTls(session: object, needsTls: boolean): void {
  if (needsTls) AUTH_NEEDS_TLS.add(session);
  else AUTH_NEEDS_TLS.delete(session);
}

export function authNeedsTls(session: object): boolean {
  return AUTH_NEEDS_TLS.has(session);
}

/** The reply RFC 4954 gives for AUTH that needs an encrypted connection. */
export const ENCRYPTION_REQUIRED = { code: 538, enhanced: '5.7.11', text: 'Encryption required for requested authentication mechanism' } as const;

type Prototype = Partial<Record<keyof ConnectionInternals, unknown>>;

const HAS_ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;

// a prototype is patched once; later Listeners (tests build many) get the same report to log
const installed = new WeakMap<object, readonly PatchFailure[]>();

/**
 * Applies both patches to smtp-server's SMTPConnection (or, in tests, to the prototype given) and
 * returns the ones that could not be applied; an empty list means smtp-server behaves as sendas
 * expects.
 */
export function installSmtpServerPatches(proto: object = SMTPConnection.prototype): readonly PatchFailure[] {
  const known = installed.get(proto);
  if (known) return known;
  const target = proto as Prototype;
  const failures = [installImmediateGreeting(target), installEnhancedCodePassthrough(target), installAuthNeedsTls(target), installSessionEvents(target)].filter(
    (f): f is PatchFailure => f !== undefined,
  );
  installed.set(proto, failures);
  return failures;
}

/** One warning per patch not applied, naming what is missing and what it costs. */
export function warnAboutFailedPatches(logger: Logger, failures: readonly PatchFailure[]): void {
  for (const f of failures) {
    logger.warn({ patch: f.patch, missing: f.missing }, `smtp-server is not the version sendas was built against (${f.missing}): ${f.consequence}`);
  }
}

/**
 * smtp-server waits 100 ms before its greeting to catch clients that talk too early — a spam
 * defense for public MX hosts (Postfix does it only with postscreen) that has no option. sendas
 * is a submission relay beside known systems that open a connection per message: the pause
 * capped 20 sessions at 200 messages/s in the benchmark. It greets at once instead; the rest of
 * smtp-server's init (connection limit, reverse lookup, greeting) is unchanged.
 */
function installImmediateGreeting(proto: Prototype): PatchFailure | undefined {
  const missing = missingMethods(proto, ['init', '_setListeners', 'connectionReady', 'send']);
  // the replacement stands in for the whole of init: if init no longer ends in connectionReady, it does something this copy would skip
  if (missing.length === 0 && !String(proto.init).includes('connectionReady')) missing.push('SMTPConnection.prototype.init calling connectionReady');
  if (missing.length > 0) {
    return {
      patch: 'immediate-greeting',
      missing: missing.join(', '),
      consequence: 'every connection waits 100 ms for the greeting (smtp-server’s default), which limits clients that open one connection per message',
    };
  }
  proto.init = function init(this: ConnectionInternals) {
    this._setListeners(() => {
      if (this._server.options.maxClients && this._server.connections.size > this._server.options.maxClients) {
        this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
        return;
      }
      this.connectionReady();
    });
  };
  return undefined;
}

/**
 * smtp-server picks the enhanced status code from a fixed table keyed by the reply code (550 is
 * always 5.1.1 "mailbox unavailable"), and an error from a handler can't say otherwise. sendas
 * replies carry their own precise code ("550 5.7.1 …"), so when a reply text already starts with
 * one, the table is skipped for that reply (context false: smtp-server's own "no enhanced code").
 * Every other reply keeps smtp-server's codes, so ENHANCEDSTATUSCODES can be advertised
 * truthfully (RFC 2034).
 */
function installEnhancedCodePassthrough(proto: Prototype): PatchFailure | undefined {
  const missing = missingMethods(proto, ['send', '_getEnhancedStatusCode']);
  if (missing.length === 0 && !skipsTableForFalse(proto._getEnhancedStatusCode as ConnectionInternals['_getEnhancedStatusCode'])) {
    missing.push('SMTPConnection.prototype._getEnhancedStatusCode giving no code for context false');
  }
  if (missing.length > 0) {
    return {
      patch: 'enhanced-codes',
      missing: missing.join(', '),
      consequence: 'refusals carry smtp-server’s enhanced code for their reply code before sendas’s own (e.g. "550 5.1.1 5.7.1 …" instead of "550 5.7.1 …"), so clients may report the wrong reason',
    };
  }
  const original = proto.send as ConnectionInternals['send'];
  proto.send = function send(this: unknown, code: number, data: unknown, context?: unknown) {
    if (typeof data === 'string' && HAS_ENHANCED.test(data)) return original.call(this, code, data, false);
    return original.call(this, code, data, context);
  };
  return undefined;
}

/**
 * Postfix's smtpd_tls_auth_only: before STARTTLS, a client that may log in only over TLS is not
 * offered AUTH in the EHLO reply, and an AUTH it sends anyway is answered 538 5.7.11 before any
 * credentials are exchanged. smtp-server has no option for this: it hides AUTH only by disabling
 * the command (then AUTH gets 500, which tells the client nothing) and its own pre-STARTTLS
 * refusal applies to every client and says 5.7.0. So for such a session EHLO runs with AUTH in
 * the session's disabled commands, and AUTH is answered here before smtp-server's handler.
 */
function installAuthNeedsTls(proto: Prototype): PatchFailure | undefined {
  const missing = missingMethods(proto, ['handler_EHLO', 'handler_AUTH', 'send']);
  // hiding works through the session's disabledCommands, which EHLO reads via _isSupported('AUTH')
  if (missing.length === 0 && !String(proto.handler_EHLO).includes("_isSupported('AUTH')")) missing.push("SMTPConnection.prototype.handler_EHLO deciding AUTH by _isSupported('AUTH')");
  if (missing.length > 0) {
    return {
      patch: 'auth-needs-tls',
      missing: missing.join(', '),
      consequence: 'AUTH is still advertised before STARTTLS, and a client outside listen.allow gets 538 5.7.11 only after it sent its password',
    };
  }
  const ehlo = proto.handler_EHLO as ConnectionInternals['handler_EHLO'];
  proto.handler_EHLO = function handler_EHLO(this: ConnectionInternals & { _server: { options: { disabledCommands: string[] } } }, command: Buffer, callback: () => void) {
    if (this.secure || !authNeedsTls(this.session)) return ehlo.call(this, command, callback);
    const saved = this.session.disabledCommands;
    this.session.disabledCommands = [...(saved ?? this._server.options.disabledCommands), 'AUTH'];
    try {
      ehlo.call(this, command, callback);
    } finally {
      this.session.disabledCommands = saved;
    }
  };
  const auth = proto.handler_AUTH as ConnectionInternals['handler_AUTH'];
  proto.handler_AUTH = function handler_AUTH(this: ConnectionInternals, command: Buffer, callback: () => void) {
    if (this.secure || !authNeedsTls(this.session)) return auth.call(this, command, callback);
    this.send(ENCRYPTION_REQUIRED.code, `${ENCRYPTION_REQUIRED.enhanced} ${ENCRYPTION_REQUIRED.text}`);
    callback();
  };
  return undefined;
}

/**
 * smtp-server's only timer is the socket's idle timeout, which every byte restarts: a command line
 * fed one byte a minute, or a message trickling in for hours, never times out. The deadlines of
 * `limits` (listener/guard.ts) need three facts smtp-server doesn't expose: a chunk arrived and
 * left a line unfinished, a command line is complete, a reply went out. This patch reports them;
 * the observer also reads the condition smtp-server's own timeout uses to tell that the client
 * is waiting for sendas (`_handlerPending`, a message in but not answered).
 */
function installSessionEvents(proto: Prototype): PatchFailure | undefined {
  const missing = missingMethods(proto, ['send', '_onCommand', '_createParser', '_onTimeout']);
  if (missing.length === 0 && !/_handlerPending[\s\S]*_dataStream[\s\S]*_dataMode/.test(String(proto._onTimeout))) {
    missing.push('SMTPConnection.prototype._onTimeout reading _handlerPending, _dataStream and _parser._dataMode');
  }
  if (missing.length > 0) {
    return {
      patch: 'session-events',
      missing: missing.join(', '),
      consequence: 'limits.command_timeout, data_timeout and errors_per_session are not enforced; only smtp-server’s idle timeout (limits.idle_timeout, restarted by every byte) applies',
    };
  }
  const send = proto.send as ConnectionInternals['send'];
  const onCommand = proto._onCommand as ConnectionInternals['_onCommand'];
  const createParser = proto._createParser as ConnectionInternals['_createParser'];
  proto.send = function (this: ConnectionInternals, code: number, data: unknown, context?: unknown) {
    send.call(this, code, data, context);
    eventsOf(this)?.reply(code);
  };
  proto._onCommand = function (this: ConnectionInternals, command: Buffer, callback?: () => void) {
    if (eventsOf(this)?.line() === false) return;
    onCommand.call(this, command, callback);
  };
  proto._createParser = function (this: ConnectionInternals) {
    const parser = createParser.call(this);
    const write = parser.write;
    const conn = this;
    // the socket pipes into the parser: every chunk passes here, and once write() returns, the lines it completed have been handled (or queued behind a busy handler)
    parser.write = function (this: ParserInternals, chunk: unknown, encoding?: unknown, cb?: unknown) {
      const ok = write.call(this, chunk, encoding, cb);
      eventsOf(conn)?.input(typeof this._remainder === 'string' && this._remainder.length > 0);
      return ok;
    };
    return parser;
  };
  return undefined;
}

/** The connection's observer events, made on first use (smtp-server builds the first parser before any observer could know the connection). */
function eventsOf(conn: ConnectionInternals): ConnectionEvents | null {
  let events = conn[EVENTS];
  if (events !== undefined) return events;
  const observer = observers.get(conn._server);
  events = observer ? observer(handleOf(conn)) : null;
  conn[EVENTS] = events;
  return events;
}

function handleOf(conn: ConnectionInternals): ConnectionHandle {
  return {
    sessionId: conn.id,
    remoteAddress: conn.remoteAddress,
    busy: () => Boolean(conn._handlerPending || (conn._dataStream && conn._parser && !conn._parser._dataMode)),
    close421: (text) => conn.send(421, text),
  };
}

function missingMethods(proto: Prototype, names: readonly (keyof ConnectionInternals & string)[]): string[] {
  return names.filter((name) => typeof proto[name] !== 'function').map((name) => `SMTPConnection.prototype.${name}`);
}

/** The patch hands replies to send() with context false; check that this still means "no table code". */
function skipsTableForFalse(getCode: ConnectionInternals['_getEnhancedStatusCode']): boolean {
  const probe = { _server: { options: {} }, _useEnhancedStatusCodes: () => true };
  try {
    return getCode.call(probe, 550, false) === '';
  } catch {
    return false;
  }
}
