import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGraphServer, type GraphServer } from '../support/graph-server.js';
import { startOAuthServer, type OAuthServer } from '../support/oauth-server.js';
import { startRelayProcess, type RelayProcess } from '../support/relay-process.js';
import { swaks } from '../support/swaks.js';
import { messageWithAttachments, randomish, sha256 } from '../support/graph-messages.js';

const MiB = 1024 * 1024;

/** The relay as ops run it, sending a large message through Graph: memory must not follow the message's size. */
describe('sendas serve: a 10 MB message through Microsoft Graph (real process)', () => {
  let oauth: OAuthServer;
  let graph: GraphServer;
  let relay: RelayProcess;
  let dir: string;

  beforeAll(async () => {
    oauth = await startOAuthServer({ clients: [{ clientId: 'sendas-app', clientSecret: 'app-secret-11' }] });
    graph = await startGraphServer({ validateToken: (t) => ({ ok: Boolean(oauth.validate(t)), appOnly: oauth.validate(t)?.user === null }), maxRequestBytes: 4 * MiB });
    dir = mkdtempSync(join(tmpdir(), 'sendas-graph-proc-'));
    writeFileSync(
      join(dir, 'relay.yaml'),
      `http: false
state_dir: ./state
listen:
  host: 127.0.0.1
  port: 0
  max_message_size: 60MB
queue:
  dir: ./queue
  retry: [200ms]
servers:
  - name: graph
    type: graph
    graph_url: ${graph.url}
    username: relay@contoso.example
    oauth:
      client_id: sendas-app
      client_secret: {env: GRAPH_SECRET}
      grant: client_credentials
      token_url: ${oauth.tokenUrl}
      scope: https://graph.microsoft.com/.default
channels:
  - name: support
    address: support@contoso.example
    override: {}
`,
    );
    relay = await startRelayProcess(join(dir, 'relay.yaml'), { GRAPH_SECRET: 'app-secret-11' });
  });

  afterAll(async () => {
    await relay?.stop();
    await graph?.close();
    await oauth?.close();
  });

  const send = async (raw: Buffer, name: string) => {
    const file = join(dir, name);
    writeFileSync(file, raw);
    const r = await swaks({ server: '127.0.0.1', port: relay.port, from: 'support@contoso.example', to: 'customer@example.net', dataFile: file, timeoutMs: 60_000 });
    expect(r.finalCode).toBe(250);
    return graph.nextMessage(60_000);
  };

  it("arrives through an upload session while the relay's peak RSS grows by less than the message", async () => {
    // a first large message loads and warms what the draft path uses (fetch, the MIME parser, the
    // heap's first growth: some 60 MiB here), so the measurement below sees what one more message
    // costs. Checked the other way round: a relay holding the message whole grows by some 50 MiB.
    const warm = randomish(4 * MiB, 2);
    const first = await send(await messageWithAttachments('support@contoso.example', [{ filename: 'warm-up.bin', content: warm }]), 'warm.eml');
    expect(first.attachments.map((a) => a.sha256)).toEqual([sha256(warm)]);

    const pdf = randomish(10 * MiB, 7);
    const raw = await messageWithAttachments('support@contoso.example', [{ filename: 'contract.pdf', content: pdf }]);
    const before = relay.peakRss();
    const got = await send(raw, 'big.eml');
    const grown = relay.peakRss() - before;

    expect(got.via).toBe('draft');
    expect(got.attachments).toEqual([expect.objectContaining({ name: 'contract.pdf', via: 'upload', sha256: sha256(pdf) })]);
    expect(got.attachments[0]!.ranges).toHaveLength(3);
    // holding the message (13.5 MB as base64 MIME) or even the 10 MiB attachment would add at least that
    expect(raw.length).toBeGreaterThan(13 * 1024 * 1024);
    expect(grown).toBeLessThan(pdf.length);
  }, 120_000);
});
