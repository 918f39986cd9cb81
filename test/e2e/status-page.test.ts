import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import type { TraceLookup } from '../../src/history/types.js';
import { OpsServer } from '../../src/ops/http.js';
import type { RelayStatus } from '../../src/ops/status.js';
import { swaks } from '../support/swaks.js';
import { freePort, startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, message, SECRETS, startRelay, type RunningRelay } from './harness.js';

const TOKEN = 'page-token-7f3a';
const ARTIFACTS = resolve(import.meta.dirname, '../../test-artifacts');

/**
 * The status page in a real browser (Debian's chromium through playwright-core) in front of the
 * real relay: the default server's primary is down, its alternate up, so the relay moves to the
 * alternate; one message is refused for good (with a fix), one waits after a 451.
 */
describe('status page in a browser', () => {
  let alternate: TestUpstream;
  let r: RunningRelay;
  let ops: OpsServer;
  let opsNoHistory: OpsServer;
  let base: string;
  let baseNoHistory: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let alternateHost: string;
  let primaryHost: string;

  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    const primaryPort = await freePort(); // nothing listens there: the primary is down
    alternate = await startTestUpstream({
      accounts: [...ACCOUNTS, { username: 'backup@acme.example', password: 'backup-secret-6' }],
      requireSenderMatchesLogin: true,
      // what Microsoft 365 answers when the account may not send as the mailbox
      refuseSenders: (from) => (from === 'alice@acme.example' ? { code: 550, message: '5.7.60 SMTP; Client does not have permissions to send as this sender' } : undefined),
      onData: (m) => (m.raw.toString().includes('Subject: later') ? { code: 451, message: '4.3.0 try again later' } : undefined),
    });
    primaryHost = `127.0.0.1:${primaryPort}`;
    alternateHost = `127.0.0.1:${alternate.port}`;
    r = await startRelay(yaml(primaryPort, alternate.port), { history: true });
    const endpoints = { ready: () => r.relay.ready(), status: () => r.relay.status(), registry: r.relay.metrics.registry, logger: pino({ level: 'silent' }), token: () => new Secret(TOKEN, 'inline') };
    // NEEDS the trace branch: Relay's delivery history lookup (TraceLookup), as cli/main.ts wires it;
    // until it is merged this is undefined and the search test below fails
    const withHistory = r.relay as unknown as { trace?: TraceLookup };
    const trace: TraceLookup | undefined = withHistory.trace ? (q, limit) => withHistory.trace!.call(r.relay, q, limit) : undefined;
    ops = new OpsServer({ ...endpoints, ...(trace ? { trace } : {}) });
    base = `http://127.0.0.1:${(await ops.listen('127.0.0.1', 0)).port}`;
    opsNoHistory = new OpsServer(endpoints);
    baseNoHistory = `http://127.0.0.1:${(await opsNoHistory.listen('127.0.0.1', 0)).port}`;

    const send = (from: string, subject: string, to = 'customer@example.net') =>
      swaks({ server: '127.0.0.1', port: r.port, from, to, data: message({ From: from, To: to, Subject: subject, 'Message-ID': `<${subject}@crm.example>` }) });
    expect((await send('support@acme.example', 'first')).finalCode).toBe(250);
    await r.waitForLog((l) => l.msg === 'primary unreachable: using the alternate');
    expect((await send('alice@acme.example', 'denied')).finalCode).toBe(250);
    expect((await send('sales@acme.example', 'later')).finalCode).toBe(250);
    // the three outcomes are in: one delivered, one in the failed area, one waiting
    await vi.waitFor(
      () => {
        const s = r.relay.status();
        expect(s.queue).toMatchObject({ depth: 1, failed: 1, deferred: { refused: 1 } });
        expect(s.failures).toHaveLength(2);
      },
      { timeout: 10_000, interval: 50 },
    );

    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'], headless: true });
    context = await browser.newContext({ httpCredentials: { username: 'ops', password: TOKEN }, viewport: { width: 1400, height: 1000 } });
    page = await context.newPage();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await ops?.close();
    await opsNoHistory?.close();
    await r?.stop();
    await alternate?.close();
  });

  const shot = async (name: string) => {
    const path = join(ARTIFACTS, `status-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot: ${path}`);
  };

  it('without the token the page asks the browser to sign in (Basic), the API paths ask for Bearer', async () => {
    const anonymous = await browser.newContext();
    try {
      // a person gets the browser's sign-in dialog; headless Chromium, with no credentials to
      // give, ends the navigation at the Basic challenge (a Bearer one would just show the 401 text)
      await expect((await anonymous.newPage()).goto(`${base}/`)).rejects.toThrow(/ERR_INVALID_AUTH_CREDENTIALS/);
    } finally {
      await anonymous.close();
    }
    const basic = `Basic ${Buffer.from(`ops:${TOKEN}`).toString('base64')}`;
    const wrong = `Basic ${Buffer.from('ops:not-the-token').toString('base64')}`;
    const get = async (path: string, authorization?: string) => {
      const res = await fetch(`${base}${path}`, authorization ? { headers: { authorization } } : {});
      return { status: res.status, challenge: res.headers.get('www-authenticate') };
    };
    expect(await get('/', wrong)).toEqual({ status: 401, challenge: 'Basic realm="sendas", charset="UTF-8"' });
    expect(await get('/', basic)).toEqual({ status: 200, challenge: null });
    expect(await get('/', `Bearer ${TOKEN}`)).toEqual({ status: 200, challenge: null });
    expect(await get('/status')).toEqual({ status: 401, challenge: 'Bearer realm="sendas"' });
    expect(await get('/status', basic)).toEqual({ status: 401, challenge: 'Bearer realm="sendas"' });
    expect(await get('/status', `Bearer ${TOKEN}`)).toEqual({ status: 200, challenge: null });
    expect(await get('/healthz')).toEqual({ status: 200, challenge: null });

    // what the page shows is in the JSON too
    const json = (await (await fetch(`${base}/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as RelayStatus;
    expect(json.queue).toMatchObject({ depth: 1, failed: 1, deferred: { refused: 1 } });
    // newest first; the two were delivered side by side (two accounts), so either may be last
    expect(json.failures?.map((f) => [f.result, f.kind, f.identity]).sort()).toEqual([
      ['deferred', 'refused', 'channel:sales'],
      ['failed', 'sender', 'agent:alice'],
    ]);
    expect(json.failures?.find((f) => f.identity === 'agent:alice')?.fix).toMatch(/^grant alice@acme\.example Send As on alice@acme\.example/);
    expect(json.identities?.find((i) => i.name === 'carol')).toMatchObject({ kind: 'agent', server: 'backup', via: 'server', account: 'backup/backup@acme.example', sendsAs: 'backup@acme.example' });
  });

  it('shows the alternate in use, the default server, used-by counts, the queue and a failure with its fix', async () => {
    const res = await page.goto(`${base}/`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toMatch(/^default-src 'none'; style-src 'sha256-/);

    const banner = page.locator('#alternate-main');
    await expect.poll(() => banner.isVisible()).toBe(true);
    expect(await banner.innerText()).toContain(`Server main is sending through its alternate server ${alternateHost}`);
    expect(await banner.innerText()).toContain(`its primary ${primaryHost} could not be reached`);
    // the page's style applied under the CSP: the banner has its thick left border
    expect(await banner.evaluate((el) => getComputedStyle(el).borderLeftWidth)).toBe('8px');

    const main = page.locator('tr[data-server="main"]');
    const backup = page.locator('tr[data-server="backup"]');
    expect(await main.locator('.badge.default').innerText()).toBe('Default');
    expect(await backup.locator('.badge.default').count()).toBe(0);
    expect(await main.locator('td.in-use').innerText()).toContain(alternateHost);
    const count = async (row: typeof main, kind: 'channels' | 'agents') => (await row.locator(`.used-by-${kind} .count`).innerText()).trim();
    expect([await count(main, 'channels'), await count(main, 'agents'), await count(backup, 'channels'), await count(backup, 'agents')]).toEqual(['2', '1', '0', '1']);

    expect(await page.locator('#queue-depth').innerText()).toBe('1');
    expect(await page.locator('#queue-deferred').innerText()).toBe('1');
    expect(await page.locator('#queue-failed').innerText()).toBe('1');
    expect(await page.locator('#deferred-by-reason tr[data-reason="refused"] td.num').innerText()).toBe('1');

    const denied = page.locator('tr.failure', { hasText: 'alice@acme.example' }).first();
    const failureText = await denied.innerText();
    expect(failureText).toContain('failed');
    expect(failureText).toContain('5.7.60');
    expect(await denied.locator('.fix').innerText()).toMatch(/Add-RecipientPermission -Identity alice@acme\.example/);

    // the channel's display name is text on the page, not markup
    const support = page.locator('tr[data-identity="channel:support"]');
    expect(await support.innerText()).toContain('<b>Acme</b> Support');
    expect(await support.locator('b').count()).toBe(0);
    expect(await page.locator('tr[data-identity="agent:carol"]').innerText()).toContain('backup/backup@acme.example');

    const html = await page.content();
    for (const secret of [...SECRETS, 'backup-secret-6', TOKEN]) expect(html).not.toContain(secret);
    await shot('overview');
  });

  it('without a delivery history the search says so', async () => {
    const res = await page.goto(`${baseNoHistory}/?q=customer%40example.net`);
    expect(res?.status()).toBe(200);
    expect(await page.locator('#history-off').innerText()).toContain('The delivery history is off');
  });

  // NEEDS the trace branch (the delivery history and Relay's TraceLookup): fails on `page` until the lead merges `trace`
  it('a search for a recipient finds the message, grouped by queue id', async () => {
    await page.goto(`${base}/`);
    await page.locator('#q').fill('customer@example.net');
    await page.locator('form[role="search"] button').click();
    await page.waitForURL(/\?q=customer%40example\.net$/);
    const groups = page.locator('#search .trace');
    await expect.poll(() => groups.count()).toBe(3);
    const first = page.locator('#search .trace', { hasText: 'first@crm.example' });
    expect(await first.locator('tr.event-delivered').innerText()).toContain(alternateHost);
    const denied = page.locator('#search .trace', { hasText: 'denied@crm.example' });
    expect(await denied.locator('tr.event-failed .fix').innerText()).toMatch(/Add-RecipientPermission/);
    await shot('search');

    await page.locator('#q').fill('nobody@example.org');
    await page.locator('form[role="search"] button').click();
    expect(await page.locator('#nothing-found').innerText()).toContain('Nothing found');
  });
});

function yaml(primaryPort: number, alternatePort: number): string {
  return `
delivery: queue
queue:
  retry: [1h]
servers:
  - name: main
    default: true
    host: 127.0.0.1
    port: ${primaryPort}
    security: none
    auth: login
    username: relay@acme.example
    password: server-secret-1
    alternate: {host: 127.0.0.1, port: ${alternatePort}, cooldown: 10m}
  - name: backup
    host: 127.0.0.1
    port: ${alternatePort}
    security: none
    auth: login
    username: backup@acme.example
    password: backup-secret-6
channels:
  - name: support
    address: support@acme.example
    display_name: "<b>Acme</b> Support"
    override:
      password: support-secret-2
  - name: sales
    address: sales@acme.example
agents:
  - name: alice
    address: alice@acme.example
    override:
      password: alice-secret-3
  - name: carol
    address: carol@acme.example
    server: backup
clients:
  - username: crm
    password: crm-secret-4
`;
}
