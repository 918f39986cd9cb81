import nodemailer from 'nodemailer';
import { afterEach, describe, expect, it } from 'vitest';
import { startGraphServer, type GraphServer, type GraphServerOptions, type GraphTokenCheck } from './graph-server.js';
import { startOAuthServer } from './oauth-server.js';

const TOKENS: Record<string, GraphTokenCheck> = {
  'app-token': { ok: true, appOnly: true },
  'alice-token': { ok: true, appOnly: false, user: 'alice@contoso.example' },
};
const validateToken = (t: string): GraphTokenCheck => TOKENS[t] ?? { ok: false, appOnly: false };

const started: GraphServer[] = [];
async function graph(opts: Partial<GraphServerOptions> = {}): Promise<GraphServer> {
  const g = await startGraphServer({ validateToken, ...opts });
  started.push(g);
  return g;
}
afterEach(async () => {
  await Promise.all(started.splice(0).map((g) => g.close()));
});

const MIME = Buffer.from(
  'From: Support <support@contoso.example>\r\nTo: customer@fabrikam.example\r\nSubject: =?UTF-8?Q?h=C3=A9llo?=\r\n' +
    'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nh\u00e9llo\r\n',
  'utf8',
);

async function sendMail(g: GraphServer, mailbox: string | null, token: string | null, body: string | Buffer = MIME.toString('base64'), contentType = 'text/plain') {
  const path = mailbox === null ? '/v1.0/me/sendMail' : `/v1.0/users/${encodeURIComponent(mailbox)}/sendMail`;
  const headers: Record<string, string> = { 'Content-Type': contentType };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(g.url + path, { method: 'POST', headers, body: typeof body === 'string' ? body : new Uint8Array(body), signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, error: text ? ((JSON.parse(text) as { error: { code: string; message: string } }).error) : undefined };
}

describe('startGraphServer', () => {
  it('accepts base64 MIME as text/plain with 202 and an empty body; records and hands out the message', async () => {
    const g = await graph();
    expect(g.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const next = g.nextMessage(5_000);
    // base64 with line breaks, as many encoders produce it
    const r = await sendMail(g, 'support@contoso.example', 'app-token', MIME.toString('base64').replace(/.{76}/g, '$&\r\n'));
    expect(r.status).toBe(202);
    expect(r.text).toBe('');
    expect(r.headers.get('request-id')).toBeTruthy();
    const msg = await next;
    expect(msg).toMatchObject({ mailbox: 'support@contoso.example', token: 'app-token', appOnly: true });
    expect(msg.mime.equals(MIME)).toBe(true);
    expect(g.requests).toEqual([{ step: 'sendMail', status: 202, mailbox: 'support@contoso.example', at: expect.any(Number) }]);
    await expect(g.nextMessage(100)).rejects.toThrow(/no message within 100 ms/);
  });

  it('a MIME message built by nodemailer (stream transport) round-trips', async () => {
    const g = await graph();
    const built = await nodemailer
      .createTransport({ streamTransport: true, buffer: true })
      .sendMail({ from: 'support@contoso.example', to: 'a@fabrikam.example', bcc: 'b@fabrikam.example', subject: 'Hi', text: 'body', attachments: [{ filename: 'x.bin', content: Buffer.alloc(5000, 7) }] });
    const raw = built.message as Buffer;
    expect((await sendMail(g, 'support@contoso.example', 'app-token', raw.toString('base64'))).status).toBe(202);
    expect((await g.nextMessage()).mime.equals(raw)).toBe(true);
  });

  it('401 InvalidAuthenticationToken without a token or with a refused one', async () => {
    const g = await graph();
    const none = await sendMail(g, 'support@contoso.example', null);
    expect(none.status).toBe(401);
    expect(none.error?.code).toBe('InvalidAuthenticationToken');
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer /);
    const bad = await sendMail(g, 'support@contoso.example', 'expired');
    expect(bad.status).toBe(401);
    expect(bad.error?.code).toBe('InvalidAuthenticationToken');
    expect(g.messages).toHaveLength(0);
    expect(g.requests.map((r) => [r.status, r.code])).toEqual([
      [401, 'InvalidAuthenticationToken'],
      [401, 'InvalidAuthenticationToken'],
    ]);
  });

  it('403 ErrorAccessDenied for a mailbox the app may not send as; delegated tokens send as their own user', async () => {
    const g = await graph({ mailboxes: ['Support@Contoso.example', 'shared@contoso.example'] });
    expect((await sendMail(g, 'support@contoso.example', 'app-token')).status).toBe(202);
    const denied = await sendMail(g, 'ceo@contoso.example', 'app-token');
    expect(denied.status).toBe(403);
    expect(denied.error).toMatchObject({ code: 'ErrorAccessDenied', message: expect.stringMatching(/^Access is denied/) });
    // delegated: own mailbox and listed (shared) ones, not others
    expect((await sendMail(g, 'alice@contoso.example', 'alice-token')).status).toBe(202);
    expect((await sendMail(g, 'shared@contoso.example', 'alice-token')).status).toBe(202);
    expect((await sendMail(g, 'bob@contoso.example', 'alice-token')).status).toBe(403);
    expect(g.requests.map((r) => `${r.status} ${r.mailbox}`)).toEqual([
      '202 support@contoso.example',
      '403 ceo@contoso.example',
      '202 alice@contoso.example',
      '202 shared@contoso.example',
      '403 bob@contoso.example',
    ]);
  });

  it('/me/sendMail: the delegated user mailbox; 400 for an app-only token', async () => {
    const g = await graph();
    expect((await sendMail(g, null, 'alice-token')).status).toBe(202);
    expect((await g.nextMessage()).mailbox).toBe('alice@contoso.example');
    const app = await sendMail(g, null, 'app-token');
    expect(app.status).toBe(400);
    expect(app.error?.message).toBe('/me request is only valid with delegated authentication flow.');
  });

  it('400 for malformed base64 or MIME, 400 ErrorInvalidRecipients without recipient headers, 415 for JSON', async () => {
    const g = await graph();
    const notB64 = await sendMail(g, 'support@contoso.example', 'app-token', 'this is not base64!');
    expect(notB64.status).toBe(400);
    expect(notB64.error).toMatchObject({ code: 'ErrorMimeContentInvalidBase64String', message: 'Invalid base64 string for MIME content.' });
    // raw MIME sent without base64 encoding: the classic client mistake
    expect((await sendMail(g, 'support@contoso.example', 'app-token', MIME)).status).toBe(400);
    const notMime = await sendMail(g, 'support@contoso.example', 'app-token', Buffer.from('just some text\r\nno headers\r\n').toString('base64'));
    expect(notMime.status).toBe(400);
    expect(notMime.error?.code).toBe('ErrorMimeContentInvalidBase64String');
    const noRcpt = await sendMail(g, 'support@contoso.example', 'app-token', Buffer.from('From: a@contoso.example\r\nSubject: x\r\n\r\nbody\r\n').toString('base64'));
    expect(noRcpt.status).toBe(400);
    expect(noRcpt.error?.code).toBe('ErrorInvalidRecipients');
    const json = await sendMail(g, 'support@contoso.example', 'app-token', JSON.stringify({ message: {} }), 'application/json');
    expect(json.status).toBe(415);
    expect(g.messages).toHaveLength(0);
  });

  it('throttleNext: 429 ApplicationThrottled with Retry-After, then accepted; throttle() adds more', async () => {
    const g = await graph({ throttleNext: 2 });
    for (let i = 0; i < 2; i++) {
      const r = await sendMail(g, 'support@contoso.example', 'app-token');
      expect(r.status).toBe(429);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(r.error?.code).toBe('ApplicationThrottled');
    }
    expect((await sendMail(g, 'support@contoso.example', 'app-token')).status).toBe(202);
    g.throttle(1);
    expect((await sendMail(g, 'support@contoso.example', 'app-token')).status).toBe(429);
    expect(g.requests.map((r) => r.status)).toEqual([429, 429, 202, 429]);
    expect(g.messages).toHaveLength(1);
  });

  it('413 above maxRequestBytes; 404 elsewhere; 405 for GET', async () => {
    const g = await graph({ maxRequestBytes: 1000 });
    const big = Buffer.concat([MIME, Buffer.alloc(2000, 0x61)]).toString('base64');
    expect((await sendMail(g, 'support@contoso.example', 'app-token', big)).status).toBe(413);
    expect((await fetch(`${g.url}/v1.0/users/x@y.example/mailFolders`)).status).toBe(404);
    expect((await fetch(`${g.url}/v1.0/users/x@y.example/messages`)).status).toBe(405);
    expect((await fetch(`${g.url}/v1.0/users/x@y.example/sendMail`)).status).toBe(405);
  });

  it('works with tokens of the OAuth test server', async () => {
    const oauth = await startOAuthServer({ clients: [{ clientId: 'app', clientSecret: 's' }], refreshTokens: { rt: 'alice@contoso.example' } });
    try {
      const g = await graph({
        validateToken: (t) => {
          const issued = oauth.validate(t);
          return issued ? { ok: true, appOnly: issued.user === null, user: issued.user } : { ok: false, appOnly: false };
        },
        mailboxes: ['support@contoso.example'],
      });
      const tok = (await (
        await fetch(oauth.tokenUrl, {
          method: 'POST',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: 'client_credentials', client_id: 'app', client_secret: 's', scope: 'https://graph.microsoft.com/.default' }),
        })
      ).json()) as { access_token: string };
      expect((await sendMail(g, 'support@contoso.example', tok.access_token)).status).toBe(202);
      oauth.expire(tok.access_token);
      expect((await sendMail(g, 'support@contoso.example', tok.access_token)).status).toBe(401);
    } finally {
      await oauth.close();
    }
  });

  describe('the draft path', () => {
    const KIB = 1024;
    const call = async (g: GraphServer, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
      const isText = typeof body === 'string';
      const res = await fetch(path.startsWith('http') ? path : g.url + path, {
        method,
        headers: { Authorization: 'Bearer app-token', ...(body === undefined ? {} : { 'Content-Type': isText ? 'text/plain' : 'application/json' }), ...headers },
        body: body === undefined ? undefined : isText ? body : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, headers: res.headers, json: text ? (JSON.parse(text) as Record<string, unknown> & { error?: { code: string } }) : undefined };
    };
    const put = (url: string, bytes: Buffer, range: string, headers: Record<string, string> = {}) =>
      fetch(url, { method: 'PUT', headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': range, ...headers }, body: new Uint8Array(bytes) }).then(async (r) => ({ status: r.status, headers: r.headers, text: await r.text() }));
    const box = '/v1.0/users/support@contoso.example';

    it('a draft from MIME, an upload session in 320 KiB multiples, send: recorded with its attachment and ranges', async () => {
      const g = await graph();
      const draft = await call(g, 'POST', `${box}/messages`, MIME.toString('base64'));
      expect(draft.status).toBe(201);
      const id = draft.json!.id as string;
      const size = 3_100_000;
      const file = Buffer.alloc(size, 9);
      const session = await call(g, 'POST', `${box}/messages/${id}/attachments/createUploadSession`, { AttachmentItem: { attachmentType: 'file', name: 'big.bin', size, contentType: 'application/pdf' } });
      expect(session.status).toBe(201);
      const uploadUrl = session.json!.uploadUrl as string;
      expect(session.json!.nextExpectedRanges).toEqual(['0-']);
      const first = 9 * 320 * KIB;
      const r1 = await put(uploadUrl, file.subarray(0, first), `bytes 0-${first - 1}/${size}`);
      expect(r1.status).toBe(200);
      expect((JSON.parse(r1.text) as { nextExpectedRanges: string[] }).nextExpectedRanges).toEqual([String(first)]);
      const r2 = await put(uploadUrl, file.subarray(first), `bytes ${first}-${size - 1}/${size}`);
      expect(r2.status).toBe(201);
      expect(r2.headers.get('location')).toContain(`/messages('${id}')/attachments('`);
      expect((await call(g, 'PATCH', `${box}/messages/${id}`, { singleValueExtendedProperties: [{ id: 'Boolean 0x0E01', value: 'true' }] })).status).toBe(200);
      expect((await call(g, 'POST', `${box}/messages/${id}/send`)).status).toBe(202);
      const msg = await g.nextMessage();
      expect(msg).toMatchObject({ via: 'draft', savedToSentItems: false, mailbox: 'support@contoso.example' });
      expect(msg.mime.equals(MIME)).toBe(true);
      expect(msg.attachments).toEqual([
        expect.objectContaining({ name: 'big.bin', contentType: 'application/pdf', via: 'upload', ranges: [{ start: 0, end: first - 1, total: size }, { start: first, end: size - 1, total: size }] }),
      ]);
      expect(msg.attachments[0]!.bytes.equals(file)).toBe(true);
      expect(g.openDrafts()).toBe(0);
    });

    it('checks each PUT: where it starts, the total, the body length, 320 KiB multiples, at most 4 MiB, no Authorization', async () => {
      const g = await graph();
      const id = (await call(g, 'POST', `${box}/messages`, MIME.toString('base64'))).json!.id as string;
      const size = 9_000_000;
      const url = (await call(g, 'POST', `${box}/messages/${id}/attachments/createUploadSession`, { AttachmentItem: { attachmentType: 'file', name: 'x', size } })).json!.uploadUrl as string;
      const chunk = Buffer.alloc(320 * KIB);
      expect((await put(url, chunk, `bytes 100-${100 + chunk.length - 1}/${size}`)).status).toBe(416);
      expect((await put(url, chunk, `bytes 0-${chunk.length - 1}/${size + 1}`)).status).toBe(416);
      expect((await put(url, chunk, `bytes 0-${chunk.length}/${size}`)).status).toBe(416);
      expect((await put(url, chunk.subarray(1000), `bytes 0-${chunk.length - 1001}/${size}`)).text).toContain('InvalidChunkSize');
      const over = Buffer.alloc(4 * 1024 * KIB + 320 * KIB);
      expect((await put(url, over, `bytes 0-${over.length - 1}/${size}`)).status).toBe(413);
      expect((await put(url, chunk, `bytes 0-${chunk.length - 1}/${size}`, { Authorization: 'Bearer app-token' })).status).toBe(400);
      expect((await put(url, chunk, 'bytes */9000000')).status).toBe(400);
      expect((await put(url, chunk, `bytes 0-${chunk.length - 1}/${size}`)).status).toBe(200);
    });

    it('createUploadSession only for 3 MB to 150 MB; drafts are per mailbox; DELETE removes one', async () => {
      const g = await graph();
      const id = (await call(g, 'POST', `${box}/messages`, MIME.toString('base64'))).json!.id as string;
      const small = await call(g, 'POST', `${box}/messages/${id}/attachments/createUploadSession`, { AttachmentItem: { attachmentType: 'file', name: 'x', size: 2_999_999 } });
      expect([small.status, small.json?.error?.code]).toEqual([400, 'ErrorAttachmentSizeShouldNotBeLessThanMinimumSize']);
      const huge = await call(g, 'POST', `${box}/messages/${id}/attachments/createUploadSession`, { AttachmentItem: { attachmentType: 'file', name: 'x', size: 150_000_001 } });
      expect([huge.status, huge.json?.error?.code]).toEqual([413, 'ErrorMessageSizeExceeded']);
      const posted = await call(g, 'POST', `${box}/messages/${id}/attachments`, { '@odata.type': '#microsoft.graph.fileAttachment', name: 'a.txt', contentBytes: Buffer.from('hi').toString('base64') });
      expect(posted.status).toBe(201);
      expect((await call(g, 'POST', `/v1.0/users/other@contoso.example/messages/${id}/send`)).status).toBe(404);
      expect((await call(g, 'DELETE', `${box}/messages/${id}`)).status).toBe(204);
      expect(g.deletedDrafts).toEqual([id]);
      expect((await call(g, 'POST', `${box}/messages/${id}/send`)).status).toBe(404);
      expect(g.requests.map((r) => r.step)).toEqual(['draft', 'createUploadSession', 'createUploadSession', 'attachment', 'send', 'delete', 'send']);
    });

    it('failOn answers a chosen step with a chosen error', async () => {
      const g = await graph({ failOn: ({ step }) => (step === 'send' ? { status: 503, code: 'ServiceUnavailable', message: 'try later' } : undefined) });
      const id = (await call(g, 'POST', `${box}/messages`, MIME.toString('base64'))).json!.id as string;
      const r = await call(g, 'POST', `${box}/messages/${id}/send`);
      expect([r.status, r.json?.error?.code]).toEqual([503, 'ServiceUnavailable']);
      expect(g.messages).toHaveLength(0);
    });
  });
});
