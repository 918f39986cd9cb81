import { formatAge } from '../../config/duration.js';
import type { AccountStatus, FailureStatus, IdentityStatus, RelayStatus } from '../status.js';
import { Html, html } from './html.js';
import { renderSearch, type SearchView } from './search.js';
import { renderCluster } from './cluster.js';
import { STYLE } from './style.js';

export interface PageOptions {
  /** ms since epoch: ages and "since" are shown against it. */
  readonly now: number;
  /** The search box's query and what it found; undefined: no search asked. */
  readonly search?: SearchView;
  /** Seconds between reloads of the overview; a page with a search is not reloaded. */
  readonly refreshSeconds?: number;
}

/**
 * The status page: what /status says, laid out as admin consoles show mail servers (the default
 * marked, "used by" counts, a message while the alternate server is in use). Pure: plain status
 * values in, a whole HTML document out; every value goes through `html`, so it is escaped.
 */
export function renderStatusPage(status: RelayStatus, opts: PageOptions): string {
  const refresh = opts.search ? undefined : (opts.refreshSeconds ?? 30);
  const body = html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${refresh ? html`<meta http-equiv="refresh" content="${refresh}">` : ''}
<title>sendas status</title>
<style>${new Html(STYLE)}</style>
</head>
<body>
<header>
<h1>sendas status</h1>
<p>Config version <code>${status.config.version}</code>, loaded ${when(status.config.loadedAt, opts.now)} from <code>${status.config.file}</code>; delivery: ${status.config.delivery}.</p>
<p>Shown ${new Date(opts.now).toISOString()}${refresh ? ` (reloads every ${refresh} s)` : ''} · <a href="/">reload</a> · <a href="/status">JSON</a></p>
</header>
${banners(status, opts.now)}
<form method="get" action="/" role="search">
<label for="q">Find a message</label>
<input type="search" id="q" name="q" value="${opts.search?.query ?? ''}" placeholder="recipient, sender, Message-ID or queue id">
<button type="submit">Search</button>
</form>
${opts.search ? renderSearch(opts.search) : ''}
${servers(status, opts.now)}
${identities(status.identities ?? [])}
${queue(status)}
${failures(status.failures, opts.now)}
${accounts(status.accounts, opts.now)}
${renderCluster(status.cluster, opts.now)}
</body>
</html>
`;
  return body.text;
}

function banners(status: RelayStatus, now: number): Html {
  const onAlternate = status.servers.filter((s) => s.route.role === 'alternate');
  const reload = status.config.lastReloadError;
  return html`${onAlternate.map(
    (s) =>
      html`<div class="banner" role="alert" id="alternate-${s.name}"><strong>Server ${s.name} is sending through its alternate server ${s.route.host}</strong> since ${when(s.route.since, now)}: its primary ${`${s.host}:${s.port}`} could not be reached. Traffic goes back to the primary once it takes a message again.</div>`,
  )}${
    reload
      ? html`<div class="banner bad" role="alert" id="reload-error"><strong>The config file on disk is invalid</strong> (since ${when(reload.at, now)}): the relay keeps serving with version <code>${status.config.version}</code>.<ul>${reload.issues.map(
          (i) => html`<li><code>${i.path || '(file)'}${i.line !== undefined ? `:${i.line}` : ''}</code> ${i.message}</li>`,
        )}</ul></div>`
      : ''
  }`;
}

function servers(status: RelayStatus, now: number): Html {
  return html`<section id="servers"><h2>SMTP servers</h2>
<table>
<thead><tr><th>Name</th><th>Host</th><th>Alternate</th><th>In use</th><th>Account</th><th class="num">Used by channels</th><th class="num">Used by agents</th><th class="num">Queued</th><th>Test</th></tr></thead>
<tbody>${status.servers.map(
    (s) => html`<tr data-server="${s.name}">
<td>${s.name}${s.default ? html`<span class="badge default" title="identities that name no server use it">Default</span>` : ''}</td>
<td>${s.host ? html`<code>${s.host}:${s.port}</code><br><span class="muted">security ${s.security}</span>` : html`<code>${s.route.host}</code><br><span class="muted">Microsoft Graph</span>`}</td>
<td>${s.alternate ? html`<code>${s.alternate}</code>` : html`<span class="muted">none</span>`}</td>
<td class="in-use"><code>${s.route.host}</code>${s.route.role === 'alternate' ? html`<span class="badge alternate">alternate</span>` : html`<span class="muted"> primary</span>`}<br><span class="muted">since ${when(s.route.since, now)}</span></td>
<td>${s.account || html`<span class="muted">none (identities override)</span>`}</td>
<td class="num used-by-channels">${usedBy(s.usedBy.channels)}</td>
<td class="num used-by-agents">${usedBy(s.usedBy.agents)}</td>
<td class="num">${s.queue.queued}${s.queue.queued ? html`<br><span class="muted">oldest ${formatAge(s.queue.oldestAgeSeconds * 1000)}</span>` : ''}</td>
<td><code>sendas test --config ${status.config.file} --server ${s.name}</code></td>
</tr>`,
  )}</tbody>
</table></section>`;
}

function usedBy(names: readonly string[]): Html {
  if (names.length === 0) return html`<span class="count">0</span>`;
  return html`<details><summary class="count">${names.length}</summary>${names.join(', ')}</details>`;
}

function identities(list: readonly IdentityStatus[]): Html {
  return html`<section id="identities"><h2>Channels and agents</h2>
${
  list.length === 0
    ? html`<p class="muted">No channels or agents are configured: every message is sent with the default server's account.</p>`
    : html`<table>
<thead><tr><th>Kind</th><th>Name</th><th>Address</th><th>Display name</th><th>Server</th><th>Sends as</th></tr></thead>
<tbody>${list.map(
        (i) => html`<tr data-identity="${i.kind}:${i.name}">
<td>${i.kind}</td><td>${i.name}</td><td>${i.address}</td><td>${i.displayName ?? ''}</td><td>${i.server}</td>
<td>${i.problem ? html`<span class="problem">${i.problem}</span>` : html`${i.sendsAs} <span class="muted">(${i.via === 'override' ? 'own account' : "server's account"} ${i.account})</span>`}</td>
</tr>`,
      )}</tbody>
</table>`
}</section>`;
}

function queue(status: RelayStatus): Html {
  const q = status.queue;
  if (!q) return html`<section id="queue"><h2>Queue</h2><p class="muted">delivery: passthrough — nothing is queued; each message is relayed while the client waits.</p></section>`;
  const deferred = Object.entries(q.deferred ?? {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const deferredTotal = deferred.reduce((n, [, c]) => n + c, 0);
  return html`<section id="queue"><h2>Queue</h2>
<dl class="stats">
<div><dt>Queued</dt><dd id="queue-depth">${q.depth}</dd></div>
<div><dt>Oldest</dt><dd id="queue-oldest">${q.depth ? formatAge(q.oldestAgeSeconds * 1000) : '–'}</dd></div>
<div><dt>Deferred</dt><dd id="queue-deferred">${deferredTotal}</dd></div>
<div><dt>Failed</dt><dd id="queue-failed">${q.failed ?? 0}</dd></div>
</dl>
${
  deferred.length
    ? html`<table id="deferred-by-reason"><thead><tr><th>Deferred by reason</th><th class="num">Messages</th></tr></thead><tbody>${deferred.map(([kind, n]) => html`<tr data-reason="${kind}"><td>${kind}</td><td class="num">${n}</td></tr>`)}</tbody></table>`
    : html`<p class="muted">Nothing is waiting after a failed attempt.</p>`
}
${q.failed ? html`<p class="muted">Failed messages are kept in the failed area: <code>sendas queue list</code> shows them, <code>sendas queue retry ID</code> puts one back.</p>` : ''}
</section>`;
}

function failures(list: readonly FailureStatus[] | undefined, now: number): Html {
  if (list === undefined) return html``;
  return html`<section id="failures"><h2>Last failures</h2>
${
  list.length === 0
    ? html`<p class="muted">No failed or deferred attempt since the start.</p>`
    : html`<table>
<thead><tr><th>When</th><th>Queue id</th><th>Result</th><th>Recipients</th><th>Sent as</th><th>Reason and fix</th></tr></thead>
<tbody>${list.map(
        (f) => html`<tr class="failure" data-queue-id="${f.queueId}">
<td>${when(f.at, now)}</td><td><a class="id" href="/?q=${encodeURIComponent(f.queueId)}"><code>${f.queueId}</code></a></td>
<td>${f.result}<br><span class="muted">${f.kind} ${f.code} ${f.enhanced}</span></td>
<td>${f.recipients.join(', ')}</td>
<td>${f.identity}<br><span class="muted">${f.account ?? f.server}${f.host ? ` via ${f.host}` : ''}</span></td>
<td>${f.reason}${f.upstreamReply ? html`<br><span class="muted">upstream: <code>${f.upstreamReply}</code></span>` : ''}${f.fix ? html`<p class="fix">${f.fix}</p>` : ''}</td>
</tr>`,
      )}</tbody>
</table>`
}</section>`;
}

function accounts(list: readonly AccountStatus[], now: number): Html {
  return html`<section id="accounts"><h2>Accounts</h2>
${
  list.length === 0
    ? html`<p class="muted">No upstream account yet.</p>`
    : html`<table>
<thead><tr><th>Account</th><th>Server</th><th>Budgets (24 h)</th><th class="num">Connections</th><th>Backoff / hold</th><th>Last success</th><th>Last failure</th></tr></thead>
<tbody>${list.map(
        (a) => html`<tr data-account="${a.account}">
<td>${a.account}<br><span class="muted">${a.address}</span></td><td>${a.server}</td>
<td>${a.budgets.length ? a.budgets.map((b) => html`<div>${b.budget}: ${b.used} / ${b.limit}</div>`) : html`<span class="muted">no limit</span>`}</td>
<td class="num">${a.connections.inUse} / ${a.connections.limit}</td>
<td>${a.heldUntil ? html`<span class="problem">held until ${when(a.heldUntil, now)}</span>` : ''}${a.backoff ? html`<span class="alternate">backs off: ${a.backoff.connections} at once until ${when(a.backoff.until, now)}</span>` : ''}${!a.heldUntil && !a.backoff ? html`<span class="muted">–</span>` : ''}</td>
<td>${a.lastSuccess ? when(a.lastSuccess.at, now) : html`<span class="muted">–</span>`}</td>
<td>${a.lastFailure ? html`${when(a.lastFailure.at, now)}<br><span class="muted">${a.lastFailure.kind ?? ''} ${a.lastFailure.reason ?? ''}</span>` : html`<span class="muted">–</span>`}</td>
</tr>`,
      )}</tbody>
</table>`
}</section>`;
}

/** An ISO time with its age: "2026-12-01T10:15:00.000Z (3m ago)". */
export function when(iso: string, now: number): Html {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return html`${iso}`;
  const age = now - t;
  return html`<time datetime="${iso}">${iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}</time><span class="muted"> (${age >= 0 ? `${formatAge(age)} ago` : `in ${formatAge(-age)}`})</span>`;
}
