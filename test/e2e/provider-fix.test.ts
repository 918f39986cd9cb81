/**
 * A provider's refusal, as ops meet it: the fix from the rule table in the log line, in
 * `sendas queue list` / `show`, and in the failure notice (for the mail administrator). The relay
 * in queue mode in front of a test upstream that answers like Microsoft 365.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { simpleParser } from 'mailparser';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { QueueStore } from '../../src/queue/store.js';
import { startTestUpstream, type TestUpstream, type TestUpstreamOptions } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { CLI } from '../support/relay-process.js';
import { ACCOUNTS, SECRETS, message, relayYaml, startRelay, type RunningRelay } from './harness.js';

const run = promisify(execFile);

describe("the fix for a provider's refusal", { timeout: 60_000 }, () => {
  const upstreams: TestUpstream[] = [];
  const relays: RunningRelay[] = [];
  afterEach(async () => {
    for (const r of relays.splice(0)) {
      const log = r.rawLog();
      await r.stop();
      for (const s of SECRETS) expect(log).not.toContain(s);
    }
    for (const u of upstreams.splice(0)) await u.close();
  });
  const upstream = async (opts: TestUpstreamOptions) => {
    const u = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true, ...opts });
    upstreams.push(u);
    return u;
  };
  const relay = async (port: number) => {
    const r = await startRelay(relayYaml(port, 'queue:\n  retry: [1h]\n', '', 'queue'));
    relays.push(r);
    return r;
  };
  const send = (r: RunningRelay, from: string) =>
    swaks({ server: '127.0.0.1', port: r.port, from, to: 'customer@example.net', data: message({ From: from, Subject: 'ticket #4711' }) });

  it('535 5.7.139: the message waits; the log line, `queue list` and `queue show` give the Set-CASMailbox fix', async () => {
    const u = await upstream({
      refuseAuth: (user) =>
        user === 'support@acme.example' ? { code: 535, message: '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.' } : undefined,
    });
    const r = await relay(u.port);
    expect((await send(r, 'support@acme.example')).finalCode).toBe(250);
    const line = await r.waitForLog((l) => l.result === 'deferred');
    expect(line).toMatchObject({ kind: 'auth', code: 451, enhanced: '4.7.0' });
    expect(line.fix).toMatch(/^SMTP AUTH is disabled for this mailbox or tenant: Set-CASMailbox -Identity support@acme\.example -SmtpClientAuthenticationDisabled \$false /);

    const store = new QueueStore(`${r.dir}/var/queue`);
    const entry = await vi.waitFor(async () => (await store.list()).find((m) => m.attempts === 1) ?? Promise.reject(new Error('not on disk yet')), { timeout: 5000, interval: 20 });
    expect(entry.lastError?.fix).toBe(line.fix);
    const cli = (...args: string[]) => run(process.execPath, [CLI, 'queue', ...args, '--config', r.configFile], { timeout: 15_000 });
    const list = await cli('list');
    expect(list.stdout).toContain(`refused the sign-in of support@acme.example: SMTP AUTH is disabled for this mailbox or tenant: 535 5.7.139 Authentication unsuccessful`);
    expect(list.stdout).toContain('(fix: SMTP AUTH is disabled for this mailbox or tenant: Set-CASMailbox -Identity support@acme.example -SmtpClientAuthenticationDisabled $false');
    const show = await cli('show', entry.id);
    expect(show.stdout).toContain('\n    fix: SMTP AUTH is disabled for this mailbox or tenant: Set-CASMailbox -Identity support@acme.example');
  });

  it('550 5.7.60 SendAsDenied: the message fails, and the notice tells the mail administrator to grant Send As', async () => {
    const u = await upstream({
      refuseSenders: (from, login) =>
        login === 'alice@acme.example' ? { code: 550, message: '5.7.60 SMTP; Client does not have permissions to send as this sender' } : undefined,
    });
    const r = await relay(u.port);
    expect((await send(r, 'alice@acme.example')).finalCode).toBe(250);
    const line = await r.waitForLog((l) => l.result === 'failed');
    expect(line.fix).toMatch(/^grant alice@acme\.example Send As on alice@acme\.example: Add-RecipientPermission -Identity alice@acme\.example -Trustee alice@acme\.example -AccessRights SendAs/);

    const notice = await u.nextMessage();
    expect(notice.mailFrom).toBe('');
    expect(notice.rcptTo).toEqual(['alice@acme.example']);
    const parsed = await simpleParser(notice.raw);
    const text = parsed.text!.replace(/\s+/g, ' ');
    expect(text).toContain('For your mail administrator, what to change on the relay or the mail account: - grant alice@acme.example Send As on alice@acme.example: Add-RecipientPermission -Identity alice@acme.example');
  });
});
