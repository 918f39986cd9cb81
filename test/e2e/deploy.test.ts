/**
 * The deployment files as written: the Dockerfile's runtime with README's `docker run`, compose.yaml,
 * the packed tarball installed globally, the systemd unit. There is no Docker engine here, so the
 * image is rebuilt the way the Dockerfile says (its COPY and RUN steps, in a private mount and
 * network namespace over an overlay of this machine's root) and run with exactly its USER,
 * WORKDIR, ENV, ENTRYPOINT and CMD plus README's mounts and variables.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../../src/config/load.js';
import { envOf, envReferences, jsonArray, last, parseDockerRun, runtimeStage, section, shellCommands, words, type DockerRun } from '../support/deploy-files.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const read = (path: string) => readFileSync(join(REPO, path), 'utf8');
const README = read('README.md');
const EXAMPLE = read('config/relay.example.yaml');
const stage = runtimeStage(read('Dockerfile'));
const IMAGE_ENV = envOf(stage);
const DOCKER_SECTION = section(README, '## Running in Docker');
const COMMANDS = shellCommands(DOCKER_SECTION);
const RUN_LINE = COMMANDS.find((c) => c.startsWith('docker run -d'));
const RUN: DockerRun = parseDockerRun(RUN_LINE ?? 'docker run missing');
/** The test's value for each variable the docker run line passes from the shell. */
const testValue = (name: string) => `test-${name.toLowerCase().replace(/_/g, '-')}-value`;

/** Whether this machine lets root make mount and network namespaces (a container may not). */
const CAN_UNSHARE = spawnSync('unshare', ['--mount', '--net', 'true']).status === 0 && spawnSync('ip', ['-V']).status === 0;

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

describe('README and the Dockerfile agree', () => {
  it('README has one docker run line for the image the build tags, with the default command', () => {
    expect(RUN_LINE).toBeDefined();
    const build = COMMANDS.find((c) => c.startsWith('docker build'))!;
    expect(words(build)).toEqual(['docker', 'build', '-t', RUN.image, '.']);
    expect(RUN.command).toEqual([]);
    expect(jsonArray(last(stage, 'CMD')!)).toEqual(['serve']);
  });

  it('every {env: X} of the example is passed by docker run, and docker run passes nothing else', () => {
    expect(RUN.env.map((e) => e.name).sort()).toEqual(envReferences(EXAMPLE));
    // values come from the shell (-e NAME), never written into the command
    expect(RUN.env.filter((e) => e.value !== undefined)).toEqual([]);
    // README's list in words is the same list
    for (const name of envReferences(EXAMPLE)) expect(DOCKER_SECTION).toContain(`\`${name}\``);
  });

  it('the config directory is mounted read-only where SENDAS_CONFIG points, and each image volume gets a named volume', () => {
    const configDir = posix.dirname(IMAGE_ENV.SENDAS_CONFIG!);
    expect(RUN.volumes).toContainEqual(expect.objectContaining({ target: configDir, readOnly: true, named: false }));
    expect(RUN.volumes.some((v) => v.target === IMAGE_ENV.SENDAS_CONFIG)).toBe(false);
    const declared = jsonArray(last(stage, 'VOLUME')!);
    expect(declared.sort()).toEqual([IMAGE_ENV.SENDAS_QUEUE_DIR, IMAGE_ENV.SENDAS_STATE_DIR].sort());
    for (const dir of declared) expect(RUN.volumes).toContainEqual(expect.objectContaining({ target: dir, named: true, readOnly: false }));
    // README copies the example into the host side of the config mount, under SENDAS_CONFIG's name
    const copy = COMMANDS.map(words).find((w) => w.includes('cp'))!;
    const host = RUN.volumes.find((v) => v.target === configDir)!.source;
    expect(copy.slice(-2)).toEqual(['config/relay.example.yaml', posix.join(host, posix.basename(IMAGE_ENV.SENDAS_CONFIG!))]);
  });

  it('every published port is exposed and is a listener or the monitoring port of the example, and every one of those is published', () => {
    const env = Object.fromEntries(envReferences(EXAMPLE).map((n) => [n, testValue(n)]));
    const s = parseConfig(EXAMPLE.replace('/run/secrets/support', join(REPO, 'package.json')), join(REPO, 'config/relay.yaml'), { env });
    const ports = [...s.listeners.map((l) => l.port), ...(s.http ? [s.http.port] : [])].sort();
    const exposed = last(stage, 'EXPOSE')!.split(/\s+/).map(Number).sort();
    expect(RUN.publish.map((p) => p.container).sort()).toEqual(ports);
    expect(exposed).toEqual(ports);
    // reachable through -p only on every interface of the container, and then with a token
    for (const l of s.listeners) expect(l.host).toBe('0.0.0.0');
    expect(s.http && s.http.host).toBe('0.0.0.0');
    expect(s.http && s.http.token).toBeDefined();
    // the HEALTHCHECK asks the monitoring port over loopback, which 0.0.0.0 includes
    const health = /CMD\s+(\[.*\])$/s.exec(last(stage, 'HEALTHCHECK')!)![1]!;
    expect(jsonArray(health).join(' ')).toContain(`http://127.0.0.1:${s.http && s.http.port}/healthz`);
  });

  it('the Dockerfile header shows the same docker run as README', () => {
    const header = read('Dockerfile')
      .split('\n')
      .filter((l) => l.startsWith('#   '))
      .map((l) => l.slice(4))
      .join('\n')
      .replace(/\\\n/g, ' ');
    const run = header.split('\n').find((l) => l.startsWith('docker run'))!;
    const h = parseDockerRun(run);
    // the header leaves out what README explains (--restart); what it shows must match
    expect({ ...h, volumes: [...h.volumes].sort((a, b) => a.target.localeCompare(b.target)) }).toEqual({ ...RUN, volumes: [...RUN.volumes].sort((a, b) => a.target.localeCompare(b.target)) });
  });
});

