import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigHolder, type ConfigEvent } from '../../src/config/holder.js';
import { loadConfigFile } from '../../src/config/load.js';

const YAML = (password: string) => `servers:
  - name: main
    host: 127.0.0.1
    port: 2525
    security: none
    username: relay@acme.example
    password: ${password}
`;
const BROKEN = YAML('pw-1').replace('security: none', 'securty: none');

describe('the config holder', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  /** A holder over a real file, counting how often it parses the file. */
  const setup = async (text: string, files: Record<string, string> = {}) => {
    const dir = mkdtempSync(join(tmpdir(), 'sendas-holder-'));
    dirs.push(dir);
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    const file = join(dir, 'relay.yaml');
    writeFileSync(file, text);
    const counter = { loads: 0 };
    const holder = new ConfigHolder(await loadConfigFile(file), {
      load: (f) => {
        counter.loads++;
        return loadConfigFile(f);
      },
    });
    const events: ConfigEvent[] = [];
    holder.subscribe((e) => events.push(e));
    return { dir, file, holder, events, counter };
  };

  it('parses again only when the file or a secret file changed, and tells subscribers what changed', async () => {
    const { dir, file, holder, events, counter } = await setup(YAML('{file: pw}'), { pw: 'one\n' });
    const first = holder.current;
    expect(holder.files).toEqual([file, join(dir, 'pw')]);

    writeFileSync(file, YAML('{file: pw}')); // same bytes: an editor saving without a change
    expect(await holder.reload('touch')).toBeUndefined();
    expect(counter.loads).toBe(0);

    writeFileSync(join(dir, 'pw'), 'two\n');
    const change = await holder.reload('file changed');
    expect(counter.loads).toBe(1);
    expect(change?.servers.changed).toEqual(['main']);
    expect(holder.current).not.toBe(first);
    expect(holder.current.version).not.toBe(first.version);
    expect(events).toEqual([{ type: 'applied', reason: 'file changed', previous: first, snapshot: holder.current, change, recovered: false }]);
  });

  it('keeps the last good snapshot on a broken file, marks a failure with the same problems as repeated, and recovers', async () => {
    const { file, holder, events } = await setup(YAML('pw-1'));
    const good = holder.current;
    writeFileSync(file, BROKEN);
    expect(await holder.reload('edit')).toBeUndefined();
    expect(holder.current).toBe(good);
    expect(holder.lastReloadError?.issues.map((i) => [i.path, i.line])).toEqual([['servers[0].securty', 5]]);
    writeFileSync(file, `${BROKEN}\n`); // other bytes, same problem at the same place
    await holder.reload('edit');
    writeFileSync(file, `#\n${BROKEN}`); // the problem moved a line: said again
    await holder.reload('edit');
    expect(events.map((e) => e.type === 'failed' && e.repeated)).toEqual([false, true, false]);
    expect(events.every((e) => e.type === 'failed' && e.serving === good)).toBe(true);

    writeFileSync(file, YAML('pw-1')); // back to what is being served
    await holder.reload('edit');
    expect(events.at(-1)).toEqual({ type: 'recovered', reason: 'edit', snapshot: good });
    expect(holder.lastReloadError).toBeUndefined();
    expect(holder.current).toBe(good);
  });

  it('sees the secret file a broken config names when it appears', async () => {
    const { dir, file, holder, events, counter } = await setup(YAML('pw-1'));
    writeFileSync(file, YAML('{file: secrets/pw}'));
    await holder.reload('edit');
    expect(holder.lastReloadError?.issues[0]?.message).toMatch(/cannot read secret file .*secrets\/pw \(no such file\)/);
    // the watcher is pointed at it too
    expect(holder.files).toEqual([file, join(dir, 'secrets/pw')]);

    mkdirSync(join(dir, 'secrets'));
    writeFileSync(join(dir, 'secrets/pw'), 'pw-2\n');
    const loads = counter.loads;
    const change = await holder.reload('file changed');
    expect(counter.loads).toBe(loads + 1);
    expect(change?.servers.changed).toEqual(['main']);
    expect(events.at(-1)).toMatchObject({ type: 'applied', recovered: true });
    expect(holder.current.secretFiles).toEqual([join(dir, 'secrets/pw')]);
  });

  it('apply() makes a snapshot current and stamps loadedAt', async () => {
    const { holder, events } = await setup(YAML('pw-1'));
    const before = holder.loadedAt;
    await new Promise((r) => setTimeout(r, 5));
    const next = await loadConfigFile(holder.current.file);
    holder.apply(next, 'api');
    expect(holder.current).toBe(next);
    expect(holder.loadedAt.getTime()).toBeGreaterThan(before.getTime());
    expect(events.map((e) => e.type)).toEqual(['applied']);
  });
});
