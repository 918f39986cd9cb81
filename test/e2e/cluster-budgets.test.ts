import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '../support/redis-server.js';
import { swaks } from '../support/swaks.js';
import { startTestUpstream, type TestUpstream } from '../support/upstream.js';
import { ACCOUNTS, message, relayYaml, startRelay, type RunningRelay } from './harness.js';

/** Two real relays (passthrough) in front of one upstream, sharing one account's daily budget through a real redis-server. */
let redis: TestRedis;
let upstream: TestUpstream;
const relays: RunningRelay[] = [];

beforeAll(async () => {
  redis = await startRedis();
  upstream = await startTestUpstream({ accounts: ACCOUNTS });
  for (const node of ['east', 'west']) {
    const cluster = `cluster:\n  redis: {url: "${redis.url}", key_prefix: "e2e${process.pid}"}\n  node_id: ${node}\n`;
    relays.push(await startRelay(relayYaml(upstream.port, cluster, '    daily: {recipients: 3}')));
  }
});
afterAll(async () => {
  for (const r of relays) await r.stop();
  await upstream?.close();
  await redis?.stop();
});

const send = (relay: RunningRelay, n: number) => swaks({ server: '127.0.0.1', port: relay.port, from: 'crm@crm.local', to: ['customer@example.net'], data: message({ From: 'support@acme.example', To: 'customer@example.net', Subject: `ticket ${n}` }) });

describe('two relays share an account’s daily budget through Redis', () => {
  it('three recipients a day between them: the fourth message is refused 451 4.7.0 by whichever relay gets it', async () => {
    const results = [];
    for (let n = 0; n < 4; n++) results.push(await send(relays[n % 2]!, n));
    expect(results.slice(0, 3).map((r) => r.exitCode)).toEqual([0, 0, 0]);
    expect(results[3]!.finalReply).toMatch(/^451 4\.7\.0 .*has used its 3 recipients per 24 h \(3 counted\)/);
    expect(upstream.messages.filter((m) => m.login === 'support@acme.example')).toHaveLength(3);
    const status = JSON.parse(JSON.stringify(relays[0]!.relay.status())) as { accounts?: { account: string; budgets: { used: number }[] }[] };
    expect(status.accounts?.find((a) => a.account.includes('support@acme.example'))?.budgets[0]?.used).toBe(3);
  });
});
