import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_KINDS } from '../../src/errors/kinds.js';
import { swaks } from '../support/swaks.js';
import { freePort, startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, message, relayYaml, startRelay, type RunningRelay } from './harness.js';

const DELIVERY_REASONS = ERROR_KINDS.filter((k) => k !== 'access' && k !== 'client');

/** An alert on a counter can be written before the event it counts: every series is there, at 0, from the start. */
describe('/metrics of a freshly started relay', () => {
  let relay: RunningRelay;
  let upstream: TestUpstream;
  let upstreamPort: number;
  const series = async () => new Set((await relay.ops('/metrics')).text.split('\n').filter((l) => l.startsWith('sendas_')));

  beforeAll(async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, requireSenderMatchesLogin: true });
    upstreamPort = upstream.port;
    relay = await startRelay(relayYaml(upstreamPort, '', '    daily: {messages: 500}\n', 'queue'), { ops: true });
  });
  afterAll(async () => {
    await relay.stop();
    await upstream.close();
  });

  it('has a zero series for every server × delivery reason × outcome, and for received, relayed and latency', async () => {
    const s = await series();
    for (const reason of DELIVERY_REASONS) {
      for (const outcome of ['deferred', 'failed']) expect(s).toContain(`sendas_messages_failed_total{reason="${reason}",server="main",outcome="${outcome}"} 0`);
    }
    expect(s).not.toContain('sendas_messages_failed_total{reason="access",server="main",outcome="failed"} 0');
    expect(s).toContain('sendas_messages_received_total{server="main"} 0');
    expect(s).toContain('sendas_messages_relayed_total{server="main"} 0');
    expect(s).toContain('sendas_delivery_latency_seconds_count{server="main"} 0');
    expect(s).toContain('sendas_delivery_latency_seconds_bucket{le="+Inf",server="main"} 0');
  });

  it('has the SMTP-time refusals (also for "none": no identity found), auth, limits and reloads at 0', async () => {
    const s = await series();
    for (const server of ['main', 'none']) {
      for (const reason of ['access', 'policy', 'message']) expect(s).toContain(`sendas_messages_refused_total{reason="${reason}",server="${server}"} 0`);
    }
    expect(s).toContain('sendas_auth_failures_total 0');
    expect(s).toContain('sendas_auth_lockouts_total{scope="address"} 0');
    expect(s).toContain('sendas_auth_lockouts_total{scope="login"} 0');
    expect(s).toContain('sendas_client_limits_total{limit="connections_per_address"} 0');
    expect(s).toContain('sendas_config_reloads_total{result="ok"} 0');
    expect(s).toContain('sendas_config_reloads_total{result="failed"} 0');
  });

  it("has every account's budget (used 0, its limit) and each server's route", async () => {
    const s = await series();
    // the server account and each identity's own account (override) share the server's budget setting
    for (const account of ['main/relay@acme.example', 'main/support@acme.example', 'main/alice@acme.example']) {
      expect([...s].some((l) => l.startsWith('sendas_account_budget_limit{') && l.includes(`account="${account}"`) && l.includes('budget="messages"') && l.endsWith(' 500'))).toBe(true);
      expect([...s].some((l) => l.startsWith('sendas_account_budget_used{') && l.includes(`account="${account}"`) && l.includes('budget="messages"') && l.endsWith(' 0'))).toBe(true);
    }
    expect(s).toContain(`sendas_server_route{server="main",host="127.0.0.1:${upstreamPort}",role="primary"} 1`);
  });

  it('seeds a server added by a reload, and keeps what the others counted', async () => {
    const sent = await swaks({ server: '127.0.0.1', port: relay.port, from: 'support@acme.example', to: 'customer@example.net', data: message({ From: 'support@acme.example', Subject: 'counted' }) });
    expect(sent.finalCode).toBe(250);
    await relay.waitForLog((l) => l.result === 'delivered');
    expect(await series()).toContain('sendas_delivery_latency_seconds_count{server="main"} 1');
    const backupPort = await freePort();
    const yaml = relayYaml(upstreamPort, '', '    daily: {messages: 500}\n', 'queue').replace(
      'channels:',
      `  - name: backup\n    host: 127.0.0.1\n    port: ${backupPort}\n    security: none\n    username: backup@acme.example\n    password: backup-secret\nchannels:`,
    );
    writeFileSync(relay.configFile, yaml);
    relay.reload();
    await relay.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('configuration reloaded'));
    const s = await series();
    expect(s).toContain('sendas_messages_failed_total{reason="network",server="backup",outcome="deferred"} 0');
    expect(s).toContain('sendas_messages_received_total{server="backup"} 0');
    expect(s).toContain('sendas_config_reloads_total{result="ok"} 1');
    expect(s).toContain('sendas_delivery_latency_seconds_count{server="main"} 1');
    expect(s).toContain('sendas_messages_relayed_total{server="main"} 1');
  });
});
