/**
 * The Redis of the `-cluster` variants: Debian's redis-server on a free loopback port, its own
 * directory, no persistence (as test/support/redis-server.ts), tracked so the harness stops it
 * however it exits.
 */
import type { ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { freePort, sleep, spawnTracked, stopChild } from './proc.js';

export interface BenchRedis {
  readonly url: string;
  stop(): Promise<void>;
}

export async function startBenchRedis(dir: string, timeoutMs = 10_000): Promise<BenchRedis> {
  const port = await freePort();
  const child: ChildProcess = spawnTracked('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning']);
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited (${child.exitCode}): ${output.trim()}`);
    const failed = await Promise.race([spawnError, sleep(0).then(() => undefined)]);
    if (failed) throw new Error(`redis-server could not start (${failed.message}): the -cluster variants need Debian's redis-server`);
    if (await answersPing(port)) break;
    if (performance.now() > deadline) throw new Error(`redis-server did not answer on ${port} within ${timeoutMs} ms: ${output.trim()}`);
    await sleep(25);
  }
  return { url: `redis://127.0.0.1:${port}`, stop: () => stopChild(child) };
}

function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    const done = (ok: boolean) => {
      socket.removeAllListeners();
      socket.on('error', () => undefined);
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (d: Buffer) => {
      reply += d.toString('latin1');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
    socket.once('error', () => done(false));
  });
}
