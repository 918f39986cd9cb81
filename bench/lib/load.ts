/**
 * Load generators behind one interface: Postfix's smtp-source (the real benchmark, as the issue
 * prescribes: `smtp-source -s 20 -m 5000 -l 2000`), or the harness's own Node client (the smoke
 * test, and the latency pass, which needs per-message timings smtp-source can't give).
 */
import { sendMessages, type SendOptions } from './smtp-client.js';
import { spawnTracked } from './proc.js';

export interface LoadResult {
  generator: 'smtp-source' | 'node';
  startedAt: number;
  /** the first 250 after DATA (smtp-source: its -c counter's first tick) */
  firstAcceptAt: number | undefined;
  lastAcceptAt: number | undefined;
  accepted: number;
  failures: string[];
  /** only from the Node client */
  latencies?: { greetingMs: number[]; transactionMs: number[]; acceptMs: number[] };
}

export type LoadGenerator = (opts: SendOptions) => Promise<LoadResult>;

export const nodeLoad: LoadGenerator = async (opts) => {
  const r = await sendMessages(opts);
  return {
    generator: 'node',
    startedAt: r.startedAt,
    firstAcceptAt: r.firstAcceptAt,
    lastAcceptAt: r.lastAcceptAt,
    accepted: r.accepted,
    failures: r.failures,
    latencies: { greetingMs: r.greetingMs, transactionMs: r.transactionMs, acceptMs: r.acceptMs },
  };
};

/**
 * smtp-source -c prints a running count ("N\r") each time DATA completes: its first tick is the
 * first accept, its last the last one. Without -A it stops at the first unexpected reply, and
 * says why on stderr.
 */
export const smtpSourceLoad: LoadGenerator = async (opts) => {
  const args = ['-c', '-s', String(opts.sessions), '-m', String(opts.count), '-l', String(opts.size), '-f', opts.from, '-t', opts.to, '-M', 'bench.example'];
  if (opts.reuse) args.push('-d');
  args.push(`127.0.0.1:${opts.port}`);
  const startedAt = performance.now();
  const child = spawnTracked('smtp-source', args);
  let firstAcceptAt: number | undefined;
  let lastAcceptAt: number | undefined;
  let accepted = 0;
  let stderr = '';
  let tail = '';
  child.stdout!.on('data', (d: Buffer) => {
    const at = performance.now();
    tail = (tail + d.toString('latin1')).slice(-64);
    const all = [...tail.matchAll(/(\d+)\r/g)];
    const last = all[all.length - 1];
    if (last && Number(last[1]) > accepted) {
      accepted = Number(last[1]);
      firstAcceptAt ??= at;
      lastAcceptAt = at;
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 300_000);
  // 'close', not 'exit': the last counter tick may still be in the pipe when the process exits
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(timer);
  const failures = code === 0 ? [] : [`smtp-source exited with ${code}: ${stderr.trim().slice(0, 500)}`];
  return { generator: 'smtp-source', startedAt, firstAcceptAt, lastAcceptAt, accepted, failures };
};