/**
 * The image rebuilt from the Dockerfile's steps (COPY as copies from this tree, `npm ci` replaced by
 * this tree's node_modules, every other RUN run as written, as root, in the new root), then
 * README's mounts and the ENTRYPOINT with CMD as USER from WORKDIR with ENV and docker run's -e.
 */
function containerScript(work: string, hostRoot: string, volumesDir: string): string {
  const M = join(work, 'ns/merged');
  const lines = [
    'set -eu',
    `mount -t tmpfs tmpfs ${q(join(work, 'ns'))}`,
    `mkdir ${q(join(work, 'ns/upper'))} ${q(join(work, 'ns/work'))} ${q(M)}`,
    `mount -t overlay overlay -o lowerdir=/,upperdir=${join(work, 'ns/upper')},workdir=${join(work, 'ns/work')} ${q(M)}`,
    `mount -t proc proc ${q(`${M}/proc`)}`,
    `mount --rbind /dev ${q(`${M}/dev`)}`,
    `mount -t tmpfs tmpfs ${q(`${M}/tmp`)}`,
    `mount -t tmpfs tmpfs ${q(`${M}/run`)}`,
    'ip link set lo up',
  ];
  let workdir = '/';
  for (const i of stage) {
    if (i.op === 'WORKDIR') {
      workdir = posix.resolve(workdir, i.args);
      lines.push(`mkdir -p ${q(M + workdir)}`);
    } else if (i.op === 'COPY') {
      const w = words(i.args);
      const from = w.find((x) => x.startsWith('--from='));
      const [dest, ...sources] = w.filter((x) => !x.startsWith('--')).reverse();
      for (const src of sources.reverse()) {
        // the build stage compiles this tree in /app: its /app/X is this tree's X (built by tsc)
        const local = from ? join(REPO, posix.relative('/app', src)) : join(REPO, src);
        const target = dest!.endsWith('/') ? posix.join(posix.resolve(workdir, dest!), posix.basename(src)) : posix.resolve(workdir, dest!);
        lines.push(`cp -r ${q(local)} ${q(M + target)}`);
      }
    } else if (i.op === 'RUN') {
      if (/^npm ci\b/.test(i.args)) {
        // bound, not linked: a checkout under /tmp would be hidden by the container's own /tmp
        const modules = `${M}${workdir}/node_modules`;
        lines.push(`mkdir -p ${q(modules)}`, `mount --bind ${q(realpathSync(join(REPO, 'node_modules')))} ${q(modules)}`, `mount -o remount,bind,ro ${q(modules)}`);
      }
      else lines.push(`chroot ${q(M)} /bin/sh -c ${q(`cd ${workdir} && ${i.args}`)}`);
    }
  }
  const user = last(stage, 'USER')!;
  const asUser = `setpriv --reuid=${user} --regid=${user} --init-groups`;
  for (const v of RUN.volumes) {
    const target = M + v.target;
    if (v.named) {
      // a new named volume starts as a copy of the image's directory, owner and mode included
      const vol = join(volumesDir, v.source);
      lines.push(`mkdir -p ${q(vol)}`, `cp -a ${q(`${target}/.`)} ${q(vol)}`, `chown --reference=${q(target)} ${q(vol)}`, `chmod --reference=${q(target)} ${q(vol)}`, `mount --bind ${q(vol)} ${q(target)}`);
    } else {
      lines.push(`mkdir -p ${q(target)}`, `mount --bind ${q(hostRoot + v.source)} ${q(target)}`);
      if (v.readOnly) lines.push(`mount -o remount,bind,ro ${q(target)}`);
    }
  }
  // README: the secret files belong to the group of the image's user (docker run --entrypoint id … -g)
  lines.push(`gid=$(chroot ${q(M)} ${asUser} id -g)`, `chgrp -R "$gid" ${q(`${hostRoot}/srv/sendas/secrets`)}`);
  const env = containerEnv();
  const entry = [...jsonArray(last(stage, 'ENTRYPOINT')!), ...(RUN.command.length ? RUN.command : jsonArray(last(stage, 'CMD')!))];
  lines.push(`exec chroot ${q(M)} /bin/sh -c ${q(`cd ${workdir} && exec ${asUser} env -i ${Object.entries(env).map(([k, v]) => q(`${k}=${v}`)).join(' ')} ${entry.map(q).join(' ')}`)}`);
  return lines.join('\n');
}

