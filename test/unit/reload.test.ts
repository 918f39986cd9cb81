import { appendFileSync, mkdirSync, mkdtempSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { describeChange, diffSnapshots, isEmptyChange } from '../../src/config/diff.js';
import { parseConfig } from '../../src/config/load.js';
import { ConfigWatcher } from '../../src/config/watch.js';
import { BASE_YAML } from './helpers.js';

const snap = (yaml: string, env: NodeJS.ProcessEnv = {}) => parseConfig(yaml, '/etc/sendas/relay.yaml', { env });

describe('what a reload changed', () => {
  const before = snap(BASE_YAML);

  it('names added, removed and changed identities and servers, in the domain words', () => {
    const after = snap(
      BASE_YAML.replace('    display_name: Acme Support\n', '    display_name: Acme Help\n')
        .replace('  - name: sales\n    address: sales@acme.example\n', '')
        .replace('agents:\n', 'agents:\n  - name: carol\n    address: carol@acme.example\n')
        .replace('password: backup-pw', 'password: backup-pw-2')
        .replace('send_as: [alice, sales]', 'send_as: [alice]'),
    );
    const change = diffSnapshots(before, after);
    expect(change.channels).toEqual({ added: [], removed: ['sales'], changed: ['support'] });
    expect(change.agents).toEqual({ added: ['carol'], removed: [], changed: [] });
    expect(change.servers).toEqual({ added: [], removed: [], changed: ['backup'] });
    expect(change.clients).toEqual({ added: [], removed: [], changed: ['two'] });
    expect(describeChange(change)).toBe('servers: ~backup; channels: -sales ~support; agents: +carol; clients: ~two');
  });

  it('sees a rotated override password, and nothing else, as a change of that identity', () => {
    const change = diffSnapshots(before, snap(BASE_YAML.replace('password: alice-pw', 'password: alice-pw-2')));
    expect(describeChange(change)).toBe('agents: ~alice');
    expect(snap(BASE_YAML).version).toBe(before.version);
    expect(snap(BASE_YAML.replace('password: alice-pw', 'password: alice-pw-2')).version).not.toBe(before.version);
  });

  it('reports a moved default server', () => {
    const moved = snap(BASE_YAML.replace('    default: true\n', '').replace('host: smtp2.acme.example', 'host: smtp2.acme.example\n    default: true'));
    const change = diffSnapshots(before, moved);
    expect(change.defaultServer).toEqual({ from: 'main', to: 'backup' });
    expect(describeChange(change)).toContain('default server: main → backup');
  });

  it('says which changes need a restart and which apply at once', () => {
    const after = snap(`${BASE_YAML}listen:\n  port: 2626\n  allow: ["10.0.0.0/8"]\ndelivery: passthrough\npolicy:\n  from: reject\nlog:\n  level: debug\nhttp: false\n`);
    const change = diffSnapshots(before, after);
    expect(change.needsRestart).toEqual(['listen.port', 'delivery', 'http']);
    // a listener whose socket changed keeps its settings until the restart, so its new allow is not applied yet
    expect(change.settings).toEqual(['policy', 'log.level']);
  });

  it('is empty when only comments or formatting changed', () => {
    const change = diffSnapshots(before, snap(`# a comment\n${BASE_YAML}\n`));
    expect(isEmptyChange(change)).toBe(true);
    expect(describeChange(change)).toBe('no change');
  });
});

describe('the config watcher', () => {
  const dirs: string[] = [];
  let watcher: ConfigWatcher | undefined;
  afterEach(async () => {
    await watcher?.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  const changes = () => {
    const seen: string[] = [];
    let notify: (() => void) | undefined;
    watcher = new ConfigWatcher((reason) => {
      seen.push(reason);
      notify?.();
    }, 50);
    return {
      seen,
      next: (timeoutMs = 3_000) =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no reload was requested')), timeoutMs);
          notify = () => {
            clearTimeout(timer);
            resolve();
          };
        }),
    };
  };

  it('sees an in-place write, a write-and-rename, and a change of a secret file elsewhere', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-watch-'));
    const secrets = mkdtempSync(join(tmpdir(), 'sendas-secrets-'));
    dirs.push(dir, secrets);
    const file = join(dir, 'relay.yaml');
    writeFileSync(file, 'a: 1\n');
    writeFileSync(join(secrets, 'pw'), 'one\n');
    const w = changes();
    watcher!.watch([file, join(secrets, 'pw')]);

    let next = w.next();
    writeFileSync(file, 'a: 2\n');
    await next;

    next = w.next();
    writeFileSync(join(dir, 'relay.yaml.tmp'), 'a: 3\n');
    renameSync(join(dir, 'relay.yaml.tmp'), file);
    await next;

    next = w.next();
    writeFileSync(join(secrets, 'pw'), 'two\n');
    await next;
    // every burst of events became one request
    expect(w.seen.length).toBeLessThanOrEqual(3);
  });

  it('sees a Kubernetes ConfigMap update (the ..data symlink swapped to a new directory)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-k8s-'));
    dirs.push(dir);
    mkdirSync(join(dir, '..2026_11_21_01'));
    writeFileSync(join(dir, '..2026_11_21_01', 'relay.yaml'), 'a: 1\n');
    symlinkSync('..2026_11_21_01', join(dir, '..data'));
    symlinkSync('..data/relay.yaml', join(dir, 'relay.yaml'));
    const w = changes();
    watcher!.watch([join(dir, 'relay.yaml')]);

    const next = w.next();
    // what the kubelet does: a new directory, a new ..data_tmp link, renamed over ..data
    mkdirSync(join(dir, '..2026_11_21_02'));
    writeFileSync(join(dir, '..2026_11_21_02', 'relay.yaml'), 'a: 2\n');
    symlinkSync('..2026_11_21_02', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    rmSync(join(dir, '..2026_11_21_01'), { recursive: true });
    await next;
  });

  it('does not react to other files in the directories it watches (a log file beside relay.yaml)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-watch-'));
    dirs.push(dir);
    const file = join(dir, 'relay.yaml');
    writeFileSync(file, 'a: 1\n');
    writeFileSync(join(dir, 'pw'), 'one\n');
    const w = changes();
    watcher!.watch([file, join(dir, 'pw')]);
    expect(watcher!.watched()).toEqual(new Map([[realpathSync(dir), ['pw', 'relay.yaml']]]));

    for (let i = 0; i < 40; i++) {
      appendFileSync(join(dir, 'relay.log'), `line ${i}\n`);
      writeFileSync(join(dir, 'other.yaml.tmp'), `b: ${i}\n`);
      renameSync(join(dir, 'other.yaml.tmp'), join(dir, 'other.yaml'));
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 200));
    expect(w.seen).toEqual([]);

    // and its own files are still seen while the neighbour keeps writing
    const next = w.next();
    const writing = setInterval(() => appendFileSync(join(dir, 'relay.log'), 'more\n'), 5);
    try {
      writeFileSync(file, 'a: 2\n');
      await next;
    } finally {
      clearInterval(writing);
    }
    expect(w.seen).toEqual([`file changed: ${join(realpathSync(dir), 'relay.yaml')}`]);
  });

  it('follows a ConfigMap to its next directory after a reload re-points it', async () => {
    const dir = realpathSync(mkdtempSync(join(tmpdir(), 'sendas-k8s-')));
    dirs.push(dir);
    const publish = (stamp: string, text: string, first = false) => {
      mkdirSync(join(dir, stamp));
      writeFileSync(join(dir, stamp, 'relay.yaml'), text);
      if (first) symlinkSync(stamp, join(dir, '..data'));
      else {
        symlinkSync(stamp, join(dir, '..data_tmp'));
        renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      }
    };
    publish('..2026_11_21_01', 'a: 1\n', true);
    symlinkSync('..data/relay.yaml', join(dir, 'relay.yaml'));
    const w = changes();
    const file = join(dir, 'relay.yaml');
    watcher!.watch([file]);
    expect(watcher!.watched()).toEqual(
      new Map([
        [dir, ['..2026_11_21_01', '..data', 'relay.yaml']],
        [join(dir, '..2026_11_21_01'), ['relay.yaml']],
      ]),
    );
    let next = w.next();
    publish('..2026_11_21_02', 'a: 2\n');
    await next;
    watcher!.watch([file]);
    expect(watcher!.watched().get(dir)).toEqual(['..2026_11_21_02', '..data', 'relay.yaml']);
    rmSync(join(dir, '..2026_11_21_01'), { recursive: true });

    next = w.next();
    publish('..2026_11_21_03', 'a: 3\n');
    await next;
  });

  it('watches for a secret directory that does not exist yet in its parent', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-watch-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'relay.yaml'), 'a: 1\n');
    const w = changes();
    watcher!.watch([join(dir, 'relay.yaml'), join(dir, 'secrets', 'pw')]);
    expect(watcher!.watched().get(realpathSync(dir))).toEqual(['relay.yaml', 'secrets']);
    const next = w.next();
    mkdirSync(join(dir, 'secrets'));
    await next;
  });

  it('coalesces SIGHUP-style requests into one reload', async () => {
    const w = changes();
    const next = w.next();
    watcher!.request('SIGHUP');
    watcher!.request('SIGHUP');
    watcher!.request('file changed');
    await next;
    expect(w.seen).toEqual(['file changed']);
  });
});
