/**
 * `sendas test` for a `type: graph` server: with the app token already in hand, a harmless read
 * of the mailbox (GET /users/{mailbox}) proves that the token is accepted and that the mailbox
 * exists; with --to, a real sendMail through the relay's own Graph code.
 */
import MailComposer from 'nodemailer/lib/mail-composer';
import type { Account } from '../config/account.js';
import { graphFailure, graphUnreachable } from '../errors/graph.js';
import { RelayError, oneLine } from '../errors/relay-error.js';
import type { TokenProvider } from '../oauth/tokens.js';
import { sendViaGraph } from '../transport/graph.js';
import { formatMailbox } from '../mail/mailbox.js';
import type { TestMessage, TestReport } from './test-send.js';

export interface GraphTestInput {
  readonly account: Account;
  readonly tokens: TokenProvider;
  readonly to: string | undefined;
  readonly message: TestMessage;
  readonly report: TestReport;
  readonly fix: (e: RelayError) => string;
  readonly fetch?: typeof fetch;
}

export async function testGraph(input: GraphTestInput): Promise<number> {
  const { account, tokens, to, message, report, fix } = input;
  const { server } = account;
  const mailbox = account.username ?? account.address;
  const base = `${server.graphUrl.replace(/\/+$/, '')}/v1.0/users/${encodeURIComponent(mailbox)}`;
  const where = `Microsoft Graph (${server.name}, ${new URL(base).host}) for mailbox ${mailbox}`;
  const token = await tokens.get(account);

  let response: Response;
  try {
    response = await (input.fetch ?? fetch)(`${base}?$select=id,mail,userPrincipalName`, {
      headers: { authorization: `Bearer ${token.token}`, accept: 'application/json' },
      signal: AbortSignal.timeout(15_000),
    });
  } catch (err) {
    return report.failed('Graph mailbox', graphUnreachable(err, where), fix(graphUnreachable(err, where)));
  }
  const body = await response.text().catch(() => '');
  if (response.ok) {
    report.line(`OK: the app token is accepted and mailbox ${mailbox} exists`);
  } else if (response.status === 404) {
    const e = new RelayError('sender', { code: 550, enhanced: '5.1.0' }, `${where}: no such mailbox in the tenant (${graphReply(response.status, body)})`);
    return report.failed('Graph mailbox', e, `check the address of the account (${account.via === 'override' ? `${(account.origin as { path: string }).path}.override.username` : `${server.path}.address`})`);
  } else if (response.status === 403) {
    // Mail.Send alone may not read users: that is the least privilege the README recommends, so not a failure
    report.line(`note: the app may not read user ${mailbox} (${graphReply(response.status, body)}; reading needs User.Read.All): the mailbox is not proven, use --to to send a real test`);
  } else {
    const e = graphFailure(response.status, graphReply(response.status, body), where, mailbox);
    return report.failed(response.status === 401 ? 'sign-in with the token' : 'Graph mailbox', e, graphFix(e, account, response.status) ?? fix(e));
  }
  if (to === undefined) return 0;

  report.line(`sending a test message to ${to} with Graph sendMail: From ${formatMailbox(message.from)}`);
  const mime = new MailComposer({
    from: { name: message.from.name, address: message.from.address },
    to,
    subject: message.subject,
    text: message.text,
    date: message.date,
    headers: { 'Auto-Submitted': 'auto-generated' },
  })
    .compile()
    .createReadStream();
  try {
    const sent = await sendViaGraph(tokens, account, { from: account.address, to: [to], eightBit: false }, mime);
    report.line(`OK: test message accepted by Microsoft Graph: ${oneLine(sent.upstreamReply)}`);
    return 0;
  } catch (e) {
    const error = e instanceof RelayError ? e : new RelayError('internal', { code: 451, enhanced: '4.3.0' }, (e as Error).message);
    return report.failed('Graph sendMail', error, graphFix(error, account, undefined) ?? fix(error));
  }
}

/** Graph's refusals in the words of the app registration. */
function graphFix(e: RelayError, account: Account, status: number | undefined): string | undefined {
  const o = account.oauth;
  if (status === 401 || (status === undefined && e.kind === 'auth')) {
    return `Graph refused the app token: give the app registration (client ${o?.clientId ?? '?'}) the application permission Mail.Send (Microsoft Graph) and grant admin consent; the token's scope is ${o?.scope ?? 'https://graph.microsoft.com/.default'} (${account.server.path}.oauth.scope)`;
  }
  if (e.kind === 'sender') {
    return `the app may not send as ${account.username ?? account.address}: check the application access policy (Get-ApplicationAccessPolicy / Test-ApplicationAccessPolicy -AppId ${o?.clientId ?? '<client id>'} -Identity ${account.username ?? account.address})`;
  }
  return undefined;
}

function graphReply(status: number, body: string): string {
  try {
    const e = (JSON.parse(body) as { error?: { code?: string; message?: string } }).error;
    if (e) return oneLine(`${status} ${e.code ?? 'Error'}: ${e.message ?? ''}`).slice(0, 300);
  } catch {
    // not JSON
  }
  return `${status} ${oneLine(body).slice(0, 300) || 'no details'}`;
}
