import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { Secret } from '../../src/config/secret.js';
import type { TraceEvent } from '../../src/history/types.js';
import { pageAuthorized } from '../../src/ops/page/access.js';
import { escapeHtml, html } from '../../src/ops/page/html.js';
import { renderStatusPage } from '../../src/ops/page/render.js';
import { statusPage } from '../../src/ops/page/serve.js';
import { PAGE_CSP, STYLE } from '../../src/ops/page/style.js';
import { relayStatus, type FailureStatus, type RelayStatus } from '../../src/ops/status.js';

const snapshot = parseConfig(
  `delivery: queue
servers:
  - name: main
    default: true
    host: smtp.acme.example
    username: relay@acme.example
    password: server-pw-1
    alternate: {host: smtp2.acme.example, port: 2525}
  - name: backup
    host: smtp.backup.example
    username: backup@acme.example
    password: backup-pw-2
channels:
  - name: support
    address: support@acme.example
    display_name: "<script>alert('x')</script> & Co"
    override: {password: support-pw-3}
  - name: sales
    address: sales@acme.example
agents:
  - name: alice
    address: alice@acme.example
    server: backup
  - name: bob
    address: bob@acme.example
    override:
`,
  '/etc/sendas/relay.yaml',
  { env: {} },
);
const NOW = Date.parse('2026-12-01T10:30:00Z');
const startedAt = new Date('2026-12-01T08:00:00Z');

