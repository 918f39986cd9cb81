/** `cluster:` as ops write it: the snapshot, the errors with their lines, what sendas check prints, what a reload means. */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, formatIssue, parseConfig } from '../../src/config/load.js';
import { diffSnapshots } from '../../src/config/diff.js';
import { checkReport } from '../../src/cli/report.js';

const FILE = '/etc/sendas/relay.yaml';
const TLS = fileURLToPath(new URL('../fixtures/tls', import.meta.url));
const MAIN = `servers:
  - name: main
    host: smtp.acme.example
    username: relay@acme.example
    password: server-secret
`;

function problems(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(text, FILE, { env });
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => formatIssue(FILE, i).slice(FILE.length + 1));
    throw err;
  }
  throw new Error('the config was accepted');
}

describe('cluster: in relay.yaml', () => {
  it('is off unless written; written, the URL is a secret and the node defaults to the host name', () => {
    expect(parseConfig(MAIN, FILE, { env: {} }).cluster).toBe(false);
    const s = parseConfig(`${MAIN}cluster:\n  redis:\n    url: {env: REDIS_URL}\n`, FILE, { env: { REDIS_URL: 'redis://:pw-7731@10.0.0.9:6380/2', HOSTNAME: 'sendas-1' } });
    expect(s.cluster).toMatchObject({ keyPrefix: 'sendas', nodeId: 'sendas-1', leaseTtlMs: 15_000 });
    expect(String(s.cluster && s.cluster.url)).toBe('[secret]');
    const report = checkReport(s, {});
    expect(report).toContain('cluster: Redis 10.0.0.9:6380/2 (no TLS, password), key prefix sendas, this node sendas-1, leases and registry entries live 15s');
    expect(report).not.toContain('pw-7731');
    // a password in clear over the network is said
    expect(s.warnings.map((w) => `${w.path}: ${w.message}`)).toContain('cluster.redis.url: the Redis password goes to 10.0.0.9 in clear: use rediss:// (TLS)');
  });

  it('refuses a URL that is not redis:// without quoting it, a short lease TTL and a misspelt key, each at its line', () => {
    expect(problems(`${MAIN}cluster:\n  redis:\n    url: http://:pw-7731@redis:6379\n`)).toEqual([
      '8:10 cluster.redis.url: must be a redis:// or rediss:// URL such as redis://redis:6379 or rediss://:PASSWORD@redis.example:6380 (the value is not shown: it may hold a password)',
    ]);
    expect(problems(`${MAIN}cluster:\n  redis: {url: redis://redis}\n  lease_ttl: 1s\n`)[0]).toMatch(/^8:14 cluster\.lease_ttl: must be at least 2s/);
    expect(problems(`${MAIN}cluster:\n  redis:\n    ur: redis://redis\n`).join('\n')).toMatch(/cluster\.redis.*url/);
  });

  it('a changed cluster section needs a restart', () => {
    const a = parseConfig(`${MAIN}cluster:\n  redis: {url: redis://redis}\n  node_id: r1\n`, FILE, { env: {} });
    const b = parseConfig(`${MAIN}cluster:\n  redis: {url: redis://redis}\n  node_id: r2\n`, FILE, { env: {} });
    expect(diffSnapshots(a, b).needsRestart).toContain('cluster');
    expect(diffSnapshots(a, a).needsRestart).not.toContain('cluster');
  });

  it('tls: a private CA and a client certificate for rediss://, each checked at its line; with redis:// it is refused', () => {
    const tls = (body: string, url = 'rediss://redis.example:6380') => `${MAIN}cluster:\n  redis:\n    url: ${url}\n    tls:\n${body}`;
    const files = `      ca: {file: ${TLS}/ca.pem}\n      cert: {file: ${TLS}/server.pem}\n      key: {file: ${TLS}/server.key}\n`;
    const s = parseConfig(tls(files), FILE, { env: {} });
    expect(s.cluster && s.cluster.tls?.ca).toContain('BEGIN CERTIFICATE');
    expect(String(s.cluster && s.cluster.tls?.key)).toBe('[secret]');
    expect(checkReport(s, {})).toContain('cluster: Redis redis.example:6380 (TLS, CA from cluster.redis.tls.ca, client certificate, no password)');
    expect(problems(tls(files, 'redis://redis.example:6379'))).toEqual(['10:7 cluster.redis.tls: applies to rediss:// only: cluster.redis.url is redis://, which does not use TLS']);
    expect(problems(tls(`      cert: {file: ${TLS}/server.pem}\n`))).toEqual(['10:13 cluster.redis.tls.cert: needs key: beside it: a client certificate and its private key go together']);
    expect(problems(tls(`      ca: not a certificate\n`))[0]).toMatch(/^10:11 cluster\.redis\.tls\.ca: must be the PEM certificate/);
    // the CA's own key is not the server certificate's
    expect(problems(tls(`      cert: {file: ${TLS}/server.pem}\n      key: {file: ${TLS}/ca.key}\n`))[0]).toMatch(/^11:12 cluster\.redis\.tls\.key: does not belong to the certificate/);
  });

  it('sentinel: the master by name through the Sentinels, shown by check; a Sentinel that is no HOST:PORT is refused at its line', () => {
    const text = (hosts: string) => `${MAIN}cluster:\n  redis:\n    url: {env: REDIS_URL}\n    sentinel:\n      master: sendas-main\n      hosts: [${hosts}]\n      password: {env: SENTINEL_PW}\n`;
    const env = { REDIS_URL: 'redis://:pw-7731@sendas-main/2', SENTINEL_PW: 'snt-pw-55' };
    const s = parseConfig(text('10.0.0.5:26379, "[fd00::6]:26379"'), FILE, { env });
    expect(s.cluster && s.cluster.sentinel).toMatchObject({ master: 'sendas-main', hosts: [{ host: '10.0.0.5', port: 26379 }, { host: 'fd00::6', port: 26379 }] });
    const report = checkReport(s, {});
    expect(report).toContain('cluster: Redis master sendas-main db 2 through Sentinel 10.0.0.5:26379, [fd00::6]:26379 (no TLS, password)');
    expect(report).not.toMatch(/pw-7731|snt-pw-55/);
    expect(s.warnings.map((w) => `${w.path}: ${w.message}`)).toContain('cluster.redis.url: the Redis password goes to the master the Sentinels name in clear: use rediss:// (TLS)');
    expect(problems(text('10.0.0.5'), env)).toEqual(['11:15 cluster.redis.sentinel.hosts[0]: must be HOST:PORT of a Sentinel, e.g. 10.0.0.5:26379']);
  });
});
