import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { swaks } from '../support/swaks.js';
import { freePort, startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, message, relayYaml, startRelay, type RunningRelay } from './harness.js';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const RULES = join(REPO, 'deploy/prometheus/alerts.yml');
const DASHBOARD = join(REPO, 'deploy/grafana/sendas.json');
/** What Prometheus adds to every scraped series. */
const TARGET = { job: 'sendas', instance: 'relay:9025' };

/** One sample of the Prometheus text format: name, labels, value. */
interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

function parseScrape(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

const seriesKey = (s: Pick<Sample, 'name' | 'labels'>) => `${s.name}{${Object.entries(s.labels).map(([k, v]) => `${k}="${v}"`).join(',')}}`;

/**
 * The relay's two real scrapes as promtool input: the fresh one for minutes 0–9, the one after
 * the events from minute 10 on. A counter then grows by what it grew between the scrapes every
 * minute (the events keep happening), a gauge keeps its second value.
 */
function inputSeries(before: Sample[], after: Sample[], types: Map<string, string>, override: (s: Sample) => string | undefined): { series: string; values: string }[] {
  const was = new Map(before.map((s) => [seriesKey(s), s.value]));
  return after
    .filter((s) => s.name.startsWith('sendas_') && Number.isFinite(s.value))
    .map((s) => {
      const key = seriesKey({ name: s.name, labels: { ...s.labels, ...TARGET } });
      const v1 = was.get(seriesKey(s)) ?? 0;
      const counter = types.get(s.name.replace(/_(bucket|sum|count)$/, '')) === 'counter' || types.get(s.name.replace(/_(bucket|sum|count)$/, '')) === 'histogram';
      const values = override(s) ?? (counter ? `${v1}x9 ${s.value}+${s.value - v1}x50` : `${v1}x9 ${s.value}x50`);
      return { series: key, values };
    });
}

function metricTypes(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** The rules' annotations with {{ $labels.x }} filled in: the only template the rules use. */
function annotationsFor(alertname: string, labels: Record<string, string>): Record<string, string> {
  const rules = (parseYaml(readFileSync(RULES, 'utf8')) as { groups: { rules: { alert: string; annotations: Record<string, string> }[] }[] }).groups.flatMap((g) => g.rules);
  const rule = rules.find((r) => r.alert === alertname)!;
  return Object.fromEntries(Object.entries(rule.annotations).map(([k, v]) => [k, v.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, name: string) => labels[name] ?? '')]));
}

