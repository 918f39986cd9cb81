import { dirname, resolve } from 'node:path';
import { DEFAULTS } from './defaults.js';
import type { ConfigSnapshot } from './types.js';

/**
 * Where the queue and state directories came from, in words: the config file's own key wins over
 * the environment (SENDAS_QUEUE_DIR, SENDAS_STATE_DIR, set by the Docker image and the systemd
 * unit), which wins over the default beside the config file. `sendas check` and the start log say
 * which one won, so a queue landing outside its volume is seen before mail is accepted into it.
 */
export interface DirOrigin {
  readonly dir: string;
  readonly origin: string;
  /** The config file names a directory the environment did not: worth a warning in a container. */
  readonly overridesEnv: boolean;
}

function originOf(dir: string, key: string, envName: string, envValue: string | undefined, fallback: string, file: string): DirOrigin {
  const base = dirname(file);
  if (envValue !== undefined) {
    if (resolve(base, envValue) === dir) return { dir, origin: `from ${envName}`, overridesEnv: false };
    return { dir, origin: `${key} wins over ${envName}=${envValue}`, overridesEnv: true };
  }
  if (resolve(base, fallback) === dir) return { dir, origin: `default: ${fallback} beside the config file`, overridesEnv: false };
  return { dir, origin: `from ${key}`, overridesEnv: false };
}

export function dirOrigins(snapshot: ConfigSnapshot, env: NodeJS.ProcessEnv): { queue: DirOrigin; state: DirOrigin } {
  return {
    queue: originOf(snapshot.queue.dir, 'queue.dir', 'SENDAS_QUEUE_DIR', env.SENDAS_QUEUE_DIR, DEFAULTS.queue.dir, snapshot.file),
    state: originOf(snapshot.stateDir, 'state_dir', 'SENDAS_STATE_DIR', env.SENDAS_STATE_DIR, DEFAULTS.stateDir, snapshot.file),
  };
}
