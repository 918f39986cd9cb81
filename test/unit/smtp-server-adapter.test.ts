import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { rawSmtp, type RawSmtpClient } from '../support/raw-smtp.js';
import { installSmtpServerPatches, observeConnections, setAuthNeedsTls, warnAboutFailedPatches, type ConnectionHandle } from '../../src/listener/smtp-server-adapter.js';

/**
 * The contract between sendas and the smtp-server version pinned in package.json. Run it after
 * changing that version: each test is something a patch in src/listener/smtp-server-adapter.ts
 * promises, checked against the real smtp-server over loopback sockets.
 */

const REPLY_TIMEOUT_MS = 2_000;

type RawClient = RawSmtpClient;

const rawClient = (port: number): Promise<RawClient> => rawSmtp(port, { replyTimeoutMs: REPLY_TIMEOUT_MS, end: 'destroy' });

describe('smtp-server adapter: the contract with the pinned smtp-server', () => {
  const servers: SMTPServer[] = [];
  const clients: RawClient[] = [];
  afterEach(async () => {
    for (const c of clients.splice(0)) c.end();
    for (const s of servers.splice(0)) await new Promise<void>((resolve) => s.close(() => resolve()));
  });

  const start = async (options: SMTPServerOptions = {}): Promise<number> => {
    expect(installSmtpServerPatches()).toEqual([]);
    const server = new SMTPServer({
      name: 'relay.test',
      logger: false,
      authOptional: true,
      // as the Listener runs it: smtp-server hides them by default
      hideENHANCEDSTATUSCODES: false,
      disabledCommands: ['STARTTLS', 'AUTH'],
      // no DNS: the greeting's timing is what is measured, not the resolver's
      resolver: { reverse: (_ip: string, cb: (err: Error | null, hostnames?: string[]) => void) => cb(null, ['localhost']) },
      closeTimeout: 100,
      ...options,
    } as SMTPServerOptions);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    return (server.server.address() as AddressInfo).port;
  };
  const client = async (port: number) => {
    const c = await rawClient(port);
    clients.push(c);
    return c;
  };

  it('every patch applies to the installed smtp-server (no guard fails)', () => {
    expect(installSmtpServerPatches()).toEqual([]);
  });

  it('greets within 20 ms of the connection (smtp-server alone waits 100 ms)', async () => {
    const port = await start();
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const c = await client(port);
      const greeting = await c.reply();
      expect(greeting.text).toMatch(/^220 /);
      delays.push(greeting.at - c.connectedAt);
    }
    // client and server share this process on a shared machine, so one connection may lose the CPU
    // for a while; smtp-server's own delay is a floor of 100 ms under every greeting, never a spike
    delays.sort((a, b) => a - b);
    expect(delays[2], `greeting delays in ms: ${delays.join(', ')}`).toBeLessThan(20);
    expect(delays[4], `greeting delays in ms: ${delays.join(', ')}`).toBeLessThan(100);
  });

  it('a reply that carries its own enhanced code keeps it (550 5.7.1, not the table’s 5.1.1)', async () => {
    const refusal = (text: string) => Object.assign(new Error(text), { responseCode: 550 });
    const port = await start({
      onMailFrom: (address, _session, cb) => (address.address === 'refused@example.net' ? cb(refusal('5.7.1 Sender refused by policy')) : cb()),
      onRcptTo: (address, _session, cb) => (address.address === 'nobody@example.net' ? cb(refusal('no such mailbox')) : cb()),
    });
    const c = await client(port);
    await c.reply();
    c.write('EHLO test.example');
    expect((await c.reply()).text).toContain('ENHANCEDSTATUSCODES');
    c.write('MAIL FROM:<refused@example.net>');
    expect((await c.reply()).text).toBe('550 5.7.1 Sender refused by policy');
    // a reply without its own code still gets smtp-server's, so advertising ENHANCEDSTATUSCODES stays true
    c.write('MAIL FROM:<ok@example.net>');
    expect((await c.reply()).text).toMatch(/^250 2\.1\.0 /);
    c.write('RCPT TO:<nobody@example.net>');
    expect((await c.reply()).text).toBe('550 5.1.1 no such mailbox');
  });

  it('answers 421 to a connection beyond maxClients (the greeting patch replaces the init that checks it)', async () => {
    const port = await start({ maxClients: 1 });
    const first = await client(port);
    expect((await first.reply()).text).toMatch(/^220 /);
    const second = await client(port);
    const refused = await second.reply();
    expect(refused.text).toMatch(/^421 .*Too many connected clients/);
  });

  it('hides AUTH from EHLO and answers AUTH with 538 5.7.11 on a session marked as needing TLS, and leaves other sessions alone', async () => {
    let sessions = 0;
    const port = await start({
      disabledCommands: ['STARTTLS'],
      allowInsecureAuth: true,
      onConnect: (session, cb) => {
        setAuthNeedsTls(session, sessions++ % 2 === 0);
        cb();
      },
      onAuth: (_auth, _session, cb) => cb(null, { user: 'someone' }),
    });
    const seen = new Set<boolean>();
    // every other session needs TLS
    for (let i = 0; i < 2; i++) {
      const c = await client(port);
      await c.reply();
      c.write('EHLO test.example');
      const ehlo = (await c.reply()).text;
      c.write('AUTH PLAIN AHNvbWVvbmUAc2VjcmV0');
      const auth = (await c.reply()).text;
      const needsTls = !/\bAUTH /.test(ehlo);
      seen.add(needsTls);
      if (needsTls) expect(auth).toBe('538 5.7.11 Encryption required for requested authentication mechanism');
      else expect(auth).toMatch(/^235 /);
      c.end();
    }
    expect(seen).toEqual(new Set([true, false]));
  });

  it('reports a chunk that leaves a line unfinished, each complete line, each reply, and whether the server owes the reply', async () => {
    const events: string[] = [];
    let release: (() => void) | undefined;
    let handle: ConnectionHandle | undefined;
    let handlerCalled: () => void = () => {};
    const inHandler = new Promise<void>((resolve) => (handlerCalled = resolve));
    const port = await start({
      onMailFrom: (_address, _session, cb) => {
        events.push(`busy ${handle!.busy()}`);
        release = () => cb();
        handlerCalled();
      },
    });
    let partialSeen: () => void = () => {};
    const partial = new Promise<void>((resolve) => (partialSeen = resolve));
    observeConnections(servers[0]!, (conn) => {
      handle = conn;
      return {
        input: (unfinished) => {
          events.push(`input ${unfinished}`);
          if (unfinished) partialSeen();
        },
        line: () => (events.push('line'), true),
        reply: (code) => events.push(`reply ${code}`),
      };
    });
    const c = await client(port);
    await c.reply();
    c.writeRaw('EHLO test');
    await partial;
    c.write('.example');
    await c.reply();
    // a chunk is reported once the parser has taken it, after the lines it completed
    expect(events).toEqual(['reply 220', 'input true', 'line', 'reply 250', 'input false']);
    events.length = 0;
    c.write('MAIL FROM:<a@example.net>');
    await inHandler;
    expect(events).toEqual(['line', 'busy true', 'input false']);
    release!();
    await c.reply();
    expect(handle!.busy()).toBe(false);
    expect(events.at(-1)).toBe('reply 250');
  });

  it('lets the observer refuse a complete line and close with a 421 of its own', async () => {
    const port = await start();
    observeConnections(servers[0]!, (conn) => ({
      input: () => {},
      line: () => (conn.close421('4.7.0 Refused by the observer'), false),
      reply: () => {},
    }));
    const c = await client(port);
    await c.reply();
    c.write('EHLO test.example');
    expect((await c.reply()).text).toBe('421 4.7.0 Refused by the observer');
  });
});