describe('deploy/: alert rules and dashboard against the relay\'s real /metrics', () => {
  let alternate: TestUpstream;
  let relay: RunningRelay;
  let fresh: string;
  let after: string;

  beforeAll(async () => {
    const primaryPort = await freePort(); // nobody listens: the relay fails over
    alternate = await startTestUpstream({
      accounts: ACCOUNTS,
      requireSenderMatchesLogin: true,
      refuseRecipients: { 'nobody@example.net': { code: 550, message: '5.1.1 No such user' } },
      onData: (m) => (m.raw.toString().includes('Subject: defer') ? { code: 451, message: '4.3.0 try again later' } : undefined),
    });
    relay = await startRelay(
      relayYaml(primaryPort, 'queue:\n  retry: [1h]\nlimits: {auth: {failures_per_address: 3, window: 1m, lockout: 1m, delay: 10ms, max_delay: 20ms}}\n', `    alternate: {host: 127.0.0.1, port: ${alternate.port}, cooldown: 1h}\n    daily: {messages: 5}\n`, 'queue'),
      { ops: true },
    );
    fresh = (await relay.ops('/metrics')).text;

    const send = (subject: string, to = 'customer@example.net') =>
      swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to, data: message({ From: 'support@acme.example', Subject: subject }) });
    // support's account: 4 of its 5 messages a day (the failure notice goes with the server's own account)
    for (const [subject, to] of [['one', undefined], ['nobody', 'nobody@example.net'], ['defer', undefined], ['two', undefined], ['three', undefined]] as const) {
      expect((await send(subject, to)).finalCode).toBe(250);
    }
    await relay.waitForLog((l) => l.result === 'failed');
    await relay.waitForLog((l) => l.result === 'deferred' && l.kind !== 'network');
    await relay.waitForLog((l) => l.result === 'delivered', { after: 0 });
    const delivered = async () => relay.logs.filter((l) => l.result === 'delivered').length;
    for (const deadline = Date.now() + 10_000; (await delivered()) < 3 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 3; i++) {
      await swaks({ server: '127.0.0.1', port: relay.port, auth: { user: 'crm', password: 'wrong-password' }, from: 'crm@crm.local', to: 'customer@example.net', data: message({ Subject: 'x' }) });
    }
    writeFileSync(relay.configFile, 'servers: [unclosed\n');
    relay.reload();
    await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reload failed'));
    after = (await relay.ops('/metrics')).text;
  }, 60_000);
  afterAll(async () => {
    await relay?.stop();
    await alternate?.close();
  });

  it('promtool check rules accepts the file', async () => {
    const { stdout } = await run('promtool', ['check', 'rules', RULES]);
    expect(stdout).toMatch(/SUCCESS: 10 rules found/);
  });
  it('promtool test rules: quiet on a fresh relay; each alert fires, with its labels and annotations, on what the relay really reports', async () => {
    const types = metricTypes(after);
    const samples = parseScrape(after);
    const oldest = samples.find((s) => s.name === 'sendas_queue_oldest_age_seconds')!;
    // the deferred message waits in the queue; its age then grows a minute a minute (no test waits 30 minutes)
    expect(samples.find((s) => s.name === 'sendas_queue_depth')!.value).toBe(1);
    const input = [
      ...inputSeries(parseScrape(fresh), samples, types, (s) => (s === oldest ? `0x9 ${s.value}+60x50` : undefined)),
      // Prometheus' own series for the scrape: the relay stops answering at minute 10
      { series: `up{job="${TARGET.job}",instance="${TARGET.instance}"}`, values: '1x9 0x50' },
      // a replica's Redis (cluster:) stops answering at minute 10; this relay has no cluster (test/unit/cluster-status.test.ts scrapes the real series)
      { series: `sendas_cluster_redis_up{job="${TARGET.job}",instance="${TARGET.instance}"}`, values: '1x9 0x50' },
    ];
    const route = samples.find((s) => s.name === 'sendas_server_route' && s.labels.role === 'alternate')!;
    expect(route.value).toBe(1);
    const at = { ...TARGET };
    const expected: Record<string, Record<string, string>[]> = {
      SendasDown: [{ severity: 'critical', ...at }],
      SendasQueueOldestMessageOld: [{ severity: 'warning', ...at }],
      SendasDeliveriesDeferred: [{ severity: 'warning', ...at, server: 'main', reason: 'refused' }],
      SendasDeliveryFailed: [{ severity: 'warning', ...at, server: 'main', reason: 'recipient' }],
      SendasAuthFailuresSpike: [{ severity: 'warning', ...at }],
      SendasAuthLockout: [{ severity: 'info', ...at, scope: 'address' }],
      SendasServerOnAlternate: [{ severity: 'warning', ...at, server: 'main', host: route.labels.host!, role: 'alternate' }],
      SendasAccountBudgetNearLimit: [{ severity: 'warning', ...at, account: 'main/support@acme.example', budget: 'messages' }],
      SendasConfigReloadFailing: [{ severity: 'warning', ...at }],
      SendasClusterRedisDown: [{ severity: 'warning', ...at }],
    };
    const test = {
      rule_files: [RULES],
      evaluation_interval: '1m',
      tests: [
        {
          interval: '1m',
          input_series: input,
          alert_rule_test: Object.entries(expected).flatMap(([alertname, alerts]) => [
            { eval_time: '9m', alertname, exp_alerts: [] },
            { eval_time: '50m', alertname, exp_alerts: alerts.map((labels) => ({ exp_labels: labels, exp_annotations: annotationsFor(alertname, { ...labels, alertname }) })) },
          ]),
        },
      ],
    };
    const dir = mkdtempSync(join(tmpdir(), 'sendas-promtool-'));
    const file = join(dir, 'alerts.test.yml');
    writeFileSync(file, JSON.stringify(test, null, 1));
    const result = await run('promtool', ['test', 'rules', file]).catch((err: { stdout: string; stderr: string }) => err);
    expect(`${result.stdout}${result.stderr}`).toMatch(/SUCCESS/);
    // every rule is exercised
    const rules = (parseYaml(readFileSync(RULES, 'utf8')) as { groups: { rules: { alert: string }[] }[] }).groups.flatMap((g) => g.rules.map((r) => r.alert));
    expect(Object.keys(expected).sort()).toEqual(rules.sort());
  });

  it('the dashboard is importable and every metric it queries is in the real /metrics', async () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { schemaVersion: number; uid: string; panels: { type: string; title: string; targets?: { expr: string }[] }[] };
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.uid).toBe('sendas');
    const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
    expect(exprs.length).toBeGreaterThan(15);
    const real = new Set(parseScrape(after).map((s) => s.name));
    const used = new Set(exprs.flatMap((e) => e.match(/\bsendas_[a-z0-9_]+/g) ?? []));
    expect([...used].filter((name) => !real.has(name))).toEqual([]);
    for (const name of ['sendas_queue_depth', 'sendas_queue_oldest_age_seconds', 'sendas_messages_failed_total', 'sendas_delivery_latency_seconds_bucket', 'sendas_auth_lockouts_total', 'sendas_server_route', 'sendas_account_budget_limit', 'sendas_config_reloads_total']) {
      expect(used).toContain(name);
    }
    // the PromQL itself parses: promtool checks each expression as a recording rule (Grafana's variables filled in)
    const asRules = { groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `dashboard:expr_${i}`, expr: expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*') })) }] };
    const file = join(mkdtempSync(join(tmpdir(), 'sendas-dashboard-')), 'exprs.yml');
    writeFileSync(file, JSON.stringify(asRules));
    const { stdout } = await run('promtool', ['check', 'rules', file]);
    expect(stdout).toContain(`SUCCESS: ${exprs.length} rules found`);
  });
});
