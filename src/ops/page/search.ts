import type { TraceEvent } from '../../history/types.js';
import { html, type Html } from './html.js';

/** The search box's question and what the delivery history answered. */
export interface SearchView {
  readonly query: string;
  /** `off`: no history is kept (no TraceLookup); `error`: the lookup failed (the sentence only). */
  readonly found: { readonly events: readonly TraceEvent[]; readonly limit: number } | 'off' | { readonly error: string };
}

/** The trace's events, one table per queue entry, oldest event first as the history returns them. */
export function renderSearch(view: SearchView): Html {
  const { query, found } = view;
  const head = html`<h2>Messages matching “${query}”</h2>`;
  if (found === 'off') {
    return html`<section id="search">${head}<p class="banner" id="history-off">The delivery history is off: sendas keeps no trace to search. The log has one line per attempt.</p></section>`;
  }
  if ('error' in found) return html`<section id="search">${head}<p class="banner bad">The search failed: ${found.error}</p></section>`;
  if (query.trim() === '') return html`<section id="search">${head}<p class="muted">Type a recipient, a sender, a Message-ID or a queue id.</p></section>`;
  if (found.events.length === 0) return html`<section id="search">${head}<p id="nothing-found">Nothing found for “${query}”.</p></section>`;
  const groups = new Map<string, TraceEvent[]>();
  for (const e of found.events) {
    const list = groups.get(e.queueId);
    if (list) list.push(e);
    else groups.set(e.queueId, [e]);
  }
  return html`<section id="search">${head}
${found.events.length >= found.limit ? html`<p class="muted">Showing the first ${found.limit} events; search for a queue id to see one message whole.</p>` : ''}
${[...groups].map(([queueId, events]) => group(queueId, events))}
</section>`;
}

function group(queueId: string, events: readonly TraceEvent[]): Html {
  const first = events[0]!;
  const messageId = events.find((e) => e.messageId)?.messageId;
  return html`<div class="trace" data-queue-id="${queueId}">
<h3>Queue id <code>${queueId}</code>${messageId ? html` · Message-ID <code>${messageId}</code>` : ''}</h3>
<p class="muted">${first.envelopeFrom !== undefined ? `from ${first.envelopeFrom || '<>'}` : ''}${first.identity ? ` · ${first.identity}` : ''}${first.server ? ` · server ${first.server}` : ''}</p>
<table>
<thead><tr><th>Time</th><th>Event</th><th>Recipient</th><th>Account</th><th>Host</th><th>Reply</th><th>Kind and fix</th></tr></thead>
<tbody>${events.map(
    (e) => html`<tr class="event event-${e.event}">
<td><time datetime="${e.at}">${e.at}</time></td><td>${e.event}${e.attempt !== undefined ? html`<span class="muted"> #${e.attempt}</span>` : ''}</td>
<td>${e.recipient ?? ''}</td><td>${e.account ?? ''}</td><td>${e.host ? html`<code>${e.host}</code>` : ''}</td>
<td>${e.reply ? html`<code>${e.reply}</code>` : ''}</td>
<td>${e.kind ?? ''}${e.fix ? html`<p class="fix">${e.fix}</p>` : ''}</td>
</tr>`,
  )}</tbody>
</table></div>`;
}
