/**
 * npm run demo: the relay's main job in one minute, on this machine only.
 *
 * 1. starts a local upstream SMTP server (the test upstream) that, like Microsoft 365, demands
 *    each account's own password and refuses a MAIL FROM that is not the signed-in account;
 * 2. starts `sendas serve` (the real command) with demo/relay.yaml;
 * 3. sends, as legacy contact-center software does, three messages through ONE relay login:
 *    as a channel with its own account, as a channel without one, and as an agent;
 * 4. prints what the upstream received, then stops everything.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import nodemailer from 'nodemailer';
import { simpleParser } from 'mailparser';
import { startTestUpstream } from '../test/support/upstream.js';
import { startRelayProcess } from '../test/support/relay-process.js';

const here = fileURLToPath(new URL('.', import.meta.url));

async function main(): Promise<number> {
  const upstream = await startTestUpstream({
    accounts: [
      { username: 'relay@acme.example', password: 'demo-relay-password' },
      { username: 'support@acme.example', password: 'demo-support-password' },
      { username: 'alice@acme.example', password: 'demo-alice-password' },
    ],
    requireSenderMatchesLogin: true,
  });
  const dir = mkdtempSync(join(tmpdir(), 'sendas-demo-'));
  const config = join(dir, 'relay.yaml');
  writeFileSync(config, readFileSync(join(here, 'relay.yaml'), 'utf8').replace('port: UPSTREAM_PORT', `port: ${upstream.port}`));
  writeFileSync(join(dir, 'support.secret'), 'demo-support-password\n');

  console.log(`upstream SMTP server (demands each account's password) on 127.0.0.1:${upstream.port}`);
  const relay = await startRelayProcess(config, {
    MAIN_SMTP_PASSWORD: 'demo-relay-password',
    ALICE_PASSWORD: 'demo-alice-password',
    CRM_RELAY_PASSWORD: 'demo-crm-password',
  });
  console.log(`sendas relay listening on 127.0.0.1:${relay.port} (config ${config})\n`);

  // the legacy software: one SMTP login for everything, From says who it is for
  const crm = nodemailer.createTransport({
    host: '127.0.0.1',
    port: relay.port,
    secure: false,
    ignoreTLS: true,
    auth: { user: 'crm', pass: 'demo-crm-password' },
  });
  const sends = [
    { what: 'channel "support" (own account: override)', from: 'Bob from Support <support@acme.example>' },
    { what: 'channel "sales" (no override: the server account)', from: 'Sales Team <sales@acme.example>' },
    { what: 'agent "alice" (own account: override)', from: 'Alice Agent <alice@acme.example>' },
  ];

  let failures = 0;
  for (const s of sends) {
    try {
      const info = await crm.sendMail({
        from: s.from,
        to: 'customer@example.net',
        envelope: { from: 'crm-bounces@crm.local', to: 'customer@example.net' },
        subject: `Your ticket (${s.what})`,
        text: 'Hello,\n\nyour ticket #4711 was updated.\n',
      });
      const got = await upstream.nextMessage(10_000);
      const parsed = await simpleParser(got.raw);
      console.log(`sent as ${s.what}`);
      console.log(`  client wrote     From: ${s.from}   (relay login: crm, envelope crm-bounces@crm.local)`);
      console.log(`  relay replied    ${info.response}`);
      console.log(`  upstream login   ${got.login}`);
      console.log(`  envelope sender  ${got.mailFrom}`);
      console.log(`  From             ${parsed.from?.text}`);
      console.log(`  Reply-To         ${parsed.replyTo?.text ?? '(none)'}\n`);
    } catch (err) {
      failures++;
      console.log(`sent as ${s.what}: FAILED ${(err as Error).message}\n`);
    }
  }
  crm.close();

  const code = await relay.stop();
  await upstream.close();
  console.log(`relay stopped (exit ${code}); ${sends.length - failures} of ${sends.length} messages relayed`);
  return failures === 0 && code === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