describe('smtp-server adapter: a guard that fails', () => {
  const capture = () => {
    const lines: Record<string, unknown>[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    return { logger: pino({ level: 'info' }, destination), lines };
  };

  it('leaves a prototype without the internals untouched and reports each patch with what is missing and what is lost', () => {
    const proto = { init() {} };
    const failures = installSmtpServerPatches(proto);
    expect(failures.map((f) => f.patch)).toEqual(['immediate-greeting', 'enhanced-codes', 'auth-needs-tls', 'session-events']);
    expect(failures[0]!.missing).toBe('SMTPConnection.prototype._setListeners, SMTPConnection.prototype.connectionReady, SMTPConnection.prototype.send');
    expect(failures[0]!.consequence).toMatch(/100 ms/);
    expect(failures[1]!.missing).toBe('SMTPConnection.prototype.send, SMTPConnection.prototype._getEnhancedStatusCode');
    expect(failures[1]!.consequence).toMatch(/550 5\.1\.1 5\.7\.1/);
    expect(failures[2]!.missing).toBe('SMTPConnection.prototype.handler_EHLO, SMTPConnection.prototype.handler_AUTH, SMTPConnection.prototype.send');
    expect(failures[2]!.consequence).toMatch(/only after it sent its password/);
    expect(failures[3]!.consequence).toMatch(/limits\.command_timeout/);
    expect(Object.keys(proto)).toEqual(['init']);
    // installing again reports the same, so every Listener built on it can warn
    expect(installSmtpServerPatches(proto)).toBe(failures);
  });

  it('refuses internals that are there but no longer behave as the patch assumes', () => {
    const send = () => {};
    const proto = {
      init() {
        // an init that no longer ends in the ready step
      },
      _setListeners() {},
      connectionReady() {},
      send,
      _getEnhancedStatusCode: () => '5.1.1',
      handler_EHLO() {
        // an EHLO that no longer asks whether AUTH is supported
      },
      handler_AUTH() {},
      _onCommand() {},
      _createParser() {},
      _onTimeout() {
        // a timeout that no longer knows when the client waits for the server
      },
    };
    const failures = installSmtpServerPatches(proto);
    expect(failures.map((f) => [f.patch, f.missing])).toEqual([
      ['immediate-greeting', 'SMTPConnection.prototype.init calling connectionReady'],
      ['enhanced-codes', 'SMTPConnection.prototype._getEnhancedStatusCode giving no code for context false'],
      ['auth-needs-tls', "SMTPConnection.prototype.handler_EHLO deciding AUTH by _isSupported('AUTH')"],
      ['session-events', 'SMTPConnection.prototype._onTimeout reading _handlerPending, _dataStream and _parser._dataMode'],
    ]);
    expect(proto.send).toBe(send);
  });

  it('logs one warning per failed patch, naming what is missing and what the user loses', () => {
    const { logger, lines } = capture();
    warnAboutFailedPatches(logger, installSmtpServerPatches({}));
    expect(lines).toHaveLength(4);
    expect(lines.map((l) => [l.level, l.patch])).toEqual([
      [40, 'immediate-greeting'],
      [40, 'enhanced-codes'],
      [40, 'auth-needs-tls'],
      [40, 'session-events'],
    ]);
    expect(lines[0]!.msg).toMatch(/^smtp-server is not the version sendas was built against \(SMTPConnection\.prototype\.init, .*\): every connection waits 100 ms/);
    expect(lines[1]!.missing).toContain('SMTPConnection.prototype._getEnhancedStatusCode');
  });

  it('logs nothing when every patch applied', () => {
    const { logger, lines } = capture();
    warnAboutFailedPatches(logger, installSmtpServerPatches());
    expect(lines).toEqual([]);
  });
});

/**
 * Not a patch but a promise sendas's smuggling defence rests on (README "Smuggling and bare
 * newlines"): smtp-server's DATA parser ends the data at CRLF.CRLF and at nothing else.
 */
describe("smtp-server's end of data", () => {
  const VARIANTS = ['\n.\n', '\n.\r\n', '\r.\r', '\r.\n', '\r\n.\r', '\r.\r\n', '\r\n\x00.\r\n', '\r\n.\r\r\n', '\r\r\n.\r\r\n'];

  it.each(VARIANTS.map((v) => [JSON.stringify(v), v]))('%s is message text, however the bytes are cut; only CRLF.CRLF ends the data', async (_shown, variant) => {
    const text = `Subject: s\r\n\r\ntext${variant}MAIL FROM:<x@example.net>\r\n`;
    const input = Buffer.from(`${text}.\r\nQUIT\r\n`, 'latin1');
    for (let cut = 1; cut < input.length; cut++) {
      const parser = new SMTPStream();
      const commands: string[] = [];
      parser.oncommand = (line: Buffer, next?: () => void) => {
        commands.push(line.toString());
        next?.();
      };
      const data = parser.startDataMode();
      const chunks: Buffer[] = [];
      data.on('data', (c: Buffer) => chunks.push(c));
      const ended = new Promise<void>((resolve) => data.once('end', () => (parser.continue(), resolve())));
      parser.write(input.subarray(0, cut));
      parser.write(input.subarray(cut));
      await ended;
      await new Promise((resolve) => setImmediate(resolve));
      expect(Buffer.concat(chunks).toString('latin1'), `cut at ${cut}`).toBe(text);
      expect(commands).toEqual(['QUIT']);
    }
  });
});
