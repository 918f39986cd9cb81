import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { afterEach, describe, expect, it } from 'vitest';
import { startGraphServer, type GraphServer, type GraphServerOptions } from '../support/graph-server.js';
import { startOAuthServer, type OAuthServer } from '../support/oauth-server.js';
import { messageWithAttachments, randomish, sha256 } from '../support/graph-messages.js';
import { swaks } from '../support/swaks.js';
import { headerValues, message, split, startRelay, type RunningRelay } from './harness.js';

const CLIENT = { clientId: 'sendas-app', clientSecret: 'app-secret-11' };
const MiB = 1024 * 1024;

function graphRelayYaml(o: OAuthServer, g: GraphServer, opts: { delivery?: string; server?: string; channels?: string } = {}): string {
  return `
delivery: ${opts.delivery ?? 'passthrough'}
state_dir: ./state
listen:
  max_message_size: 60MB
queue:
  retry: [200ms]
servers:
  - name: graph
    type: graph
    graph_url: ${g.url}
    username: relay@contoso.example
    oauth:
      client_id: ${CLIENT.clientId}
      client_secret: ${CLIENT.clientSecret}
      grant: client_credentials
      token_url: ${o.tokenUrl}
      scope: https://graph.microsoft.com/.default
${opts.server ?? ''}
channels:
  - name: support
    address: support@contoso.example
    override: {}
${opts.channels ?? ''}`;
}

