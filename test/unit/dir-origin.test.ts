import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { dirOrigins } from '../../src/config/dir-origin.js';
import { checkReport } from '../../src/cli/report.js';

const FILE = '/etc/sendas/relay.yaml';
const SERVER = 'servers:\n  - name: main\n    host: smtp.acme.example\n';
const IMAGE = { SENDAS_QUEUE_DIR: '/var/lib/sendas/queue', SENDAS_STATE_DIR: '/var/lib/sendas/state' };

function origins(yaml: string, env: NodeJS.ProcessEnv) {
  return dirOrigins(parseConfig(yaml, FILE, { env }), env);
}

describe('where the queue and state directories come from', () => {
  it("the image's environment, when the config names none", () => {
    const o = origins(SERVER, IMAGE);
    expect(o.queue).toEqual({ dir: '/var/lib/sendas/queue', origin: 'from SENDAS_QUEUE_DIR', overridesEnv: false });
    expect(o.state).toEqual({ dir: '/var/lib/sendas/state', origin: 'from SENDAS_STATE_DIR', overridesEnv: false });
  });

  it('the config when it names other directories, and then it says it wins over the environment', () => {
    const o = origins(`${SERVER}queue:\n  dir: ./var/queue\nstate_dir: /srv/state\n`, IMAGE);
    expect(o.queue).toEqual({ dir: '/etc/sendas/var/queue', origin: 'queue.dir wins over SENDAS_QUEUE_DIR=/var/lib/sendas/queue', overridesEnv: true });
    expect(o.state).toEqual({ dir: '/srv/state', origin: 'state_dir wins over SENDAS_STATE_DIR=/var/lib/sendas/state', overridesEnv: true });
  });

  it('the same directory in the config and the environment is no conflict', () => {
    expect(origins(`${SERVER}queue:\n  dir: /var/lib/sendas/queue\n`, IMAGE).queue.overridesEnv).toBe(false);
  });

  it('without the environment: the default beside the config file, or the config key', () => {
    expect(origins(SERVER, {}).queue.origin).toBe('default: ./var/queue beside the config file');
    expect(origins(`${SERVER}state_dir: /srv/state\n`, {}).state.origin).toBe('from state_dir');
  });

  it('sendas check prints both', () => {
    const report = checkReport(parseConfig(SERVER, FILE, { env: IMAGE }), IMAGE).split('\n');
    expect(report.find((l) => l.startsWith('queue '))).toMatch(/^queue \/var\/lib\/sendas\/queue \(from SENDAS_QUEUE_DIR\): retry after/);
    expect(report).toContain('state /var/lib/sendas/state (from SENDAS_STATE_DIR)');
  });
});
