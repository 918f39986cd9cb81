#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, loadConfigFile } from '../config/load.js';
import type { ConfigSnapshot } from '../config/types.js';
import { createLogger } from '../log.js';
import { Relay } from '../relay.js';
import { OpsServer } from '../ops/http.js';
import { ConfigWatcher } from '../config/watch.js';
import { explain } from './explain.js';
import { checkReport } from './report.js';
import { dirOrigins } from '../config/dir-origin.js';
import { QUEUE_USAGE, queueCommand } from './queue.js';
import { TEST_USAGE, testCommand } from './test-send.js';
import { OAUTH_USAGE, oauthCommand } from './oauth-login.js';
import { DKIM_USAGE, dkimCommand } from './dkim-keygen.js';
import { TRACE_USAGE, traceCommand } from './trace.js';
import { SECRET_USAGE, secretCommand } from './secret.js';
import { STATUS_USAGE, statusCommand } from './status.js';

const USAGE = `usage: sendas <command> [options]

commands:
  serve    --config FILE                  run the relay (SIGTERM/SIGINT: 421 to new sessions, running deliveries
                                          get 5 s, the rest stays queued)
  check    --config FILE                  validate the file; list servers with the channels and agents using them
  check    --config FILE --dns [--dns-server IP[:PORT]] [--json]
                                          look up each From domain's SPF, DKIM and DMARC per server: would the
                                          mail pass DMARC, and the records to add (exit 4: some would fail,
                                          5: some could not be looked up)
  explain  --config FILE --from ADDR [--envelope ADDR] [--login USER]
                                          show who would send a message, with which account and From; no network
${QUEUE_USAGE}
${TEST_USAGE}
${OAUTH_USAGE}
${DKIM_USAGE}
${TRACE_USAGE}
${SECRET_USAGE}
${STATUS_USAGE}

--config defaults to $SENDAS_CONFIG.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 2;
  }
  // needs no configuration: its own options (src/cli/dkim-keygen.ts)
  if (command === 'dkim') return dkimCommand(rest, process.stdout, process.stderr);
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
    return secretCommand({ sub: positionals[0], extra: positionals.slice(1), out: values.out, recipient: values.recipient, key: values.key, config: file }, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env });
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
      process.stdout.write(`${checkReport(snapshot)}\n`);
      return 0;
    }
    case 'explain': {
      if (values.from === undefined && values.envelope === undefined) {
        process.stderr.write('sendas explain: pass --from ADDR (and optionally --envelope ADDR, --login USER)\n');
        return 2;
      }
      const snapshot = await load(file);
      if (!snapshot) return 1;
      const result = explain(snapshot, { from: values.from, envelope: values.envelope, login: values.login });
      process.stdout.write(`${result.text}\n`);
      return result.relayed ? 0 : 3;
    }
    case 'serve':
      return serve(file);
    case 'queue': {
      const snapshot = await load(file);
      if (!snapshot) return 1;
      return queueCommand(snapshot, { sub: positionals[0], id: positionals[1], failed: values.failed === true, all: values.all === true }, process.stdout);
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
      return testCommand(snapshot, { kind, name: values[kind]! }, { to: values.to }, process.stdout, process.stderr);
    }
    case 'trace': {
      if (positionals.length !== 1) {
        process.stderr.write(`sendas trace: pass one address, Message-ID or queue id\nusage:\n${TRACE_USAGE}\n`);
        return 2;
      }
      const snapshot = await load(file);
      if (!snapshot) return 1;
      return traceCommand(snapshot, positionals[0], { json: values.json === true, limit: values.limit }, process.stdout, process.stderr);
    }
    case 'status': {
      const snapshot = await load(file);
      if (!snapshot) return 1;
      return statusCommand(snapshot, { cluster: values.cluster === true, json: values.json === true, url: values.url }, process.stdout, process.stderr);
    }
    // sendas oauth login (src/cli/oauth-login.ts)
    case 'oauth': {
      const args = { account: values.account, flow: values.flow, openTimeout: values['open-timeout'], deviceUrl: values['device-url'], authorizeUrl: values['authorize-url'] };
      return oauthCommand(positionals, args, () => load(file), process.stdout, process.stderr);
    }
    default:
      process.stderr.write(`sendas: unknown command "${command}"\n${USAGE}\n`);
      return 2;
  }
}

async function load(file: string): Promise<ConfigSnapshot | undefined> {
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

async function serve(file: string): Promise<number> {
  let snapshot: ConfigSnapshot;
  try {
    snapshot = await loadConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      const logger = createLogger();
      logger.fatal({ issues: err.issues }, 'configuration is invalid; not starting');
      process.stderr.write(`${err.message}\n`);
      await new Promise<void>((resolve) => logger.flush(() => resolve()));
      return 1;
    }
    throw err;
  }
  const logger = createLogger({ level: snapshot.log.level, ...(snapshot.log.format ? { format: snapshot.log.format } : {}) });
  // which directories won (the config's keys, the image's or unit's environment, the default): a
  // queue outside its volume is lost with the container
  const dirs = dirOrigins(snapshot, process.env);
  logger[dirs.queue.overridesEnv || dirs.state.overridesEnv ? 'warn' : 'info']({ queueDir: dirs.queue.dir, stateDir: dirs.state.dir }, `queue ${dirs.queue.dir} (${dirs.queue.origin}), state ${dirs.state.dir} (${dirs.state.origin})`);
  const relay = new Relay({ snapshot, logger });
  let ops: OpsServer | undefined;
  try {
    await relay.start();
    if (snapshot.http) {
      ops = new OpsServer({
        ready: () => relay.ready(),
        status: () => relay.status(),
        registry: relay.metrics.registry,
        logger,
        // the current snapshot's: a reload rotates the token; host and port need a restart
        token: () => (relay.currentSnapshot.http ? relay.currentSnapshot.http.token : undefined),
        ...(snapshot.history ? { trace: relay.trace } : {}),
      });
      const at = await ops.listen(snapshot.http.host, snapshot.http.port);
      logger.info({ host: at.address, port: at.port }, `monitoring on http://${at.address}:${at.port} (/ the status page, /healthz /readyz /metrics /status${snapshot.http.token ? '; the page, /metrics and /status need the token' : ''})`);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    // EACCES is also a queue or state directory the user may not write: only a bind is "cannot listen"
    if (e.code === 'EADDRINUSE' || e.code === 'EADDRNOTAVAIL' || (e.code === 'EACCES' && (e.syscall === 'listen' || e.syscall === 'bind'))) {
      logger.fatal({ code: e.code }, `cannot listen: ${e.message}`);
    } else {
      logger.fatal({ code: e.code }, `cannot start: ${e.message}`);
    }
    process.stderr.write(`sendas: cannot start: ${e.message}\n`);
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    process.exit(1);
  }

  // hot reload: file and secret changes (debounced) and SIGHUP; after each, the watch follows the
  // files the config now references (a new secret file, a ConfigMap's new directory)
  const reload = (reason: string) => {
    void relay.reloadFromFile(reason).then(() => watcher.watch(relay.configFiles));
  };
  const watcher = new ConfigWatcher(reload);
  watcher.watch(relay.configFiles);
  process.on('SIGHUP', () => reload('SIGHUP'));

  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'stopping: new sessions get 421; running deliveries may finish');
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await watcher.close();
  await ops?.close();
  await relay.stop();
  logger.info('stopped');
  await new Promise<void>((resolve) => logger.flush(() => resolve()));
  // an upstream connection still hanging past the grace period must not keep the process alive:
  // what it was sending is still in the queue and goes out after the next start
  process.exit(0);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`sendas: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