/** Large messages, Sent Items and shared mailboxes through a local Graph (type: graph). */
describe('Microsoft Graph: drafts, upload sessions, Sent Items, shared mailboxes', () => {
  const closers: { close(): Promise<void> }[] = [];
  const relays: RunningRelay[] = [];
  afterEach(async () => {
    for (const r of relays.splice(0)) {
      const log = r.rawLog();
      await r.stop();
      expect(log).not.toContain(CLIENT.clientSecret);
    }
    for (const c of closers.splice(0).reverse()) await c.close();
  });

  const setup = async (graphOpts: Partial<GraphServerOptions> = {}, yamlOpts: Parameters<typeof graphRelayYaml>[2] = {}) => {
    const o = await startOAuthServer({ clients: [CLIENT] });
    closers.push(o);
    // Graph's own request limit: 4 MB, so nothing too large can slip through in one request
    const g = await startGraphServer({ validateToken: (t) => ({ ok: Boolean(o.validate(t)), appOnly: o.validate(t)?.user === null }), maxRequestBytes: 4 * MiB, ...graphOpts });
    closers.push(g);
    const r = await startRelay(graphRelayYaml(o, g, yamlOpts));
    relays.push(r);
    return { o, g, r };
  };
  const sendFile = (r: RunningRelay, raw: Buffer, from = 'support@contoso.example') => {
    const file = join(mkdtempSync(join(tmpdir(), 'sendas-graph-msg-')), 'message.eml');
    writeFileSync(file, raw);
    return swaks({ server: '127.0.0.1', port: r.port, from, to: 'customer@example.net', dataFile: file, timeoutMs: 60_000 });
  };

  it('queue: a 10 MB attachment goes through an upload session in 3.75 MiB chunks; the draft keeps the headers and the text', async () => {
    const { g, r } = await setup({}, { delivery: 'queue' });
    const pdf = randomish(10 * MiB, 7);
    const terms = randomish(200_000, 3);
    const raw = await messageWithAttachments('support@contoso.example', [
      { filename: 'contract.pdf', content: pdf },
      { filename: 'terms.pdf', content: terms },
    ]);
    expect((await sendFile(r, raw)).finalCode).toBe(250);
    const got = await g.nextMessage(30_000);
    expect(got).toMatchObject({ mailbox: 'support@contoso.example', via: 'draft', savedToSentItems: true, appOnly: true });
    expect(g.requests.map((q) => q.step)).toEqual(['draft', 'createUploadSession', 'upload', 'upload', 'upload', 'send']);
    const [contract] = got.attachments;
    expect(contract).toMatchObject({ name: 'contract.pdf', contentType: 'application/pdf', via: 'upload', sha256: sha256(pdf) });
    expect(contract!.ranges.map((x) => `${x.start}-${x.end}/${x.total}`)).toEqual(['0-3932159/10485760', '3932160-7864319/10485760', '7864320-10485759/10485760']);
    // the draft is the message without the big file: what the relay set survives as MIME
    const draft = await simpleParser(got.mime);
    expect(draft.from?.value[0]?.address).toBe('support@contoso.example');
    expect(draft.messageId).toBe('<ticket-4711@crm.contoso.example>');
    expect(draft.replyTo?.value[0]?.address).toBe('tickets@contoso.example');
    expect(draft.headers.get('x-ticket-id')).toBe('4711');
    expect(draft.text?.trim()).toBe('Please find your documents attached.');
    expect(draft.attachments.map((a) => [a.filename, sha256(a.content)])).toEqual([['terms.pdf', sha256(terms)]]);
    expect(got.mime.length).toBeLessThan(3 * MiB);
    await r.waitForLog((l) => l.msg === 'removed from the queue: every recipient has the message');
    expect(g.openDrafts()).toBe(0);
  }, 60_000);

  it('passthrough: a large message is spooled under state_dir, sent the same way, and the spool removed', async () => {
    const { g, r } = await setup();
    const files = [randomish(4 * MiB, 5), randomish(1_500_000, 9), randomish(1_200_000, 11)];
    const raw = await messageWithAttachments('support@contoso.example', [
      { filename: 'scan.tif', content: files[0]! },
      { filename: 'a.pdf', content: files[1]! },
      { filename: 'b.pdf', content: files[2]! },
    ]);
    const sent = await sendFile(r, raw);
    expect(sent.finalCode).toBe(250);
    const got = await g.nextMessage();
    // the draft keeps what fits in one request; the largest go on their own: a session for 3 MB and up, a POST below
    const byName = new Map(got.attachments.map((a) => [a.name, a]));
    expect(byName.get('scan.tif')).toMatchObject({ via: 'upload', sha256: sha256(files[0]!) });
    expect(byName.get('a.pdf')).toMatchObject({ via: 'post', sha256: sha256(files[1]!) });
    const draft = await simpleParser(got.mime);
    expect([...draft.attachments.map((a) => sha256(a.content)), ...got.attachments.map((a) => a.sha256)].sort()).toEqual(files.map(sha256).sort());
    expect(readdirSync(join(r.dir, 'state', 'graph-spool'))).toEqual([]);
  }, 60_000);

  it('save_to_sent_items: false sends even a small message as a draft marked to be deleted once sent', async () => {
    const { g, r } = await setup({}, { server: '    save_to_sent_items: false\n' });
    const sent = await swaks({ server: '127.0.0.1', port: r.port, from: 'support@contoso.example', to: 'customer@example.net', data: message({ From: 'support@contoso.example', To: 'customer@example.net', Subject: 'no copy' }) });
    expect(sent.finalCode).toBe(250);
    const got = await g.nextMessage();
    expect(got).toMatchObject({ via: 'draft', savedToSentItems: false });
    expect(headerValues(split(got.mime).head, 'Subject')).toEqual(['no copy']);
    expect(g.requests.map((q) => q.step)).toEqual(['draft', 'patch', 'send']);
  });

  it('Retry-After is honoured on the draft path too: the throttled step is sent again', async () => {
    const { g, r } = await setup({ throttleNext: 1 }, { server: '    save_to_sent_items: false\n' });
    const sent = await swaks({ server: '127.0.0.1', port: r.port, from: 'support@contoso.example', to: 'customer@example.net', data: message({ From: 'support@contoso.example', To: 'customer@example.net', Subject: 'throttled' }) });
    expect(sent.finalCode).toBe(250);
    expect(g.requests.map((q) => `${q.step} ${q.status}`)).toEqual(['draft 429', 'draft 201', 'patch 200', 'send 202']);
    expect(g.openDrafts()).toBe(0);
  });

  it('the default keeps a copy in Sent Items: a small message is one sendMail', async () => {
    const { g, r } = await setup();
    const sent = await swaks({ server: '127.0.0.1', port: r.port, from: 'support@contoso.example', to: 'customer@example.net', data: message({ From: 'support@contoso.example', To: 'customer@example.net', Subject: 'copy' }) });
    expect(sent.finalCode).toBe(250);
    expect(await g.nextMessage()).toMatchObject({ via: 'sendMail', savedToSentItems: true });
    expect(g.requests.map((q) => q.step)).toEqual(['sendMail']);
  });

  it('a step that fails deletes the draft and is classified: Exchange refusing the size is a 552', async () => {
    const { g, r } = await setup({
      failOn: ({ step }) => (step === 'createUploadSession' ? { status: 400, code: 'ErrorMessageSizeExceeded', message: 'The message exceeds the maximum supported size.' } : undefined),
    });
    const raw = await messageWithAttachments('support@contoso.example', [{ filename: 'big.zip', content: randomish(5 * MiB) }]);
    const sent = await sendFile(r, raw);
    expect(sent.finalCode).toBe(552);
    expect(sent.finalReply).toMatch(/^552 5\.3\.4 Microsoft Graph \(graph, .*\) for mailbox support@contoso\.example, creating the upload session for big\.zip, refused the message as larger than the mailbox may send: 400 ErrorMessageSizeExceeded/);
    expect(g.requests.map((q) => `${q.step} ${q.status}`)).toEqual(['draft 201', 'createUploadSession 400', 'delete 204']);
    expect(g.deletedDrafts).toHaveLength(1);
    expect(g.openDrafts()).toBe(0);
    expect(g.messages).toHaveLength(0);
  }, 60_000);

  it('a 403 on the draft path names the missing Mail.ReadWrite', async () => {
    const { g, r } = await setup({ failOn: ({ step }) => (step === 'draft' ? { status: 403, code: 'ErrorAccessDenied', message: 'Access is denied. Check credentials and try again.' } : undefined) }, { server: '    save_to_sent_items: false\n' });
    const sent = await swaks({ server: '127.0.0.1', port: r.port, from: 'support@contoso.example', to: 'customer@example.net', data: message({ From: 'support@contoso.example', To: 'customer@example.net', Subject: 'x' }) });
    expect(sent.finalCode).toBe(550);
    expect(sent.finalReply).toMatch(/^550 5\.7\.1 Microsoft Graph \(graph, .*\) for mailbox support@contoso\.example, creating the draft, refused: 403 ErrorAccessDenied: .*needs the app's Mail\.ReadWrite permission besides Mail\.Send/);
    expect(g.messages).toHaveLength(0);
  });

  it('shared mailbox Send As: the app sends as the shared mailbox itself (/users/{shared}), whoever the override names', async () => {
    // the app's access policy covers the shared mailbox, not the agent who works it
    const { g, r } = await setup(
      { mailboxes: ['helpdesk@contoso.example', 'support@contoso.example'] },
      { channels: '  - name: helpdesk\n    address: helpdesk@contoso.example\n    display_name: Contoso Helpdesk\n    override: {username: alice@contoso.example}\n' },
    );
    const sent = await swaks({ server: '127.0.0.1', port: r.port, from: 'helpdesk@contoso.example', to: 'customer@example.net', data: message({ From: 'helpdesk@contoso.example', To: 'customer@example.net', Subject: 'shared' }) });
    expect(sent.finalCode).toBe(250);
    const got = await g.nextMessage();
    expect(got.mailbox).toBe('helpdesk@contoso.example');
    expect(headerValues(split(got.mime).head, 'From')).toEqual(['Contoso Helpdesk <helpdesk@contoso.example>']);
    expect(g.requests).toEqual([expect.objectContaining({ step: 'sendMail', status: 202, mailbox: 'helpdesk@contoso.example' })]);
  });
});
