#!/usr/bin/env node
import { parseArgs } from 'node:util';
import type { ConfigSnapshot } from '../config/types.js';
import { TRACE_USAGE, USAGE } from './usage.js';

// Each command's module is imported when that command runs: `sendas check` or a typo does not load
// the relay (smtp-server, nodemailer, the queue), which is most of a start's half second.

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 2;
  }
  // needs no configuration: its own options (src/cli/dkim-keygen.ts)
  if (command === 'dkim') return (await import('./dkim-keygen.js')).dkimCommand(rest, process.stdout, process.stderr);
  let parsed;
  try {
    parsed = parseArgs({
    args: rest,
    options: {
      config: { type: 'string', short: 'c' },
      from: { type: 'string' },
      envelope: { type: 'string' },
      login: { type: 'string' },
      failed: { type: 'boolean' },
      all: { type: 'boolean' },
      // sendas test
      server: { type: 'string' },
      channel: { type: 'string' },
      agent: { type: 'string' },
      to: { type: 'string' },
      // sendas oauth login
      account: { type: 'string' },
      flow: { type: 'string' },
      'open-timeout': { type: 'string' },
      'device-url': { type: 'string' },
      'authorize-url': { type: 'string' },
      // sendas check --dns
      dns: { type: 'boolean' },
      'dns-server': { type: 'string', multiple: true },
      json: { type: 'boolean' },
      // sendas trace
      limit: { type: 'string' },
      // sendas secret
      out: { type: 'string' },
      recipient: { type: 'string' },
      key: { type: 'string' },
      // sendas status
      cluster: { type: 'boolean' },
      url: { type: 'string' },
    },
    strict: true,
    allowPositionals: command === 'queue' || command === 'oauth' || command === 'trace' || command === 'secret',
  });
  } catch (err) {
    // unknown option, stray argument, missing value: a usage mistake, not a bad config
    process.stderr.write(`sendas ${command}: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  const file = values.config ?? process.env.SENDAS_CONFIG;
  // the key needs no valid config (it may be what makes the config valid)
  if (command === 'secret') {
    return (await import('./secret.js')).secretCommand({ sub: positionals[0], extra: positionals.slice(1), out: values.out, recipient: values.recipient, key: values.key, config: file }, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env });
  }
  if (!file) {
    process.stderr.write('sendas: no configuration: pass --config FILE or set SENDAS_CONFIG\n');
    return 2;
  }

  switch (command) {
    case 'check': {
      if (!values.dns && (values['dns-server'] !== undefined || values.json)) {
        process.stderr.write('sendas check: --dns-server and --json go with --dns\n');
        return 2;
      }
      const snapshot = await load(file);
      if (!snapshot) return 1;
      // loaded only for --dns: mailauth's SPF and DMARC code is a quarter of a second at every start
      if (values.dns) return (await import('./check-dns.js')).checkDnsCommand(snapshot, { servers: values['dns-server'] ?? [], json: values.json === true }, process.stdout, process.stderr);
      process.stdout.write(`${(await import('./report.js')).checkReport(snapshot)}\n`);
      return 0;
    }
    case 'explain': {
      if (values.from === undefined && values.envelope === undefined) {
        process.stderr.write('sendas explain: pass --from ADDR (and optionally --envelope ADDR, --login USER)\n');
        return 2;
      }
      const snapshot = await load(file);
      if (!snapshot) return 1;
      const result = (await import('./explain.js')).explain(snapshot, { from: values.from, envelope: values.envelope, login: values.login });
      process.stdout.write(`${result.text}\n`);
      return result.relayed ? 0 : 3;
    }
    case 'serve':
      return (await import('./serve.js')).serve(file);
    case 'queue': {
      const snapshot = await load(file);
      if (!snapshot) return 1;
      return (await import('./queue.js')).queueCommand(snapshot, { sub: positionals[0], id: positionals[1], failed: values.failed === true, all: values.all === true }, process.stdout);
    }
    case 'test': {
      const targets = (['server', 'channel', 'agent'] as const).filter((k) => values[k] !== undefined);
      if (targets.length !== 1) {
        process.stderr.write('sendas test: pass exactly one of --server NAME, --channel NAME, --agent NAME (and optionally --to ADDR)\n');
        return 2;
      }
      const snapshot = await load(file);
      if (!snapshot) return 1;
      const kind = targets[0]!;
      return (await import('./test-send.js')).testCommand(snapshot, { kind, name: values[kind]! }, { to: values.to }, process.stdout, process.stderr);
    }
    case 'trace': {
      if (positionals.length !== 1) {
        process.stderr.write(`sendas trace: pass one address, Message-ID or queue id\nusage:\n${TRACE_USAGE}\n`);
        return 2;
      }
      const snapshot = await load(file);
      if (!snapshot) return 1;
      return (await import('./trace.js')).traceCommand(snapshot, positionals[0], { json: values.json === true, limit: values.limit }, process.stdout, process.stderr);
    }
    case 'status': {
      const snapshot = await load(file);
      if (!snapshot) return 1;
      return (await import('./status.js')).statusCommand(snapshot, { cluster: values.cluster === true, json: values.json === true, url: values.url }, process.stdout, process.stderr);
    }
    // sendas oauth login (src/cli/oauth-login.ts)
    case 'oauth': {
      const args = { account: values.account, flow: values.flow, openTimeout: values['open-timeout'], deviceUrl: values['device-url'], authorizeUrl: values['authorize-url'] };
      return (await import('./oauth-login.js')).oauthCommand(positionals, args, () => load(file), process.stdout, process.stderr);
    }
    default:
      process.stderr.write(`sendas: unknown command "${command}"\n${USAGE}\n`);
      return 2;
  }
}

async function load(file: string): Promise<ConfigSnapshot | undefined> {
  const { ConfigError, loadConfigFile } = await import('../config/load.js');
  try {
    return await loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return undefined;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // a TypeError and its kind are a bug in sendas, not a problem of the setup: the stack goes with it, for the report
    const bug = err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError;
    process.stderr.write(`sendas: ${err instanceof Error ? (bug ? err.stack : err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
