import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ConfigIssue } from '../../src/config/issues.js';
import { parseYaml } from '../../src/config/yaml.js';
import { resolveSecrets, secretFilesOf } from '../../src/config/secret-refs.js';

const dir = mkdtempSync(join(tmpdir(), 'sendas-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const YAML = `clients:
  - username: crm
    password: {env: CRM_PW}
servers:
  - name: main
    username: relay@acme.example
    password: {file: main.pw}
    tls:
      ca: {file: ca.pem}
    oauth:
      client_id: app
      client_secret: inline-secret
      refresh_token: {file: main.pw}
channels:
  - name: support
    address: support@acme.example
    override:
      password: {env: MISSING}
      oauth:
        refresh_token: {file: missing.token}
agents:
  - name: alice
    address: alice@acme.example
    override:
`;

describe('secrets as one list of typed references', () => {
  writeFileSync(join(dir, 'main.pw'), 'main-pw\n');
  writeFileSync(join(dir, 'ca.pem'), 'PEM');
  const yaml = parseYaml(YAML);
  const issues: ConfigIssue[] = [];
  const refs = resolveSecrets(yaml.value as Record<string, unknown>, dir, { CRM_PW: 'crm-pw' }, (p, m, k) => void issues.push(yaml.issueAt(p, m, k)));

  it('says for each where it is written, what it is for, where it comes from and its value', () => {
    expect(refs.map((r) => [r.path, r.kind, r.source, r.secret?.reveal()])).toEqual([
      ['clients[0].password', 'client login password', { type: 'env', name: 'CRM_PW' }, 'crm-pw'],
      ['servers[0].password', 'password', { type: 'file', file: join(dir, 'main.pw') }, 'main-pw'],
      ['servers[0].tls.ca', 'tls ca', { type: 'file', file: join(dir, 'ca.pem') }, 'PEM'],
      ['channels[0].override.password', 'password', { type: 'env', name: 'MISSING' }, undefined],
      ['servers[0].oauth.client_secret', 'oauth client secret', { type: 'inline' }, 'inline-secret'],
      ['servers[0].oauth.refresh_token', 'refresh token', { type: 'file', file: join(dir, 'main.pw') }, 'main-pw'],
      ['channels[0].override.oauth.refresh_token', 'refresh token', { type: 'file', file: join(dir, 'missing.token') }, undefined],
    ]);
  });

  it('reports what could not be resolved at its key path', () => {
    expect(issues.map((i) => `${i.line}:${i.col} ${i.path}: ${i.message}`)).toEqual([
      '18:17 channels[0].override.password: environment variable MISSING is not set',
      `20:24 channels[0].override.oauth.refresh_token: cannot read secret file ${join(dir, 'missing.token')} (no such file)`,
    ]);
  });

  it('lists each file once, readable or not', () => {
    expect(secretFilesOf(refs)).toEqual([join(dir, 'main.pw'), join(dir, 'ca.pem'), join(dir, 'missing.token')]);
  });
});
