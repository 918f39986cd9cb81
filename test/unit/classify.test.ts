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
