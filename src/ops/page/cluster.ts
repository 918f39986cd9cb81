import { formatAge } from '../../config/duration.js';
import type { ClusterStatus } from '../../cluster/cluster.js';
import { html, type Html } from './html.js';

/**
 * The status page's Cluster block (`cluster:`): Redis up or down, and every replica in the node
 * registry with its version, config version, queue depth and the age of its last heartbeat.
 * Nothing for one relay.
 */
export function renderCluster(cluster: ClusterStatus | undefined, now: number): Html {
  if (!cluster) return html``;
  const since = Date.parse(cluster.since);
  const sinceText = Number.isNaN(since) ? cluster.since : `${formatAge(now - since)}`;
  return html`<section id="cluster"><h2>Cluster</h2>
<p id="cluster-redis">Redis ${
    cluster.redis === 'up'
      ? html`<span class="badge default">up</span> for ${sinceText}: limits are shared with the other replicas.`
      : html`<span class="badge problem">down</span> for ${sinceText}${cluster.problem ? html` (<code>${cluster.problem}</code>)` : ''}: each replica keeps its own share of every limit (divided by the ${cluster.replicas} replica${cluster.replicas === 1 ? '' : 's'} last seen) until it is back.`
  } This node: <code>${cluster.node}</code>.</p>
<table id="cluster-nodes">
<thead><tr><th>Node</th><th>Version</th><th>Config</th><th class="num">Queued</th><th>Last heartbeat</th></tr></thead>
<tbody>${cluster.nodes.map(
    (n) => html`<tr data-node="${n.node}">
<td>${n.node}${n.node === cluster.node ? html`<span class="badge default">this node</span>` : ''}</td><td>${n.version}</td><td><code>${n.config}</code></td><td class="num">${n.queueDepth}</td><td>${heartbeatAge(n.heartbeat, now)}</td>
</tr>`,
  )}</tbody>
</table></section>`;
}

function heartbeatAge(iso: string, now: number): Html {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return html`${iso}`;
  return html`<time datetime="${iso}">${formatAge(now - t)} ago</time>`;
}
