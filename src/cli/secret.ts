import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { encryptTo, isRecipient, newIdentityFile } from '../config/age.js';
import { isRecord } from '../config/raw.js';
import { KEY_FILE_ENV, keyPlaceOf, readSecretKey, type KeyPlace } from '../config/secret-key.js';
import { parseYaml } from '../config/yaml.js';
import { SECRET_USAGE } from './usage.js';

export interface SecretArgs {
  readonly sub: string | undefined;
  /** Anything after the subcommand: refused, a secret on the command line stays in shell history and `ps`. */
  readonly extra: readonly string[];
  readonly out: string | undefined;
  readonly recipient: string | undefined;
  readonly key: string | undefined;
  /** --config or SENDAS_CONFIG, when given: where the default key is named. */
  readonly config: string | undefined;
}

export interface SecretIo {
  readonly stdin: NodeJS.ReadStream;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly env: NodeJS.ProcessEnv;
}

/** `sendas secret …`: the key and the ciphertexts of relay.yaml's {age: …} secrets. Never takes a secret from argv. */
export async function secretCommand(args: SecretArgs, io: SecretIo): Promise<number> {
  const fail = (message: string, code = 1) => {
    io.stderr.write(`sendas secret${args.sub ? ` ${args.sub}` : ''}: ${message}\n`);
    return code;
  };
  if (args.extra.length > 0) return fail('takes no value on the command line (it would stay in the shell history and show in ps): pipe it in, or type it at the prompt', 2);
  switch (args.sub) {
    case 'keygen': {
      const place = args.out ? undefined : configuredPlace(args.config, io.env);
      const out = args.out ? resolve(args.out) : place?.file;
      if (!out) return fail(`pass --out FILE (no secrets.key_file in the config and no ${KEY_FILE_ENV} to write to)`, 2);
      const { text, recipient } = await newIdentityFile(new Date());
      try {
        // wx: an existing key may be the only one that opens the secrets already encrypted to it
        await writeFile(out, text, { mode: 0o600, flag: 'wx' });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        return fail(code === 'EEXIST' ? `${out} exists; not overwriting a key (move it away first if you mean to replace it)` : `cannot write ${out} (${code})`);
      }
      io.stderr.write(`wrote the age key ${out} (mode 0600); its recipient, for \`sendas secret encrypt --recipient\` and \`age -r\`:\n`);
      io.stdout.write(`${recipient}\n`);
      return 0;
    }
    case 'encrypt': {
      if (args.recipient !== undefined && args.key !== undefined) return fail('pass --recipient or --key, not both', 2);
      let recipient = args.recipient;
      if (recipient !== undefined && !isRecipient(recipient)) return fail(`"${recipient.slice(0, 80)}" is not an age X25519 recipient (age1…)`, 2);
      if (recipient === undefined) {
        const place: KeyPlace | undefined = args.key ? { setBy: KEY_FILE_ENV, file: resolve(args.key) } : configuredPlace(args.config, io.env);
        if (!place) return fail(`no key: pass --recipient age1… or --key FILE, or name the key in the config (secrets.key_file) or ${KEY_FILE_ENV}`, 2);
        try {
          recipient = (await readSecretKey(place, io.env)).recipient;
        } catch (err) {
          return fail((err as Error).message);
        }
      }
      const value = await readValue(io);
      if (value === undefined) return fail('no value: nothing was typed or piped in');
      const armored = await encryptTo(recipient, value);
      // a JSON string is a YAML double-quoted string: one line that pastes at any indentation
      io.stdout.write(`{age: ${JSON.stringify(armored)}}\n`);
      if (io.stdin.isTTY) io.stderr.write(`encrypted to ${recipient}; paste the line above after password: (or any secret key)\n`);
      return 0;
    }
    default:
      return fail(`unknown subcommand "${args.sub ?? ''}"; use keygen or encrypt\n${SECRET_USAGE}`, 2);
  }
}

/** The key the config (or else the environment) names, read without validating the rest of the config. */
function configuredPlace(config: string | undefined, env: NodeJS.ProcessEnv): KeyPlace | undefined {
  let raw: Record<string, unknown> = {};
  let base = process.cwd();
  if (config) {
    try {
      const value = parseYaml(readFileSync(config, 'utf8')).value;
      if (isRecord(value)) raw = value;
      base = dirname(resolve(config));
    } catch {
      // an unreadable config names no key; the environment still may
    }
  }
  // SENDAS_SECRET_KEY (the identity itself) serves encrypt; keygen, with no file to write, asks for --out
  return keyPlaceOf(raw, base, env);
}

/** The value from a pipe (one trailing newline dropped), or typed twice at a prompt that does not echo. */
async function readValue(io: SecretIo): Promise<string | undefined> {
  if (!io.stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const chunk of io.stdin) chunks.push(chunk as Buffer);
    const value = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    return value === '' ? undefined : value;
  }
  const first = await prompt(io, 'secret (not shown): ');
  if (!first) return undefined;
  const again = await prompt(io, 'again, to be sure: ');
  if (again !== first) {
    io.stderr.write('the two entries differ; nothing encrypted\n');
    return undefined;
  }
  return first;
}

function prompt(io: SecretIo, question: string): Promise<string | undefined> {
  const { stdin, stderr } = io;
  // raw (no echo) before the question shows: what is typed as soon as it shows is not echoed either
  stdin.setRawMode(true);
  stderr.write(question);
  return new Promise((done) => {
    let value = '';
    const finish = (result: string | undefined) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      stderr.write('\n');
      done(result);
    };
    const onData = (data: Buffer) => {
      for (const ch of data.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return finish(value);
        if (ch === '\u0003' || ch === '\u0004') return finish(undefined); // Ctrl-C, Ctrl-D
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.resume();
    stdin.on('data', onData);
  });
}