function status(extra: Partial<Parameters<typeof relayStatus>[0]> = {}): RelayStatus {
  return relayStatus({
    snapshot,
    loadedAt: startedAt,
    lastReloadError: undefined,
    queue: { depth: 0, oldestAgeSeconds: 0, byServer: {} },
    queueDetail: { deferred: {}, failed: 0 },
    failures: [],
    startedAt,
    routes: {},
    ...extra,
  });
}
const page = (s: RelayStatus, search?: Parameters<typeof renderStatusPage>[1]['search']) => renderStatusPage(s, { now: NOW, ...(search ? { search } : {}) });
/** What a reader sees: tags dropped, entities decoded, white space collapsed. */
const text = (h: string) =>
  h
    .replace(/<style>[^]*?<\/style>/, '')
    .replace(/<[^>]+>/g, ' ')
    .replace(/&(#39|quot|lt|gt|amp);/g, (_, e: string) => ({ '#39': "'", quot: '"', lt: '<', gt: '>', amp: '&' })[e]!)
    .replace(/\s+/g, ' ');

describe('status page (renderer)', () => {
  it('escapes every value: a display name with <script> is text, never markup', () => {
    const out = page(status());
    expect(out).not.toContain('<script');
    expect(out).toContain('&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co');
    expect(escapeHtml(`"'<>&`)).toBe('&quot;&#39;&lt;&gt;&amp;');
    expect(html`<b>${'<i>'}</b>${html`<i>ok</i>`}${undefined}${['<a>', html`<br>`]}`.text).toBe('<b>&lt;i&gt;</b><i>ok</i>&lt;a&gt;<br>');
  });

  it('a search term and a trace reply are escaped too', () => {
    const events: TraceEvent[] = [{ at: '2026-12-01T10:00:00.000Z', event: 'failed', queueId: 'AAAABBBBCCCC', recipient: 'x@example.net', reply: '550 <img src=x onerror=alert(1)>' }];
    const out = page(status(), { query: '"><script>alert(1)</script>', found: { events, limit: 200 } });
    expect(out).not.toMatch(/<script|<img/);
    expect(out).toContain('value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"');
  });

  it('never renders a secret', () => {
    const out = page(status());
    for (const secret of ['server-pw-1', 'backup-pw-2', 'support-pw-3']) expect(out).not.toContain(secret);
  });

  it('marks the default server and counts who uses each server', () => {
    const out = page(status());
    const row = (name: string) => out.slice(out.indexOf(`<tr data-server="${name}">`), out.indexOf('</tr>', out.indexOf(`<tr data-server="${name}">`)));
    expect(row('main')).toContain('badge default');
    expect(row('backup')).not.toContain('badge default');
    // main: support, sales (channels) and bob (agent); backup: alice
    expect(text(row('main'))).toMatch(/ 2 support, sales 1 bob 0 /);
    expect(text(row('backup'))).toMatch(/ 0 1 alice 0 /);
    expect(text(row('main'))).toContain('sendas test --config /etc/sendas/relay.yaml --server main');
  });

  it('lists each channel and agent with the account it sends as, and says which one has no password', () => {
    const out = text(page(status()));
    expect(out).toContain("support support@acme.example");
    expect(out).toMatch(/support@acme\.example \(own account main\/support@acme\.example\)/);
    expect(out).toMatch(/sales sales@acme\.example (?:.* )?main relay@acme\.example \(server's account main\/relay@acme\.example\)/);
    expect(out).toMatch(/alice alice@acme\.example (?:.* )?backup backup@acme\.example/);
    expect(out).toMatch(/bob bob@acme\.example (?:.* )?has no email password configured/);
  });

  it('no banner while every server uses its primary; one naming the alternate while it is in use', () => {
    expect(page(status())).not.toContain('role="alert"');
    const moved = Date.parse('2026-12-01T10:15:00Z');
    const out = page(status({ routes: { main: { host: 'smtp2.acme.example', port: 2525, role: 'alternate', since: moved } } }));
    const banner = out.slice(out.indexOf('<div class="banner" role="alert" id="alternate-main">'), out.indexOf('</div>', out.indexOf('id="alternate-main"')));
    expect(text(banner)).toContain('Server main is sending through its alternate server smtp2.acme.example:2525');
    expect(text(banner)).toContain('2026-12-01 10:15:00Z (15m ago)');
    expect(text(banner)).toContain('its primary smtp.acme.example:587 could not be reached');
    expect(out).not.toContain('id="alternate-backup"');
  });

  it('shows the last reload error and the version still served', () => {
    const out = text(page(status({ lastReloadError: { at: new Date('2026-12-01T10:00:00Z'), issues: [{ path: 'servers[0].port', line: 7, col: 11, message: 'must be a number' }] } })));
    expect(out).toContain('The config file on disk is invalid');
    expect(out).toContain(`keeps serving with version ${snapshot.version}`);
    expect(out).toContain('servers[0].port:7 must be a number');
  });

  it('the queue: depth, oldest, deferred by reason, failed; and the failures with their fix', () => {
    const failure: FailureStatus = {
      at: '2026-12-01T10:29:00.000Z',
      queueId: 'AAAABBBBCCCC',
      result: 'failed',
      recipients: ['x@example.net'],
      identity: 'agent:alice',
      server: 'backup',
      account: 'backup/backup@acme.example',
      host: 'smtp.backup.example:587',
      kind: 'sender',
      code: 550,
      enhanced: '5.7.60',
      reason: 'the upstream refused the sender',
      fix: 'grant Send As',
    };
    const out = page(
      status({ queue: { depth: 3, oldestAgeSeconds: 125, byServer: { main: { queued: 3, oldestAgeSeconds: 125 } } }, queueDetail: { deferred: { network: 2, quota: 1 }, failed: 4 }, failures: [failure] }),
    );
    const t = text(out);
    expect(t).toMatch(/Queued 3 Oldest 2m Deferred 3 Failed 4/);
    expect(t).toMatch(/Deferred by reason Messages network 2 quota 1/);
    expect(t).toContain('the upstream refused the sender Fix: grant Send As'.replace('Fix: ', ''));
    expect(out).toContain('<p class="fix">grant Send As</p>');
    expect(out).toContain('href="/?q=AAAABBBBCCCC"');
  });

  it('empty states: nothing deferred, no failures, passthrough without a queue', () => {
    const t = text(page(status()));
    expect(t).toContain('Nothing is waiting after a failed attempt.');
    expect(t).toContain('No failed or deferred attempt since the start.');
    const passthrough = text(page(relayStatus({ snapshot, loadedAt: startedAt, lastReloadError: undefined, queue: undefined })));
    expect(passthrough).toContain('delivery: passthrough');
    expect(passthrough).not.toContain('Last failures');
  });

  it('search: grouped by queue id, "nothing found", and the history off', async () => {
    const events: TraceEvent[] = [
      { at: '2026-12-01T10:00:00.000Z', event: 'queued', queueId: 'AAAA2222CCCC', messageId: 'one@crm.example', recipient: 'x@example.net' },
      { at: '2026-12-01T10:00:01.000Z', event: 'queued', queueId: 'DDDD3333EEEE', recipient: 'x@example.net' },
      { at: '2026-12-01T10:00:02.000Z', event: 'delivered', queueId: 'AAAA2222CCCC', recipient: 'x@example.net', account: 'main/relay@acme.example', host: 'smtp.acme.example:587', reply: '250 2.0.0 OK' },
    ];
    const calls: [string, number | undefined][] = [];
    const lookup = async (q: string, limit?: number) => (calls.push([q, limit]), q === 'x@example.net' ? events : []);
    const found = await statusPage(status(), lookup, new URLSearchParams('q=+x@example.net+'), NOW);
    expect(calls).toEqual([['x@example.net', 200]]);
    expect(found).not.toContain('http-equiv="refresh"');
    const groups = [...found.matchAll(/<div class="trace" data-queue-id="(\w+)">/g)].map((m) => m[1]);
    expect(groups).toEqual(['AAAA2222CCCC', 'DDDD3333EEEE']);
    const first = text(found.slice(found.indexOf('data-queue-id="AAAA2222CCCC"'), found.indexOf('data-queue-id="DDDD3333EEEE"')));
    expect(first).toMatch(/Message-ID one@crm\.example .* queued x@example\.net .* delivered x@example\.net main\/relay@acme\.example smtp\.acme\.example:587 250 2\.0\.0 OK/);

    expect(text(await statusPage(status(), lookup, new URLSearchParams('q=nobody@example.net'), NOW))).toContain('Nothing found for “nobody@example.net”');
    expect(text(await statusPage(status(), undefined, new URLSearchParams('q=x@example.net'), NOW))).toContain('The delivery history is off');
    const overview = await statusPage(status(), undefined, new URLSearchParams(''), NOW);
    expect(overview).toContain('<meta http-equiv="refresh" content="30">');
    expect(overview).not.toContain('id="search"');
  });

  it('the Content-Security-Policy allows exactly the page style and no script', () => {
    const hash = createHash('sha256').update(STYLE).digest('base64');
    expect(PAGE_CSP).toContain(`style-src 'sha256-${hash}'`);
    expect(PAGE_CSP).toMatch(/^default-src 'none';/);
    expect(PAGE_CSP).not.toMatch(/script-src|unsafe/);
    expect(page(status())).toContain(`<style>${STYLE}</style>`);
  });
});

describe('status page access', () => {
  const token = new Secret('tok-en:42', 'inline');
  const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  it('takes Basic with the token as the password (any user name) or Bearer; nothing else', () => {
    expect(pageAuthorized(basic('ops', 'tok-en:42'), token)).toBe(true);
    expect(pageAuthorized(basic('', 'tok-en:42'), token)).toBe(true);
    expect(pageAuthorized('Bearer tok-en:42', token)).toBe(true);
    expect(pageAuthorized(basic('ops', 'tok-en'), token)).toBe(false);
    expect(pageAuthorized(basic('tok-en:42', ''), token)).toBe(false);
    expect(pageAuthorized('Basic !!!', token)).toBe(false);
    expect(pageAuthorized(undefined, token)).toBe(false);
  });
});
