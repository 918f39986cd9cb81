import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, headerValues, split, startRelay, type RunningRelay } from './harness.js';

/**
 * Microsoft 365 as it behaves, played by the test upstream: 3 transactions at once per login
 * (then 432 4.3.2 STOREDRV.ClientSubmit), a recipients budget per login (then 554 5.2.0
 * SubmissionQuotaExceededException). 20 clients at once, 2 messages each.
 */
const CLIENTS = 20;
const PER_CLIENT = 2;
const BUDGET = 25;

function yaml(port: number, limits: string): string {
  return `
delivery: queue
queue:
  retry: [1h]
servers:
  - name: m365
    preset: office365
    host: 127.0.0.1
    port: ${port}
    security: none
    auth: login
    username: relay@acme.example
    password: server-secret-1
${limits}
channels:
  - name: sales
    address: sales@acme.example
`;
}

async function burst(relay: RunningRelay): Promise<string[]> {
  const subjects: string[] = [];
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      const client = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, ignoreTLS: true });
      for (let i = 0; i < PER_CLIENT; i++) {
        const subject = `client-${c}-${i}`;
        await client.sendMail({ from: 'sales@acme.example', to: `customer${c}@example.net`, subject, text: 'ticket update\n' });
        subjects.push(subject);
      }
      client.close();
    }),
  );
  return subjects;
}

const subjectOf = (raw: Buffer) => headerValues(split(raw).head, 'Subject')[0]!;

async function until(what: string, check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The last thing the log says about each message: delivered, or waiting for the quota. */
function lastWord(relay: RunningRelay): Map<string, string> {
  const byId = new Map<string, string>();
  // a message the provider refused for its quota is deferred with kind quota; one sendas holds back logs result quota
  for (const l of relay.logs) if (typeof l.id === 'string' && typeof l.result === 'string') byId.set(l.id, l.result === 'quota' || l.kind === 'quota' ? 'quota' : String(l.result));
  return byId;
}

describe('provider limits against a Microsoft 365 stand-in (20 concurrent clients)', () => {
  let upstream: TestUpstream | undefined;
  let relay: RunningRelay | undefined;
  afterEach(async () => {
    await relay?.stop();
    await upstream?.close();
    relay = upstream = undefined;
  });

  it('with the preset limits (connections 3, daily recipients = the budget) the stand-in never refuses: everything is delivered or waits with reason quota', async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, maxConcurrentPerLogin: 3, recipientsPerLogin: BUDGET });
    relay = await startRelay(yaml(upstream.port, `    daily: {recipients: ${BUDGET}}`));
    const subjects = await burst(relay);
    expect(subjects).toHaveLength(CLIENTS * PER_CLIENT);

    await until('the budget is used and the rest waits', () => {
      const words = [...lastWord(relay!).values()];
      return upstream!.messages.length === BUDGET && words.filter((w) => w.startsWith('quota')).length === CLIENTS * PER_CLIENT - BUDGET;
    });
    expect(upstream.limitRefusals).toEqual([]);
    expect(upstream.peakConcurrent.get('relay@acme.example')).toBeLessThanOrEqual(3);
    const words = lastWord(relay);
    expect([...words.values()].sort()).toEqual([...Array(BUDGET).fill('delivered'), ...Array(CLIENTS * PER_CLIENT - BUDGET).fill('quota')].sort());
    expect(relay.logs.some((l) => l.result === 'failed')).toBe(false);
    // the wait names the budget and when it frees
    const wait = relay.logs.find((l) => l.result === 'quota')!;
    expect(wait).toMatchObject({ code: 451, enhanced: '4.7.0', kind: 'quota' });
    expect(wait.reason).toMatch(/^account relay@acme\.example \(server m365\) has used its 25 recipients per 24 h \(25 counted\); try again after (\d{4}-\d\d-\d\d )?\d\d:\d\d UTC$/);
    // the 80% warning, once
    expect(relay.logs.filter((l) => l.budget === 'recipients' && typeof l.msg === 'string' && l.msg.includes('% of its 25 recipients per 24 h'))).toHaveLength(1);
  }, 60_000);

  it('with the limits turned off sendas meets both refusals and recovers from both without failing a message', async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, maxConcurrentPerLogin: 3, recipientsPerLogin: BUDGET });
    relay = await startRelay(yaml(upstream.port, '    connections: 10\n    rate: false\n    daily: false'));
    await burst(relay);

    // 432: the account backs off and the refused messages come again in seconds; 554 5.2.0: the account is held
    await until('the stand-in refused both ways and the budget is used', () => {
      const replies = upstream!.limitRefusals.map((r) => r.reply.code);
      return replies.includes(432) && replies.includes(554) && upstream!.messages.length === BUDGET;
    });
    // each message not delivered waits: for the quota, or (refused with 432 before the hold began) for its backoff retry
    await until('every other message waits, the held ones with reason quota', () => {
      const words = [...lastWord(relay!).values()];
      return words.includes('quota') && words.filter((w) => w === 'quota' || w === 'queued').length === CLIENTS * PER_CLIENT - BUDGET;
    }).catch((err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify([...lastWord(relay!).values()])}`);
    });
    expect(relay.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('account m365/relay@acme.example backs off'))).toBe(true);
    expect(relay.logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('account m365/relay@acme.example is held'))).toBe(true);
    // held: nothing more goes to the stand-in while its window is used up
    const refusedSoFar = upstream.limitRefusals.filter((r) => r.reply.code === 554).length;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(upstream.limitRefusals.filter((r) => r.reply.code === 554).length).toBe(refusedSoFar);

    // the provider's window frees; ops say "retry now"
    upstream.resetRecipientWindow();
    const { execFile } = await import('node:child_process');
    const { CLI } = await import('../support/relay-process.js');
    await new Promise((resolve, reject) => execFile(process.execPath, [CLI, 'queue', 'retry', '--all', '--config', relay!.configFile], (err) => (err ? reject(err) : resolve(undefined))));
    await until('everything arrived', () => new Set(upstream!.messages.map((m) => subjectOf(m.raw))).size === CLIENTS * PER_CLIENT);
    expect(relay.logs.some((l) => l.result === 'failed')).toBe(false);
  }, 60_000);

  it('passthrough: a message over the budget gets 451 4.7.0 naming the budget and when to try again', async () => {
    upstream = await startTestUpstream({ accounts: ACCOUNTS, recipientsPerLogin: 2 });
    relay = await startRelay(yaml(upstream.port, '    daily: {recipients: 2}').replace('delivery: queue', 'delivery: passthrough'));
    const client = nodemailer.createTransport({ host: '127.0.0.1', port: relay.port, ignoreTLS: true });
    await client.sendMail({ from: 'sales@acme.example', to: 'a@example.net', subject: 'p1', text: 'x\n' });
    await client.sendMail({ from: 'sales@acme.example', to: 'b@example.net', subject: 'p2', text: 'x\n' });
    const err = (await client.sendMail({ from: 'sales@acme.example', to: 'c@example.net', subject: 'p3', text: 'x\n' }).catch((e: unknown) => e)) as { responseCode?: number; response?: string };
    client.close();
    expect(err.responseCode).toBe(451);
    expect(err.response).toMatch(/^451 4\.7\.0 account relay@acme\.example \(server m365\) has used its 2 recipients per 24 h \(2 counted\); try again after (\d{4}-\d\d-\d\d )?\d\d:\d\d UTC$/);
    expect(upstream.messages).toHaveLength(2);
    expect(upstream.limitRefusals).toEqual([]);
  }, 30_000);
});