/** What a process in the container sees: the image's ENV, docker's PATH and HOME, docker run's -e. */
function containerEnv(): Record<string, string> {
  return {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/nonexistent',
    HOSTNAME: 'sendas-test',
    ...IMAGE_ENV,
    ...Object.fromEntries(RUN.env.map((e) => [e.name, e.value ?? testValue(e.name)])),
  };
}

/** `docker exec` / the HEALTHCHECK: a command in the container's namespaces and root, as its user. */
function inContainer(pid: number, argv: string[]): { status: number | null; stdout: string; stderr: string } {
  const user = last(stage, 'USER')!;
  const env = Object.entries(containerEnv()).map(([k, v]) => `${k}=${v}`);
  const r = spawnSync('nsenter', ['-t', String(pid), '--mount', '--net', '--root', '--wd', 'setpriv', `--reuid=${user}`, `--regid=${user}`, '--init-groups', 'env', '-i', ...env, ...argv], { encoding: 'utf8', timeout: 15_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.skipIf(!CAN_UNSHARE)('the image as the Dockerfile builds it, run as README says', () => {
  let work: string;
  let hostRoot: string;
  let volumes: string;
  let child: ChildProcess;
  const lines: string[] = [];
  let exited: Promise<number | null>;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'sendas-image-'));
    hostRoot = join(work, 'host');
    volumes = join(work, 'volumes');
    mkdirSync(join(work, 'ns'));
    // README's preparation on the host: the config's directory with the example, the secrets directory
    for (const c of COMMANDS) {
      // the command a pipe ends in (printf … | sudo install … /dev/stdin FILE), without sudo
      const w = words(c.split(' | ').at(-1)!);
      const args = w[0] === 'sudo' ? w.slice(1) : w;
      if (args[0] === 'mkdir') mkdirSync(hostRoot + args.at(-1)!, { recursive: true });
      if (args[0] === 'cp') writeFileSync(hostRoot + args[2]!, readFileSync(join(REPO, args[1]!)));
      if (args[0] === 'install' && args.includes('/dev/stdin')) {
        writeFileSync(hostRoot + args.at(-1)!, 'test-support-mailbox-password');
        chmodSync(hostRoot + args.at(-1)!, Number.parseInt(args[args.indexOf('-m') + 1]!, 8));
      }
    }
    const script = join(work, 'container.sh');
    writeFileSync(script, containerScript(work, hostRoot, volumes));
    child = spawn('unshare', ['--mount', '--net', '--propagation', 'private', 'sh', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => lines.push(l));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no "sendas listening" within 30 s; stdout: ${lines.join('\n')}; stderr: ${stderr}`)), 30_000);
      rl.on('line', (l) => {
        if (l.includes('"sendas listening"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`the container exited with ${code}; stdout: ${lines.join('\n')}; stderr: ${stderr}`));
      });
    });
  }, 60_000);

  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('starts as the image user, with the queue and state in the image directories (the named volumes)', () => {
    const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
    expect(status).not.toMatch(/^Uid:\s+0\b/m);
    const start = lines.map((l) => JSON.parse(l) as { msg: string }).find((l) => l.msg.startsWith('queue '))!;
    expect(start.msg).toBe(`queue ${IMAGE_ENV.SENDAS_QUEUE_DIR} (from SENDAS_QUEUE_DIR), state ${IMAGE_ENV.SENDAS_STATE_DIR} (from SENDAS_STATE_DIR)`);
    const queueVolume = RUN.volumes.find((v) => v.target === IMAGE_ENV.SENDAS_QUEUE_DIR)!.source;
    expect(readdirSync(join(volumes, queueVolume)).length).toBeGreaterThan(0);
    // nothing written beside the config (it is read-only anyway)
    expect(readdirSync(join(hostRoot, 'srv/sendas')).sort()).toEqual(['relay.yaml', 'secrets']);
  });

  it('the HEALTHCHECK command passes', () => {
    const health = /CMD\s+(\[.*\])$/s.exec(last(stage, 'HEALTHCHECK')!)![1]!;
    const r = inContainer(child.pid!, jsonArray(health));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it("README's docker exec check passes and says the image's directories won", () => {
    const exec = COMMANDS.find((c) => c.startsWith('docker exec sendas ') && c.endsWith(' check'))!;
    const r = inContainer(child.pid!, words(exec).slice(3));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = r.stdout.split('\n');
    expect(out[0]).toMatch(new RegExp(`^${IMAGE_ENV.SENDAS_CONFIG}: OK`));
    // README's sample output is what the example prints here, line for line (the version aside)
    const sample = /```\n(\/etc\/sendas\/relay\.yaml: OK[^\n]*\n[\s\S]*?)```/.exec(DOCKER_SECTION)![1]!.trimEnd().split('\n');
    expect(out[0]).toMatch(/^\/etc\/sendas\/relay\.yaml: OK \(version [0-9a-f]{12}\)$/);
    for (const line of sample.slice(1)) expect(out).toContain(line);
    for (const line of ['queue /var/lib/sendas/queue (from SENDAS_QUEUE_DIR)', 'state /var/lib/sendas/state (from SENDAS_STATE_DIR)']) {
      expect(DOCKER_SECTION).toContain(line);
      expect(r.stdout).toContain(line);
    }
    for (const e of RUN.env) expect(r.stdout).not.toContain(testValue(e.name));
  });

  it('a message sent to the published SMTP port is queued in the queue volume', () => {
    const marker = `deploy-test-${Date.now()}`;
    const r = spawnSync('nsenter', ['-t', String(child.pid), '--net', 'swaks', '--server', `127.0.0.1:${RUN.publish[0]!.container}`, '--from', 'support@acme.example', '--to', 'customer@example.org', '--header', `Subject: ${marker}`, '--timeout', '10'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.stdout).toMatch(/<[-~]\s+250 2\.0\.0 Queued as/);
    const queueVolume = join(volumes, RUN.volumes.find((v) => v.target === IMAGE_ENV.SENDAS_QUEUE_DIR)!.source);
    const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? files(join(dir, d.name)) : [join(dir, d.name)]));
    expect(files(queueVolume).some((f) => statSync(f).size > 0 && readFileSync(f).includes(marker))).toBe(true);
  });

  it('docker stop (SIGTERM, the STOPSIGNAL) stops it cleanly', async () => {
    expect(last(stage, 'STOPSIGNAL')).toBe('SIGTERM');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('compose.yaml', () => {
  const compose = parseYaml(read('compose.yaml')) as {
    services: Record<string, { build?: string; image?: string; ports?: string[]; volumes?: string[]; environment?: Record<string, string> }>;
    volumes?: Record<string, unknown>;
  };
  const sendas = compose.services.sendas!;
  const configDir = posix.dirname(IMAGE_ENV.SENDAS_CONFIG!);
  const mount = (sendas.volumes ?? []).map((v) => v.split(':')).find(([, target]) => target === configDir);
  const configFile = join(REPO, mount?.[0] ?? 'missing', posix.basename(IMAGE_ENV.SENDAS_CONFIG!));
  const configText = readFileSync(configFile, 'utf8');

  it('builds this image and mounts a config directory read-only where SENDAS_CONFIG points', () => {
    expect(sendas.build).toBe('.');
    expect(sendas.image).toBe(RUN.image);
    expect(mount?.[2]).toBe('ro');
  });

  it('gives each of the image\'s volumes a named volume, declared at the top', () => {
    for (const dir of jsonArray(last(stage, 'VOLUME')!)) {
      const v = (sendas.volumes ?? []).map((x) => x.split(':')).find(([, target]) => target === dir);
      expect(v, dir).toBeDefined();
      expect(Object.keys(compose.volumes ?? {})).toContain(v![0]);
    }
  });

  it('sets exactly the variables its config reads, and the config loads with them', () => {
    const env = sendas.environment ?? {};
    expect(Object.keys(env).sort()).toEqual(envReferences(configText));
    const s = parseConfig(configText, configFile, { env: { ...IMAGE_ENV, ...env } });
    expect(s.queue.dir).toBe(IMAGE_ENV.SENDAS_QUEUE_DIR);
    expect(s.stateDir).toBe(IMAGE_ENV.SENDAS_STATE_DIR);
    const ports = [...s.listeners.map((l) => l.port), ...(s.http ? [s.http.port] : [])].sort();
    const published = (sendas.ports ?? []).map((p) => Number(p.split(':').at(-1)));
    expect(published.sort()).toEqual(ports);
    for (const p of published) expect(last(stage, 'EXPOSE')!.split(/\s+/).map(Number)).toContain(p);
    // published on the host's loopback only: a try-it setup
    for (const p of sendas.ports ?? []) expect(p.startsWith('127.0.0.1:')).toBe(true);
    for (const l of s.listeners) expect(l.host).toBe('0.0.0.0');
    expect(s.http && s.http.token).toBeDefined();
    // the upstream is the compose service Mailpit, on the port Mailpit's image listens on for SMTP
    const upstream = s.defaultServer;
    expect(Object.keys(compose.services)).toContain(upstream.host);
    expect(compose.services[upstream.host]!.image).toBe('axllent/mailpit');
    expect(upstream.port).toBe(1025);
  });

  it("README's try-it commands use the compose file's ports and token", () => {
    const tryIt = shellCommands(section(README, '### Trying it with Docker Compose'));
    expect(tryIt).toContain('docker compose up -d --build');
    const env = sendas.environment ?? {};
    expect(tryIt.find((c) => c.startsWith('curl'))).toBe(`curl -H "Authorization: Bearer ${env.OPS_TOKEN}" http://${sendas.ports![1]!.split(':').slice(0, 2).join(':')}/status`);
    expect(tryIt.find((c) => c.startsWith('swaks'))).toContain(`--server ${sendas.ports![0]!.split(':').slice(0, 2).join(':')}`);
  });
});

