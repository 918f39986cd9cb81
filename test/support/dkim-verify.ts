import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * DKIM verification by python3-dkim (Debian's dkimpy), independent of sendas and of mailauth:
 * the message on stdin, the DNS records given directly (dkim_verify.py). `.ci/run` installs the
 * package when `python3 -c 'import dkim'` fails.
 */

const SCRIPT = fileURLToPath(new URL('./dkim_verify.py', import.meta.url));

/** The python that has the dkim module: python3 on PATH, or Debian's own when PATH's (pyenv) lacks it. */
export const DKIM_PYTHON = ['python3', '/usr/bin/python3'].find((py) => spawnSync(py, ['-c', 'import dkim'], { stdio: 'ignore' }).status === 0);

export interface DkimVerdict {
  readonly ok: boolean;
  /** DKIM-Signature fields in the message's header section. */
  readonly signatures: number;
  readonly d?: string;
  readonly s?: string;
  readonly a?: string;
  readonly h?: string;
  readonly c?: string;
  readonly error?: string;
  /** The record names dkimpy looked up. */
  readonly asked: string[];
}

/** `records`: "selector._domainkey.domain" → the TXT record's text. */
export function verifyDkim(message: Buffer, records: Record<string, string>): Promise<DkimVerdict> {
  if (!DKIM_PYTHON) throw new Error('python3-dkim is not installed (apt-get install python3-dkim)');
  return new Promise((resolve, reject) => {
    const child = spawn(DKIM_PYTHON, [SCRIPT, JSON.stringify(records)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        resolve(JSON.parse(out) as DkimVerdict);
      } catch {
        reject(new Error(`dkim_verify.py exited ${code}: ${err || out}`));
      }
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(message);
  });
}
