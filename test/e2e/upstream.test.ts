import { createServer, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestUpstream, TEST_TLS, type TestUpstream, type TestUpstreamOptions } from '../support/upstream.js';
import { swaks } from '../support/swaks.js';
import { ACCOUNTS, SECRETS, headerValues, message, relayYaml, split, startRelay, type RunningRelay } from './harness.js';

/** Upstream answers come back to the client as 4xx/5xx with the upstream's words; our own failures are classified. */
describe('upstream answers and failures (delivery: passthrough)', () => {
  let upstream: TestUpstream | undefined;
  let relay: RunningRelay | undefined;

  afterEach(async () => {
    const log = relay?.rawLog() ?? '';
    await relay?.stop();
    await upstream?.close();
    relay = undefined;
    upstream = undefined;
    for (const secret of SECRETS) expect(log).not.toContain(secret);
  });

  async function setup(opts: TestUpstreamOptions, yaml?: (port: number) => string) {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, ...opts });
    relay = await startRelay(yaml ? yaml(upstream.port) : relayYaml(upstream.port));
    return { upstream, relay };
  }

  const send = (to: string | string[] = 'customer@example.net', from = 'support@acme.example') =>
    swaks({ server: '127.0.0.1', port: relay!.port, from, to, data: message({ From: from, Subject: 'x' }) });

  it('reports recipients the upstream refused while the others get the message', async () => {
    await setup({ refuseRecipients: { 'gone@example.net': { code: 550, message: '5.1.1 No such user here' } } });
    const r = await send(['a@example.net', 'gone@example.net', 'b@example.net']);
    expect(r.finalCode).toBe(250);
    expect(r.finalReply).toContain('to 2 of 3 recipients');
    expect(r.finalReply).toContain('<gone@example.net> 550 5.1.1 No such user here');
    const got = await upstream!.nextMessage();
    expect(got.rcptTo).toEqual(['a@example.net', 'b@example.net']);
    const line = relay!.logs.find((l) => l.result === 'partial');
    expect(line?.refused).toEqual([expect.objectContaining({ recipient: 'gone@example.net', kind: 'recipient', code: 550 })]);
  });

  it('fails the message per recipient when the upstream refuses them all, temporary wins', async () => {
    await setup({
      refuseRecipients: {
        'gone@example.net': { code: 550, message: '5.1.1 No such user' },
        'full@example.net': { code: 452, message: '4.2.2 Mailbox full' },
      },
    });
    const r = await send(['gone@example.net', 'full@example.net']);
    expect(r.finalCode).toBe(452);
    expect(r.finalReply).toMatch(/^452 4\.2\.2 Upstream main accepted none of the recipients: <gone@example\.net> 550 5\.1\.1 No such user; <full@example\.net> 452 4\.2\.2 Mailbox full/);
    expect(upstream!.messages).toHaveLength(0);
  });

  it('passes a temporary refusal after DATA on as 4xx with the upstream text', async () => {
    await setup({ onData: () => ({ code: 451, message: '4.3.0 Greylisted, come back later' }) });
    const r = await send();
    expect(r.finalCode).toBe(451);
    expect(r.finalReply).toBe('451 4.3.0 upstream main (127.0.0.1:' + upstream!.port + ') refused the message: 451 4.3.0 Greylisted, come back later');
  });

  it('passes a permanent refusal after DATA on as 5xx with the upstream text', async () => {
    await setup({ onData: () => ({ code: 554, message: '5.7.1 Message rejected as spam' }) });
    const r = await send();
    expect(r.finalCode).toBe(554);
    expect(r.finalReply).toMatch(/^554 5\.7\.1 upstream main .* refused the message: 554 5\.7\.1 Message rejected as spam$/);
  });

  it('passes a sender refusal on, naming the account', async () => {
    await setup({ refuseSenders: (from) => (from === 'support@acme.example' ? { code: 550, message: '5.7.60 SendAsDenied; not allowed to send as this sender' } : undefined) });
    const r = await send();
    expect(r.finalCode).toBe(550);
    expect(r.finalReply).toMatch(/^550 5\.7\.60 upstream main .* refused the sender support@acme\.example for account support@acme\.example: 550 5\.7\.60 SendAsDenied/);
  });

  it('answers 451 4.7.0 naming the account and where its password is set when the upstream refuses the sign-in', async () => {
    await setup({}, (port) => relayYaml(port).replace('password: support-secret-2', 'password: outdated-password'));
    const r = await send();
    expect(r.finalCode).toBe(451);
    expect(r.finalReply).toMatch(/^451 4\.7\.0 upstream main .* refused the sign-in of support@acme\.example: 535 .*; check channels\[0\]\.override\.password$/);
    expect(r.transcript).not.toContain('outdated-password');
    expect(relay!.rawLog()).not.toContain('outdated-password');
  });

  it('answers 451 4.4.1 when the upstream cannot be reached, and the client can retry later', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    relay = await startRelay(relayYaml(port));
    const r = await send();
    expect(r.finalCode).toBe(451);
    expect(r.finalReply).toBe(`451 4.4.1 Cannot connect to upstream main (127.0.0.1:${port}): connection refused`);
    const line = relay.logs.find((l) => l.result === 'refused');
    expect(line).toMatchObject({ kind: 'network', code: 451, identity: 'channel:support' });
  });
});

