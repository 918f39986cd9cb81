import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS } from './harness.js';

/** The budget is kept in state_dir: a relay killed and started again still knows what it has sent. */
describe('account budgets across a restart (real process)', () => {
  const procs: RelayProcess[] = [];
  let upstream: TestUpstream | undefined;
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop('SIGKILL');
    await upstream?.close();
    upstream = undefined;
  });

  it('a budget reached before kill -9 is still reached after the restart: new mail waits with reason quota, the stand-in never refuses', async () => {
    // the stand-in has the same budget: had sendas forgotten its count, it would answer 554 5.2.0
    upstream = await startTestUpstream({ accounts: ACCOUNTS, recipientsPerLogin: 3 });
    const dir = mkdtempSync(join(tmpdir(), 'sendas-budget-'));
    const file = join(dir, 'relay.yaml');
    writeFileSync(
      file,
      `http:
  host: 127.0.0.1
  port: 0
listen:
  port: 0
servers:
  - name: m365
    preset: office365
    host: 127.0.0.1
    port: ${upstream.port}
    security: none
    auth: login
    username: relay@acme.example
    password: server-secret-1
    daily: {recipients: 3}
channels:
  - name: sales
    address: sales@acme.example
`,
    );
    const send = async (port: number, subject: string) => {
      const client = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true });
      await client.sendMail({ from: 'sales@acme.example', to: 'customer@example.net', subject, text: 'x\n' });
      client.close();
    };

    const first = await startRelayProcess(file);
    procs.push(first);
    for (const s of ['one', 'two', 'three']) await send(first.port, s);
    while (upstream.messages.length < 3) await upstream.nextMessage(10_000).then(() => undefined);
    await send(first.port, 'four');
    await first.waitForLog((l) => l.result === 'quota');
    first.child.kill('SIGKILL');
    await first.stop('SIGKILL');
    procs.splice(procs.indexOf(first), 1);

    const second = await startRelayProcess(file);
    procs.push(second);
    await send(second.port, 'five');
    const wait = await second.waitForLog((l) => l.result === 'quota');
    expect(wait.reason).toMatch(/^account relay@acme\.example \(server m365\) has used its 3 recipients per 24 h \(3 counted\)/);
    expect(upstream.messages).toHaveLength(3);
    expect(upstream.limitRefusals).toEqual([]);

    // /status and /metrics of the restarted relay show the use it read back from state_dir
    const monitoring = await second.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('monitoring on'));
    const base = `http://127.0.0.1:${String(monitoring.port)}`;
    const status = (await (await fetch(`${base}/status`)).json()) as { accounts: { account: string; budgets: unknown[]; connections: unknown }[] };
    expect(status.accounts).toEqual([
      expect.objectContaining({ account: 'm365/relay@acme.example', budgets: [{ budget: 'recipients', used: 3, limit: 3, window: '24h' }], connections: { inUse: 0, limit: 3 } }),
    ]);
    expect(await (await fetch(`${base}/metrics`)).text()).toContain('sendas_account_budget_used{account="m365/relay@acme.example",budget="recipients"} 3');

    const list = await new Promise<string>((resolve, reject) => execFile(process.execPath, [CLI, 'queue', 'list', '--config', file], (err, stdout) => (err ? reject(err) : resolve(stdout))));
    expect(list.match(/451 4\.7\.0 quota: account relay@acme\.example/g)).toHaveLength(2);
  }, 60_000);
});
