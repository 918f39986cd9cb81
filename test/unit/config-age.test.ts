import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptTo, newIdentityFile } from '../../src/config/age.js';
import { decryptSecrets } from '../../src/config/decrypt.js';
import { ConfigHolder, type ConfigEvent } from '../../src/config/holder.js';
import { ConfigError, loadConfigFile, loadConfigText, parseConfig } from '../../src/config/load.js';
import { parseYaml } from '../../src/config/yaml.js';
import { resolveSecrets } from '../../src/config/secret-refs.js';
import { accountFor, type Account } from '../../src/config/account.js';
import { silentLogger } from '../../src/log.js';
import { refreshTokenFile, saveLoginRefreshToken, TokenProvider } from '../../src/oauth/tokens.js';

/** {age: …} secrets: every secret place, the key's places, what `check` says, reloads, and refresh tokens in state_dir. */

const dir = mkdtempSync(join(tmpdir(), 'sendas-age-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Distinctive values, so a leak into any output is visible. */
const SECRETS = { server: 'srv-Qv71-secret', support: 'sup-Lm28-secret', alice: 'ali-Tz93-secret', crm: 'crm-Pw55-secret', token: 'http-Hb40-secret', app: 'app-Xc17-secret', rt: 'rt-Nd62-secret' };

let keyFile: string;
let otherKeyFile: string;
let recipient: string;
let otherRecipient: string;
const ct: Record<string, string> = {};

/** `{age: "…"}`, what `sendas secret encrypt` prints: one line, any indentation. */
const flow = (armored: string) => `{age: ${JSON.stringify(armored)}}`;
/** The block form: a literal scalar under `age:`, indented to sit under a key at `col`. */
const block = (armored: string, col: number) => `\n${' '.repeat(col + 2)}age: |\n${armored.trimEnd().split('\n').map((l) => `${' '.repeat(col + 4)}${l}`).join('\n')}`;

beforeAll(async () => {
  const one = await newIdentityFile(new Date());
  const two = await newIdentityFile(new Date());
  keyFile = join(dir, 'sendas.agekey');
  otherKeyFile = join(dir, 'other.agekey');
  writeFileSync(keyFile, one.text, { mode: 0o600 });
  writeFileSync(otherKeyFile, two.text, { mode: 0o600 });
  recipient = one.recipient;
  otherRecipient = two.recipient;
  for (const [k, v] of Object.entries(SECRETS)) ct[k] = await encryptTo(recipient, v);
});

const config = (keyLine = `secrets:\n  key_file: ${keyFile}\n`) => `${keyLine}clients:
  - username: crm
    password: ${flow(ct.crm!)}
http:
  token:${block(ct.token!, 2)}
servers:
  - name: main
    default: true
    host: smtp.acme.example
    username: relay@acme.example
    password:${block(ct.server!, 4)}
  - name: m365
    host: smtp.office365.com
    auth: xoauth2
    username: app@acme.example
    oauth:
      client_id: app
      client_secret: ${flow(ct.app!)}
      grant: refresh_token
      token_url: https://login.acme.example/token
      refresh_token: ${flow(ct.rt!)}
channels:
  - name: support
    address: support@acme.example
    override:
      password: ${flow(ct.support!)}
agents:
  - name: alice
    address: alice@acme.example
    override:
      password:${block(ct.alice!, 6)}
`;

const load = (text: string, env: NodeJS.ProcessEnv = {}) => loadConfigText(text, join(dir, 'relay.yaml'), { env });
const failure = async (text: string, env: NodeJS.ProcessEnv = {}): Promise<ConfigError> => {
  const err = await load(text, env).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return err as ConfigError;
};
const expectNoSecrets = (text: string) => {
  for (const v of Object.values(SECRETS)) expect(text).not.toContain(v);
};

describe('{age: …} secrets', () => {
  it('open at every secret place, in the flow form sendas secret encrypt prints and as a block scalar', async () => {
    const s = await load(config());
    expect(s.clients[0]!.password.reveal()).toBe(SECRETS.crm);
    expect(s.servers[0]!.password?.reveal()).toBe(SECRETS.server);
    expect(s.servers[1]!.oauth?.clientSecret?.reveal()).toBe(SECRETS.app);
    expect(s.servers[1]!.oauth?.refreshToken?.reveal()).toBe(SECRETS.rt);
    expect(s.identitiesByName.get('support')!.override?.password?.reveal()).toBe(SECRETS.support);
    expect(s.identitiesByName.get('alice')!.override?.password?.reveal()).toBe(SECRETS.alice);
    expect(s.http && s.http.token?.reveal()).toBe(SECRETS.token);
    expect(s.servers[0]!.password?.source).toBe(`age, key ${keyFile}`);
    // the key file is watched like a secret file; the snapshot knows the recipient state_dir files are encrypted to
    expect(s.secretFiles).toContain(keyFile);
    expect(s.secretKey?.recipient).toBe(recipient);
    expectNoSecrets(JSON.stringify(s) + inspect(s, { depth: 10 }));
  });

  it('open the same at every row of config/secret-refs.ts, listener certificate and key and server CA included', async () => {
    const text = `listen:\n  cert: ${flow(ct.server!)}\n  key: ${flow(ct.support!)}\nservers:\n  - name: main\n    tls:\n      ca: ${flow(ct.alice!)}\n`;
    const yaml = parseYaml(text);
    const raw = yaml.value as Record<string, unknown>;
    const decryption = await decryptSecrets(raw, dir, { SENDAS_SECRET_KEY_FILE: keyFile });
    const refs = resolveSecrets(raw, dir, {}, () => undefined, decryption.values);
    expect(refs.map((r) => [r.path, r.source.type, r.secret?.reveal()])).toEqual([
      ['servers[0].tls.ca', 'age', SECRETS.alice],
      ['listen.cert', 'age', SECRETS.server],
      ['listen.key', 'age', SECRETS.support],
    ]);
  });

  it('survive any YAML string style: a folded scalar and a quoted string over several lines', async () => {
    const folded = `servers:\n  - name: main\n    host: h\n    username: u@acme.example\n    password:\n      age: >\n${ct.server!.trimEnd().split('\n').map((l) => `        ${l}`).join('\n')}\n`;
    const s = await load(`secrets: {key_file: ${keyFile}}\n${folded}`);
    expect(s.servers[0]!.password?.reveal()).toBe(SECRETS.server);
  });

  it('with the wrong key, name every secret that does not open, with its line, and no plaintext', async () => {
    const err = await failure(config(`secrets:\n  key_file: ${otherKeyFile}\n`));
    const lines = err.message.split('\n').slice(1).map((l) => l.trim());
    const why = `cannot decrypt with the key in ${otherKeyFile} (age: no identity matched any of the file's recipients)`;
    expect(err.issues.map((i) => i.path)).toEqual([
      'clients[0].password',
      'http.token',
      'servers[0].password',
      'servers[1].oauth.client_secret',
      'servers[1].oauth.refresh_token',
      'channels[0].override.password',
      'agents[0].override.password',
    ]);
    expect(err.issues.every((i) => i.message === why && typeof i.line === 'number')).toBe(true);
    expect(lines[0]).toBe(`${join(dir, 'relay.yaml')}:5:15 clients[0].password: ${why}`);
    expectNoSecrets(err.message + JSON.stringify(err.issues));
  });

  it('with no key configured, say how to configure one', async () => {
    const err = await failure(config(''));
    expect(err.issues).toHaveLength(7);
    expect(err.issues[0]!.message).toBe(
      'is encrypted, but no key is configured: set secrets.key_file in the config (or SENDAS_SECRET_KEY_FILE) to the age identity file it was encrypted for; `sendas secret keygen --out FILE` makes one',
    );
  });

  it('report a key file that cannot be read at secrets.key_file, or at the variable that named it', async () => {
    const missing = join(dir, 'nope.agekey');
    const err = await failure(config(`secrets:\n  key_file: nope.agekey\n`));
    expect(err.issues[0]).toEqual({ path: 'secrets.key_file', line: 2, col: 13, message: `cannot read the key file ${missing} (no such file)` });
    expect(err.issues[1]!.message).toBe(`cannot decrypt: the key in ${missing} is not usable (see secrets.key_file)`);
    expect(err.secretFiles).toContain(missing);

    writeFileSync(join(dir, 'junk.agekey'), 'not a key\n');
    const env = await failure(config(''), { SENDAS_SECRET_KEY_FILE: join(dir, 'junk.agekey') });
    expect(env.issues.at(-1)).toEqual({
      path: '',
      line: undefined,
      col: undefined,
      message: `SENDAS_SECRET_KEY_FILE: the key file ${join(dir, 'junk.agekey')} is not usable: line 1 of its identities is not an age identity (AGE-SECRET-KEY-1…)`,
    });
    expectNoSecrets(env.message);
  });

  it('take the key from secrets.key_file first, then SENDAS_SECRET_KEY_FILE, then SENDAS_SECRET_KEY (the identity itself)', async () => {
    // the YAML says which file: a variable naming another key does not override it
    const both = await load(config(), { SENDAS_SECRET_KEY_FILE: otherKeyFile });
    expect(both.secretKey?.recipient).toBe(recipient);
    expect(both.warnings).toContainEqual({ path: 'secrets.key_file', message: `SENDAS_SECRET_KEY_FILE names ${otherKeyFile}, but secrets.key_file (${keyFile}) is used: the config file wins` });
    expect((await load(config(''), { SENDAS_SECRET_KEY_FILE: keyFile })).secretKey?.where).toBe(keyFile);
    const identity = readFileSync(keyFile, 'utf8');
    const s = await load(config(''), { SENDAS_SECRET_KEY: identity });
    expect(s.secretKey?.where).toBe('SENDAS_SECRET_KEY');
    expect(s.servers[0]!.password?.reveal()).toBe(SECRETS.server);
    expect(s.secretFiles).not.toContain(keyFile);
  });

  it('try every identity of the key file: an old key kept below the new one still opens what was encrypted to it', async () => {
    const both = join(dir, 'both.agekey');
    writeFileSync(both, `${readFileSync(otherKeyFile, 'utf8')}${readFileSync(keyFile, 'utf8')}`);
    const s = await load(config(`secrets: {key_file: ${both}}\n`));
    expect(s.servers[0]!.password?.reveal()).toBe(SECRETS.server);
    // new state_dir files go to the first identity's recipient
    expect(s.secretKey?.recipient).toBe(otherRecipient);
  });

  it('refuse a ciphertext pasted as a plain string, which would otherwise be sent as the password', async () => {
    const err = await failure(`servers:\n  - name: main\n    host: h\n    username: u@acme.example\n    password: |\n${ct.server!.split('\n').map((l) => `      ${l}`).join('\n')}\n`);
    expect(err.issues.map((i) => [i.path, i.message])).toEqual([['servers[0].password', 'is an age ciphertext written as a plain string: write it as {age: …} (what `sendas secret encrypt` prints) so it is decrypted']]);
  });

  it('name a damaged ciphertext as such', async () => {
    const err = await failure(`secrets: {key_file: ${keyFile}}\nservers:\n  - name: main\n    host: h\n    username: u@acme.example\n    password: {age: "-----BEGIN AGE ENCRYPTED FILE-----\\nbm9wZQ==\\n-----END AGE ENCRYPTED FILE-----\\n"}\n`);
    expect(err.issues[0]!.message).toMatch(/^is not an age ciphertext, or it was damaged \(age: .+\)$/);
  });

  it('are reported by the synchronous parser when nobody decrypted them (a caller that should use loadConfigText)', () => {
    expect(() => parseConfig(config(), join(dir, 'relay.yaml'), { env: {} })).toThrow('is encrypted, and this reader does not decrypt');
  });
});

describe('reloading a config with {age: …} secrets', () => {
  it('keeps the old snapshot when a ciphertext no longer opens, reloads when the key file changes, and applies in order', async () => {
    const sub = join(dir, 'reload');
    mkdirSync(sub);
    const file = join(sub, 'relay.yaml');
    writeFileSync(file, config());
    const holder = new ConfigHolder(await loadConfigFile(file, { env: {} }), { load: (f) => loadConfigFile(f, { env: {} }) });
    const events: ConfigEvent[] = [];
    holder.subscribe((e) => events.push(e));
    const good = holder.current;
    expect(holder.files).toContain(keyFile);

    // the same password encrypted to a key the relay does not have
    const foreign = await encryptTo(otherRecipient, SECRETS.support);
    const broken = config().replace(flow(ct.support!), flow(foreign));
    writeFileSync(file, broken);
    expect(await holder.reload('edit')).toBeUndefined();
    expect(holder.current).toBe(good);
    expect(events.map((e) => e.type)).toEqual(['failed']);
    expect(holder.lastReloadError?.issues.map((i) => [i.path, i.line])).toEqual([['channels[0].override.password', broken.split('\n').findIndex((l) => l.includes(foreign.slice(0, 80).replace(/\n/g, '\\n'))) + 1]]);
    expect(good.identitiesByName.get('support')!.override?.password?.reveal()).toBe(SECRETS.support);

    // a new password, encrypted to the right key: applied; two reloads asked at once run one after the other
    const rotated = await encryptTo(recipient, 'sup-new-secret');
    writeFileSync(file, config().replace(flow(ct.support!), flow(rotated)));
    const [first, second] = await Promise.all([holder.reload('a'), holder.reload('b')]);
    expect(first?.channels.changed).toEqual(['support']);
    expect(second).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(['failed', 'applied']);
    expect(holder.current.identitiesByName.get('support')!.override?.password?.reveal()).toBe('sup-new-secret');

    // the key file rewritten with another key (the YAML untouched): a reload that fails, and keeps serving
    const before = holder.current;
    writeFileSync(keyFile + '.bak', readFileSync(keyFile));
    writeFileSync(keyFile, readFileSync(otherKeyFile));
    try {
      await holder.reload('key rotated');
      expect(holder.current).toBe(before);
      expect(events.at(-1)?.type).toBe('failed');
    } finally {
      writeFileSync(keyFile, readFileSync(keyFile + '.bak'));
    }
  });
});

describe('refresh tokens in state_dir with a key configured', () => {
  const yaml = (key: string) => `${key}servers:
  - name: m365
    host: smtp.contoso.example
    auth: xoauth2
    username: relay@contoso.example
    oauth:
      client_id: app
      grant: refresh_token
      token_url: https://login.contoso.example/token
`;
  const setup = async (withKey: boolean) => {
    const snapshot = await load(yaml(withKey ? `secrets: {key_file: ${keyFile}}\n` : ''));
    const account = accountFor(snapshot, undefined) as Account;
    const stateDir = mkdtempSync(join(dir, 'state-'));
    let n = 0;
    const bodies: URLSearchParams[] = [];
    const fetch = (async (_url: string | URL | Request, init?: RequestInit) => {
      bodies.push(new URLSearchParams(String(init?.body)));
      n++;
      return new Response(JSON.stringify({ access_token: `at-${n}`, expires_in: 1, refresh_token: `rt-rotated-${n}-secret` }), { status: 200, headers: { 'content-type': 'application/json' } });
    }) as typeof globalThis.fetch;
    const tokens = new TokenProvider({ stateDir: () => stateDir, logger: silentLogger(), fetch, secretKey: () => snapshot.secretKey });
    return { snapshot, account, stateDir, tokens, bodies, file: refreshTokenFile(stateDir, account) };
  };

  it('are written encrypted to the key (0600), read back, and rotated encrypted again', async () => {
    const { snapshot, account, stateDir, tokens, bodies, file } = await setup(true);
    await saveLoginRefreshToken(stateDir, account, 'rt-login-secret', Date.now, snapshot.secretKey);
    const written = readFileSync(file, 'utf8');
    expect(written).not.toContain('rt-login-secret');
    expect(JSON.parse(written).refresh_token.age).toMatch(/^-----BEGIN AGE ENCRYPTED FILE-----\n/);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    await tokens.get(account);
    expect(bodies[0]!.get('refresh_token')).toBe('rt-login-secret');
    const rotated = readFileSync(file, 'utf8');
    expect(rotated).not.toContain('rt-rotated-1-secret');
    await tokens.get(account, true);
    expect(bodies[1]!.get('refresh_token')).toBe('rt-rotated-1-secret');
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('read a plain file from before the key, and encrypt it at once', async () => {
    const plain = await setup(false);
    await saveLoginRefreshToken(plain.stateDir, plain.account, 'rt-plain-secret');
    expect(readFileSync(plain.file, 'utf8')).toContain('rt-plain-secret');

    const bodies: URLSearchParams[] = [];
    // the same state directory, now read by a relay with the key
    const snapshot = await load(yaml(`secrets: {key_file: ${keyFile}}\n`));
    const relayTokens = new TokenProvider({
      stateDir: () => plain.stateDir,
      logger: silentLogger(),
      fetch: (async (_u: string | URL | Request, init?: RequestInit) => {
        bodies.push(new URLSearchParams(String(init?.body)));
        return new Response(JSON.stringify({ access_token: 'at', expires_in: 3600 }), { status: 200, headers: { 'content-type': 'application/json' } });
      }) as typeof fetch,
      secretKey: () => snapshot.secretKey,
    });
    await relayTokens.get(plain.account);
    expect(bodies.at(-1)!.get('refresh_token')).toBe('rt-plain-secret');
    const migrated = readFileSync(plain.file, 'utf8');
    expect(migrated).not.toContain('rt-plain-secret');
    expect(JSON.parse(migrated).refresh_token.age).toMatch(/^-----BEGIN AGE ENCRYPTED FILE-----/);
    expect(statSync(plain.file).mode & 0o777).toBe(0o600);
  });

  it('say which file cannot be read when the key is gone, without the token', async () => {
    const { snapshot, account, stateDir, file } = await setup(true);
    await saveLoginRefreshToken(stateDir, account, 'rt-sealed-secret', Date.now, snapshot.secretKey);
    const keyless = new TokenProvider({ stateDir: () => stateDir, logger: silentLogger(), fetch: (() => Promise.reject(new Error('no request expected'))) as typeof fetch });
    const err = await keyless.get(account).then(
      () => undefined,
      (e: Error & { fix?: string }) => e,
    );
    expect(err?.message).toBe(`The stored OAuth refresh token ${file} of account relay@contoso.example cannot be read: it is encrypted, and no key is configured (secrets.key_file or SENDAS_SECRET_KEY_FILE)`);
    expect(String(err?.message) + String(err?.fix)).not.toContain('rt-sealed-secret');
  });
});
