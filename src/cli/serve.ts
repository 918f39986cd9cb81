import { ConfigError, loadConfigFile } from '../config/load.js';
import type { ConfigSnapshot } from '../config/types.js';
import { dirOrigins } from '../config/dir-origin.js';
import { ConfigWatcher } from '../config/watch.js';
import { createLogger } from '../log.js';
import { OpsServer } from '../ops/http.js';
import { Relay } from '../relay.js';

/** `sendas serve`: the relay and its monitoring port until SIGTERM or SIGINT, reloading on file changes and SIGHUP. */
export async function serve(file: string): Promise<number> {
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