describe('upstream security and sign-in methods', () => {
  let upstream: TestUpstream | undefined;
  let relay: RunningRelay | undefined;
  afterEach(async () => {
    await relay?.stop();
    await upstream?.close();
    relay = undefined;
    upstream = undefined;
  });

  const server = (port: number, security: string, extra: string) =>
    relayYaml(port).replace('    security: none\n    auth: login\n', `    security: ${security}\n${extra}`);

  for (const security of ['starttls', 'tls'] as const) {
    it(`${security}: verifies the upstream certificate against tls.ca and relays`, async () => {
      upstream = await startTestUpstream({ accounts: ACCOUNTS, security, requireTlsForAuth: security === 'starttls' });
      relay = await startRelay(server(upstream.port, security, `    auth: plain\n    tls:\n      ca: {file: ${TEST_TLS.caPath}}\n`));
      const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'sales@acme.example', to: 'c@example.net', data: message({ From: 'sales@acme.example', Subject: 'x' }) });
      expect(r.finalCode).toBe(250);
      const got = await upstream.nextMessage();
      expect(got.secure).toBe(true);
      expect(got.login).toBe('relay@acme.example');
    });
  }

  it('refuses to talk to an upstream whose certificate it cannot verify: 451 4.7.5', async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, security: 'tls' });
    relay = await startRelay(server(upstream.port, 'tls', ''));
    const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'sales@acme.example', to: 'c@example.net', data: message({ From: 'sales@acme.example', Subject: 'x' }) });
    expect(r.finalCode).toBe(451);
    expect(r.finalReply).toMatch(/^451 4\.7\.5 TLS with upstream main .* failed/);
    expect(upstream.authAttempts).toHaveLength(0);
  });

  for (const auth of ['plain', 'login', 'cram-md5'] as const) {
    it(`signs in with auth: ${auth}`, async () => {
      upstream = await startTestUpstream({ accounts: ACCOUNTS });
      relay = await startRelay(server(upstream.port, 'none', `    auth: ${auth}\n`));
      const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to: 'c@example.net', data: message({ From: 'support@acme.example', Subject: 'x' }) });
      expect(r.finalCode).toBe(250);
      expect(upstream.authAttempts).toEqual([{ username: 'support@acme.example', ok: true }]);
    });
  }
});

describe('shared mailbox Send As over SMTP', () => {
  let upstream: TestUpstream | undefined;
  let relay: RunningRelay | undefined;
  afterEach(async () => {
    await relay?.stop();
    await upstream?.close();
    relay = undefined;
    upstream = undefined;
  });

  // the helpdesk is a shared mailbox (no sign-in of its own); alice signs in and has Send As on it
  const helpdesk = `  - name: helpdesk
    address: helpdesk@acme.example
    display_name: Acme Helpdesk
    override:
      username: alice@acme.example
      password: alice-secret-3
`;
  const start = async (sendAs: Record<string, string[]>) => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true, sendAs });
    relay = await startRelay(relayYaml(upstream.port).replace('agents:\n', `${helpdesk}agents:\n`));
    return swaks({ server: '127.0.0.1', port: relay.port, from: 'helpdesk@acme.example', to: 'c@example.net', data: message({ From: 'helpdesk@acme.example', Subject: 'shared', Sender: 'crm@acme.example' }) });
  };

  it('the delegate signs in; envelope and From are the shared mailbox; a Sender naming someone else is dropped', async () => {
    const r = await start({ 'alice@acme.example': ['helpdesk@acme.example'] });
    expect(r.finalCode).toBe(250);
    const got = await upstream!.nextMessage();
    expect(got.login).toBe('alice@acme.example');
    expect(got.mailFrom).toBe('helpdesk@acme.example');
    const { head } = split(got.raw);
    expect(headerValues(head, 'From')).toEqual(['Acme Helpdesk <helpdesk@acme.example>']);
    expect(headerValues(head, 'Sender')).toEqual([]);
  });

  it('without the Send As grant the upstream refuses, and the reply says so', async () => {
    const r = await start({});
    expect(r.finalCode).toBe(550);
    // names the delegate's login, whose grant is missing, and passes Exchange's words on
    expect(r.finalReply).toMatch(/^550 5\.7\.60 upstream main .* alice@acme\.example.*SendAsDenied; alice@acme\.example not allowed to send as helpdesk@acme\.example/);
    expect(upstream!.messages).toHaveLength(0);
  });
});
