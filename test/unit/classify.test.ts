import { describe, expect, it } from 'vitest';
import { classifyUpstreamError, enhancedCodeOf, upstreamRuleFor } from '../../src/errors/classify.js';
import { UPSTREAM_RULES } from '../../src/errors/upstream-rules.js';
import { ThreadExitedError } from '../../src/threads/thread-exited.js';

const ctx = { serverName: 'main', host: 'smtp.acme.example', port: 587, login: 'support@acme.example', passwordPath: 'channels[0].override.password' };

describe('one classification of upstream failures', () => {
  it('connection refused → temporary network error naming the server', () => {
    const e = classifyUpstreamError({ code: 'ESOCKET', message: 'connect ECONNREFUSED 127.0.0.1:587' }, ctx);
    expect([e.kind, e.status.code, e.status.enhanced]).toEqual(['network', 451, '4.4.1']);
    expect(e.message).toBe('Cannot connect to upstream main (smtp.acme.example:587): connection refused');
  });

  it('sign-in refused → temporary auth error naming the account and where its password is configured', () => {
    const e = classifyUpstreamError({ code: 'EAUTH', response: '535 5.7.8 Authentication credentials invalid', responseCode: 535, command: 'AUTH LOGIN' }, ctx);
    expect([e.kind, e.status.code]).toEqual(['auth', 451]);
    expect(e.message).toContain('support@acme.example');
    expect(e.message).toContain('535 5.7.8 Authentication credentials invalid');
    expect(e.message).toContain('channels[0].override.password');
  });

  it('sender refused keeps the upstream code and text', () => {
    const e = classifyUpstreamError({ code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 550, response: '550 5.7.60 SMTP; Client does not have permissions to send as this sender' }, ctx);
    expect([e.kind, e.status.code, e.status.enhanced]).toEqual(['sender', 550, '5.7.60']);
    expect(e.upstreamReply).toContain('send as this sender');
  });

  it('recipient refused, temporary and permanent', () => {
    const perm = classifyUpstreamError({ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 550, response: '550 5.1.1 No such user', recipient: 'x@y.example' }, ctx);
    expect([perm.kind, perm.status.code, perm.status.enhanced, perm.temporary]).toEqual(['recipient', 550, '5.1.1', false]);
    const temp = classifyUpstreamError({ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 450, response: '450 mailbox busy', recipient: 'x@y.example' }, ctx);
    expect([temp.status.code, temp.status.enhanced, temp.temporary]).toEqual([450, '4.1.1', true]);
  });

  it('throttling: 421 and 4.7.x', () => {
    const after = classifyUpstreamError({ code: 'EMESSAGE', command: 'DATA', responseCode: 421, response: '421 4.7.0 Too many connections' }, ctx);
    expect([after.kind, after.status.code, after.status.enhanced]).toEqual(['throttled', 451, '4.7.0']);
    const t = classifyUpstreamError({ code: 'EPROTOCOL', command: 'DATA', responseCode: 451, response: '451 4.7.500 Server busy, rate limited' }, ctx);
    expect([t.kind, t.status.code, t.status.enhanced]).toEqual(['throttled', 451, '4.7.500']);
    const closed = classifyUpstreamError({ code: 'ECONNECTION', command: 'CONN', responseCode: 421, response: '421 Service not available' }, ctx);
    expect([closed.kind, closed.status.code]).toEqual(['throttled', 451]);
  });

  it('message too large', () => {
    const e = classifyUpstreamError({ code: 'EMESSAGE', command: 'DATA', responseCode: 552, response: '552 5.3.4 Message size exceeds fixed limit' }, ctx);
    expect([e.kind, e.status.code, e.status.enhanced]).toEqual(['size', 552, '5.3.4']);
  });

  it('other DATA refusals pass on the upstream code class', () => {
    const e = classifyUpstreamError({ code: 'EMESSAGE', command: 'DATA', responseCode: 554, response: '554 5.6.0 Content rejected' }, ctx);
    expect([e.kind, e.status.code, e.status.enhanced]).toEqual(['refused', 554, '5.6.0']);
    expect(e.message).toBe('upstream main (smtp.acme.example:587) refused the message: 554 5.6.0 Content rejected');
    const temp = classifyUpstreamError({ code: 'EMESSAGE', command: 'DATA', responseCode: 451, response: '451 4.3.0 Try again later' }, ctx);
    expect([temp.kind, temp.status.code, temp.status.enhanced]).toEqual(['refused', 451, '4.3.0']);
  });

  it('TLS and DNS failures', () => {
    expect(classifyUpstreamError({ code: 'ETLS', message: 'self-signed certificate' }, ctx).kind).toBe('tls');
    const cert = classifyUpstreamError({ code: 'ESOCKET', originalCode: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', message: 'unable to verify the first certificate', command: 'CONN' }, ctx);
    expect([cert.kind, cert.status.enhanced]).toEqual(['tls', '4.7.5']);
    expect(cert.message).toBe('TLS with upstream main (smtp.acme.example:587) failed: unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE)');
    expect(classifyUpstreamError({ code: 'ESOCKET', originalCode: 'ERR_TLS_CERT_ALTNAME_INVALID', message: "Hostname/IP does not match certificate's altnames" }, ctx).kind).toBe('tls');
    expect(classifyUpstreamError({ code: 'EDNS', message: 'getaddrinfo ENOTFOUND' }, ctx).status.enhanced).toBe('4.4.3');
  });

  it('reads enhanced codes out of replies', () => {
    expect(enhancedCodeOf('550 5.1.1 No such user')).toBe('5.1.1');
    expect(enhancedCodeOf('550-5.7.1 first line')).toBe('5.7.1');
    expect(enhancedCodeOf('550 No such user')).toBeUndefined();
  });

  it('a connection made and then dropped is "connection lost" (4.4.2), not "cannot connect", and not unreachable', () => {
    for (const raw of [
      { code: 'ECONNECTION', message: 'Connection closed unexpectedly', command: 'CONN' },
      { code: 'ESOCKET', message: 'read ECONNRESET', originalCode: 'ECONNRESET', command: 'CONN' },
      { code: 'ESOCKET', message: 'write EPIPE', originalCode: 'EPIPE', command: 'CONN' },
    ]) {
      const e = classifyUpstreamError(raw, ctx);
      expect([e.kind, e.status.code, e.status.enhanced, e.temporary, e.unreachable]).toEqual(['network', 451, '4.4.2', true, false]);
      expect(e.message).toBe(`Connection lost with upstream main (smtp.acme.example:587): ${raw.message}`);
    }
    // failing to connect still is unreachable, with the same words as before
    const refused = classifyUpstreamError({ code: 'ESOCKET', message: 'connect ECONNREFUSED 127.0.0.1:587', originalCode: 'ECONNREFUSED', command: 'CONN' }, ctx);
    expect([refused.message, refused.unreachable]).toEqual(['Cannot connect to upstream main (smtp.acme.example:587): connection refused', true]);
  });

  it('an upstream thread that stopped mid-transaction: connection lost, temporary, not unreachable', () => {
    const e = classifyUpstreamError(new ThreadExitedError('sendas upstream', 'exit code 1'), ctx);
    expect([e.kind, e.status.code, e.status.enhanced, e.temporary, e.unreachable]).toEqual(['network', 451, '4.4.2', true, false]);
    expect(e.message).toBe('Connection lost with upstream main (smtp.acme.example:587): the sendas upstream thread stopped: exit code 1');
  });

  it('the table ends with a row for anything unforeseen; every row has a name of its own', () => {
    expect(upstreamRuleFor({ code: 'ESTRANGE', message: 'odd' }).name).toBe('other');
    const e = classifyUpstreamError({ code: 'ESTRANGE', message: 'odd' }, ctx);
    expect([e.kind, e.status.code, e.status.enhanced, e.message, e.unreachable]).toEqual(['network', 451, '4.4.0', 'Delivery through upstream main (smtp.acme.example:587) failed: odd', false]);
    const names = UPSTREAM_RULES.map((r) => r.name);
    expect(new Set(names).size).toBe(names.length);
  });
});

describe("providers' replies (PROVIDER_RULES): kind, retry and the fix", () => {
  const m365 = { serverName: 'm365', host: 'smtp.office365.com', port: 587, login: 'support@contoso.com', passwordPath: 'channels[0].override.password', method: 'login', mailbox: 'support@contoso.com', serverPath: 'servers[0]' };
  const app = { ...m365, login: 'relay@contoso.com', mailbox: 'relay@contoso.com', passwordPath: 'servers[0].oauth', method: 'xoauth2' };
  const gmail = { serverName: 'gmail', host: 'smtp.gmail.com', port: 587, login: 'desk@acme.example', passwordPath: 'servers[1].password', method: 'login', mailbox: 'desk@acme.example', serverPath: 'servers[1]' };
  const auth = (response: string) => ({ code: 'EAUTH', command: 'AUTH XOAUTH2', responseCode: Number(response.slice(0, 3)), response });

  it('535 5.7.139 SMTP AUTH disabled: temporary auth, Set-CASMailbox and Set-TransportConfig, the December 2026 note for passwords', () => {
    const raw = auth('535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [AM0PR01CA0001.eurprd01.prod.exchangelabs.com]');
    expect(upstreamRuleFor(raw).name).toBe('microsoft: SMTP AUTH disabled (5.7.139)');
    const e = classifyUpstreamError(raw, m365);
    expect([e.kind, e.status.code, e.status.enhanced, e.temporary, e.unreachable]).toEqual(['auth', 451, '4.7.0', true, false]);
    expect(e.message).toContain('SMTP AUTH is disabled for this mailbox or tenant');
    expect(e.fix).toContain('Set-CASMailbox -Identity support@contoso.com -SmtpClientAuthenticationDisabled $false');
    expect(e.fix).toContain('Set-TransportConfig -SmtpClientAuthenticationDisabled $false');
    expect(e.fix).toContain('December 2026');
    expect(e.toLog().fix).toBe(e.fix);
    const withToken = classifyUpstreamError(raw, app);
    expect(withToken.fix).toContain('Set-CASMailbox -Identity relay@contoso.com -SmtpClientAuthenticationDisabled $false');
    expect(withToken.fix).not.toContain('December 2026');
  });

  it('550 5.7.30 basic authentication retired: temporary auth, move to OAuth or Graph', () => {
    const e = classifyUpstreamError(auth('550 5.7.30 Basic authentication is not supported for Client Submission.'), m365);
    expect([e.kind, e.status.code, e.status.enhanced]).toEqual(['auth', 451, '4.7.0']);
    expect(e.fix).toContain('preset: office365');
  });

  it('535 5.7.3 / 5.7.8: which key to check; for xoauth2 the app permissions', () => {
    const ms = classifyUpstreamError(auth('535 5.7.3 Authentication unsuccessful [LO6P265CA0005.GBRP265.PROD.OUTLOOK.COM]'), app);
    expect(upstreamRuleFor(auth('535 5.7.3 Authentication unsuccessful')).name).toBe('authentication unsuccessful (5.7.3, 5.7.8)');
    expect([ms.kind, ms.status.code, ms.status.enhanced, ms.temporary]).toEqual(['auth', 451, '4.7.0', true]);
    expect(ms.fix).toContain('SMTP.SendAsApp');
    expect(ms.fix).toContain('New-ServicePrincipal');
    expect(ms.fix).toContain('Add-MailboxPermission -Identity relay@contoso.com');
    const g = classifyUpstreamError(auth('535-5.7.8 Username and Password not accepted. For more information, go to 535 5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp'), gmail);
    expect([g.kind, g.status.code, g.status.enhanced]).toEqual(['auth', 451, '4.7.0']);
    expect(g.message).toContain('check servers[1].password');
    expect(g.fix).toContain('the password at servers[1].password is wrong or expired');
    expect(g.fix).toContain('app password');
  });

  it('550 5.7.60 SendAsDenied: permanent sender refusal as the upstream says, grant Send As (Exchange and Gmail)', () => {
    const raw = { code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 550, response: '550 5.7.60 SMTP; Client does not have permissions to send as this sender [AM0PR01MB0001.eurprd01.prod.exchangelabs.com]' };
    expect(upstreamRuleFor(raw).name).toBe('send as denied (5.7.60, SendAsDenied)');
    const e = classifyUpstreamError(raw, { ...m365, login: 'agent@contoso.com', mailbox: 'sales@contoso.com' });
    expect([e.kind, e.status.code, e.status.enhanced, e.temporary]).toEqual(['sender', 550, '5.7.60', false]);
    expect(e.fix).toContain('Add-RecipientPermission -Identity sales@contoso.com -Trustee agent@contoso.com -AccessRights SendAs');
    expect(e.fix).toContain('"Send mail as"');
    expect(classifyUpstreamError(raw, app).fix).toContain("-Trustee <the app's service principal>");
  });

  it('554 5.2.2 after DATA: the sending mailbox is full, temporary, free Sent Items; at RCPT TO it stays the recipient\'s', () => {
    const raw = { code: 'EMESSAGE', command: 'DATA', responseCode: 554, response: '554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException.MapiExceptionQuotaExceeded' };
    expect(upstreamRuleFor(raw).name).toBe('sending mailbox full (5.2.2)');
    const e = classifyUpstreamError(raw, m365);
    expect([e.kind, e.status.code, e.status.enhanced, e.temporary]).toEqual(['refused', 451, '4.2.2', true]);
    expect(e.fix).toContain('Sent Items');
    const rcpt = classifyUpstreamError({ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 554, response: '554 5.2.2 mailbox full', recipient: 'x@y.example' }, m365);
    expect([rcpt.kind, rcpt.status.code, rcpt.temporary]).toEqual(['recipient', 554, false]);
  });

  it('Gmail 421 4.7.28 and 421 4.7.0: throttled, temporary, no failover', () => {
    const rate = { code: 'EMESSAGE', command: 'DATA', responseCode: 421, response: '421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address. - gsmtp' };
    expect(upstreamRuleFor(rate).name).toBe('gmail: rate (421 4.7.28)');
    const r = classifyUpstreamError(rate, gmail);
    expect([r.kind, r.status.code, r.status.enhanced, r.temporary, r.unreachable]).toEqual(['throttled', 451, '4.7.28', true, false]);
    expect(r.fix).toContain('rate:');
    const later = { code: 'ECONNECTION', command: 'CONN', responseCode: 421, response: '421 4.7.0 Try again later, closing connection. (EHLO) - gsmtp' };
    expect(upstreamRuleFor(later).name).toBe('gmail: try again later (421 4.7.0)');
    const l = classifyUpstreamError(later, gmail);
    expect([l.kind, l.status.code, l.status.enhanced, l.unreachable]).toEqual(['throttled', 451, '4.7.0', false]);
    // any other 421 is still the host closing on us: failover may move
    expect(classifyUpstreamError({ code: 'ECONNECTION', command: 'CONN', responseCode: 421, response: '421 Service not available' }, gmail).unreachable).toBe(true);
  });

  it('Gmail 550 5.4.5 daily quota: temporary (never bounced), the account is held', () => {
    const raw = { code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 550, response: '550 5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits go to https://support.google.com/a/answer/166852 - gsmtp' };
    expect(upstreamRuleFor(raw).name).toBe('gmail: daily sending quota (5.4.5)');
    const e = classifyUpstreamError(raw, gmail);
    expect([e.kind, e.status.code, e.status.enhanced, e.temporary, e.account]).toEqual(['quota', 451, '4.4.5', true, 'hold']);
    expect(e.fix).toContain('2,000 messages');
  });

  it('Gmail 454 4.7.0 too many login attempts: temporary, the account backs off', () => {
    const raw = auth('454 4.7.0 Too many login attempts, please try again later. - gsmtp');
    expect(upstreamRuleFor(raw).name).toBe('gmail: too many login attempts (454 4.7.0)');
    const e = classifyUpstreamError(raw, gmail);
    expect([e.kind, e.status.code, e.status.enhanced, e.temporary, e.account]).toEqual(['throttled', 451, '4.7.0', true, 'backoff']);
    expect(e.toLog()).toMatchObject({ kind: 'throttled', fix: e.fix });
  });

  it('530 5.7.57 client not authenticated: temporary auth, turn AUTH on for the server', () => {
    const raw = { code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 530, response: '530 5.7.57 Client not authenticated to send mail. [BN6PR01CA0001.namprd01.prod.outlook.com]' };
    expect(upstreamRuleFor(raw).name).toBe('authentication required (530, 5.7.57)');
    const e = classifyUpstreamError(raw, { ...m365, login: undefined, method: 'none' });
    expect([e.kind, e.status.code, e.status.enhanced, e.temporary]).toEqual(['auth', 451, '4.7.0', true]);
    expect(e.fix).toContain('give servers[0] `auth:`');
  });

  it('every provider row cites its source and gives a fix', async () => {
    const { PROVIDER_RULES } = await import('../../src/errors/upstream-rules.js');
    for (const row of PROVIDER_RULES) expect(row.fix, row.name).toBeTruthy();
  });
});