/** better-sqlite3's compiled addon as a prebuild-install archive: what its download would have been. */
function localPrebuild(dir: string): string {
  const pkg = join(realpathSync(join(REPO, 'node_modules')), 'better-sqlite3');
  const version = (JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as { version: string }).version;
  const name = `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
  mkdirSync(dir, { recursive: true });
  const r = spawnSync('tar', ['-czf', join(dir, name), '-C', pkg, 'build/Release/better_sqlite3.node']);
  expect(r.status).toBe(0);
  return join(pkg, 'build/Release/better_sqlite3.node');
}

describe('installing without the repository: npm pack, npm install -g', () => {
  let work: string;
  let prefix: string;
  const env = Object.fromEntries(envReferences(EXAMPLE).map((n) => [n, testValue(n)]));
  let example: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'sendas-install-'));
    prefix = join(work, 'prefix');
    writeFileSync(join(work, 'support'), 'test-support-mailbox-password');
    example = join(work, 'relay.yaml');
    writeFileSync(example, EXAMPLE.replace('/run/secrets/support', join(work, 'support')));
  });
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('the packed tarball installs globally (better-sqlite3 from a local prebuild) and runs sendas', () => {
    // dist/ is built before the tests (npm test); packing from a checkout runs "prepare" (tsc) itself
    const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--pack-destination', work, '--json'], { cwd: REPO, encoding: 'utf8' });
    expect(pack.status, pack.stderr).toBe(0);
    const [{ filename, files }] = JSON.parse(pack.stdout) as [{ filename: string; files: { path: string }[] }];
    const pkg = JSON.parse(read('package.json')) as { name: string; version: string; bin: Record<string, string> };
    expect(pkg.bin).toEqual({ sendas: 'dist/cli/main.js' });
    expect(filename).toBe(`${pkg.name}-${pkg.version}.tgz`);
    expect(files.map((f) => f.path)).toEqual(expect.arrayContaining(['dist/cli/main.js', 'config/relay.example.yaml', 'README.md']));
    expect(files.some((f) => f.path.startsWith('test/') || f.path.startsWith('src/'))).toBe(false);

    const addon = localPrebuild(join(work, 'prebuilds'));
    // README's command, into a prefix of the test's own (and from npm's cache where it can)
    const readmeInstall = shellCommands(section(README, '## Installing without Docker'))
      .map(words)
      .find((w) => w.includes('npm') && w.includes('install'))!;
    const args = readmeInstall.slice(readmeInstall.indexOf('npm') + 1).map((a, i, all) => (all[i - 1] === '--prefix' ? prefix : a === `./${filename}` ? join(work, filename) : a));
    expect(args).toContain(join(work, filename));
    const install = spawnSync('npm', [...args, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], {
      encoding: 'utf8',
      // prebuild-install looks here before downloading (npm_config_<package>_local_prebuilds)
      env: { ...process.env, npm_config_better_sqlite3_local_prebuilds: join(work, 'prebuilds') },
      timeout: 150_000,
    });
    expect(install.status, install.stderr).toBe(0);
    const installed = join(prefix, 'lib/node_modules/sendas-relay');
    // the prebuild was used: nothing compiled, the same addon
    expect(readFileSync(join(installed, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node')).equals(readFileSync(addon))).toBe(true);
    const sqlite = spawnSync(process.execPath, ['-e', `const D = require(${JSON.stringify(join(installed, 'node_modules/better-sqlite3'))}); console.log(new D(':memory:').prepare('select 41 + 1 as n').get().n)`], { encoding: 'utf8' });
    expect(sqlite.stdout.trim()).toBe('42');

    const bin = join(prefix, 'bin/sendas');
    expect(spawnSync(bin, ['help'], { encoding: 'utf8' }).stdout).toContain('usage: sendas <command>');
    const check = spawnSync(bin, ['check', '--config', example], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env }, cwd: work });
    expect(check.stderr).toBe('');
    expect(check.status).toBe(0);
    expect(check.stdout).toContain(`${example}: OK`);
    for (const v of Object.values(env)) expect(check.stdout).not.toContain(v);
    // the example as shipped in the package is the same file
    expect(readFileSync(join(installed, 'config/relay.example.yaml'), 'utf8')).toBe(EXAMPLE);
  }, 180_000);

  it('README never runs `npx sendas` (outside a checkout it fetches an unrelated package)', () => {
    expect(README).not.toMatch(/npx\s+sendas/);
    const install = section(README, '## Installing without Docker');
    const cmds = shellCommands(install).map(words);
    expect(cmds).toContainEqual(['npm', 'pack']);
    const { version } = JSON.parse(read('package.json')) as { version: string };
    expect(cmds.some((w) => w.join(' ').includes(`npm install -g --prefix /usr/local ./sendas-relay-${version}.tgz`))).toBe(true);
    // the unit's steps: its user, the unit copied where systemd looks, enabled and started
    expect(cmds.some((w) => w.includes('useradd') && w.at(-1) === 'sendas')).toBe(true);
    expect(cmds.some((w) => w.includes('deploy/systemd/sendas.service') && w.at(-1) === '/etc/systemd/system/sendas.service')).toBe(true);
    expect(cmds.some((w) => w.join(' ').endsWith('systemctl enable --now sendas'))).toBe(true);
  });

  it('the systemd unit verifies (systemd-analyze verify) with the installed sendas, and is hardened', () => {
    const unit = read('deploy/systemd/sendas.service');
    const keys = new Map<string, string[]>();
    for (const line of unit.split('\n')) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (m) keys.set(m[1]!, [...(keys.get(m[1]!) ?? []), m[2]!]);
    }
    const one = (k: string) => keys.get(k)?.at(-1);
    expect(one('User')).toBe('sendas');
    for (const [k, v] of [['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'], ['NoNewPrivileges', 'yes'], ['Restart', 'on-failure'], ['ConfigurationDirectory', 'sendas'], ['ExecReload', 'kill -HUP $MAINPID'], ['CapabilityBoundingSet', '']] as const) {
      expect(one(k), k).toBe(v);
    }
    expect(keys.has('AmbientCapabilities')).toBe(false);
    expect(one('StateDirectory')!.split(' ')).toEqual(expect.arrayContaining(['sendas']));
    // the same directories as the image, under the StateDirectory
    const unitEnv = Object.fromEntries(keys.get('Environment')!.map((e) => e.split('=') as [string, string]));
    for (const k of ['SENDAS_CONFIG', 'SENDAS_QUEUE_DIR', 'SENDAS_STATE_DIR']) expect(unitEnv[k], k).toBe(IMAGE_ENV[k]);
    for (const k of ['SENDAS_QUEUE_DIR', 'SENDAS_STATE_DIR']) expect(unitEnv[k]!.startsWith('/var/lib/sendas/')).toBe(true);
    // the ports it listens on need no capability
    const s = parseConfig(EXAMPLE.replace('/run/secrets/support', join(REPO, 'package.json')), join(REPO, 'config/relay.yaml'), { env });
    for (const l of s.listeners) expect(l.port).toBeGreaterThanOrEqual(1024);

    const bin = join(prefix, 'bin/sendas');
    expect(existsSync(bin), 'the install test ran first').toBe(true);
    const copy = join(work, 'sendas.service');
    writeFileSync(copy, unit.replaceAll('/usr/local/bin/sendas', bin));
    const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', cwd: work });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // systemd's own measure of what the service could still do (0 = nothing, 10 = everything)
    const security = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', copy], { encoding: 'utf8', cwd: work });
    const level = /Overall exposure level for sendas\.service: ([\d.]+)/.exec(security.stdout)?.[1];
    expect(Number(level), security.stdout + security.stderr).toBeLessThanOrEqual(2);
  });
});
