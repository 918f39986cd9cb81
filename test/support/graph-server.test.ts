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
});
