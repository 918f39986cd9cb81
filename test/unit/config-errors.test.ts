/**
 * The wording of config errors, as `sendas check` and a failed start print them: the real loader
 * on real YAML texts, every message with the line to go to and what to write instead.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, formatIssue, parseConfig } from '../../src/config/load.js';

const FILE = '/etc/sendas/relay.yaml';

/** "line:col path: message" for each problem of a text that must be refused. */
function problems(text: string): string[] {
  try {
    parseConfig(text, FILE, { env: {} });
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => formatIssue(FILE, i).slice(FILE.length + 1));
    throw err;
  }
  throw new Error('the config was accepted');
}

const MAIN = `servers:
  - name: main
    default: true
    host: smtp.acme.example
    port: 587
    security: starttls
    username: relay@acme.example
    password: server-secret
`;

describe('an unknown preset', () => {
  it('is one problem, with the likely name and the known ones; what the preset would fill in is not asked for', () => {
    expect(
      problems(`${MAIN}  - name: o365
    preset: office-365
    username: relay@acme.example
    oauth:
      tenant: acme.onmicrosoft.com
      client_id: app-id
      client_secret: app-secret
channels:
  - name: support
    address: support@acme.example
    server: o365
`),
    ).toEqual(['10:13 servers[1].preset: unknown preset "office-365"; did you mean "office365"? (known: office365, gmail)']);
  });

  it('also alone, with a password account and no other server', () => {
    expect(problems(`servers:\n  - name: main\n    preset: Gmial\n    username: relay@acme.example\n    password: app-password\n`)).toEqual([
      '3:13 servers[0].preset: unknown preset "Gmial"; did you mean "gmail"? (known: office365, gmail)',
    ]);
  });

  it('keeps the problems that are not the preset\'s', () => {
    expect(problems(`servers:\n  - name: main\n    preset: outlook\n    username: relay@acme.example\n    password: x\n    conections: 3\n`)).toEqual([
      '3:13 servers[0].preset: unknown preset "outlook" (known: office365, gmail)',
      expect.stringMatching(/^6:5 servers\[0\]\.conections: unknown key "conections" \(did you mean "connections"\?\)/),
    ]);
  });
});

describe('a quoted number or boolean', () => {
  it('says the quotes are the problem and what to write', () => {
    expect(problems(MAIN.replace('port: 587', 'port: "587"'))).toEqual(['5:11 servers[0].port: "587" is a string because of the quotes; write port: 587']);
    expect(problems(MAIN.replace('default: true', "default: 'true'"))).toEqual(["3:14 servers[0].default: \"true\" is a string because of the quotes; write default: true"]);
    expect(problems(`${MAIN}listen:\n  port: '2525'\n`)).toEqual(['10:9 listen.port: "2525" is a string because of the quotes; write port: 2525']);
  });

  it('says nothing of quotes for text that is not a number', () => {
    expect(problems(MAIN.replace('port: 587', 'port: submission'))).toEqual(['5:11 servers[0].port: must be a port number']);
  });
});

describe('a key written at the wrong level', () => {
  it('names where it belongs when it is indented out of override:', () => {
    expect(
      problems(`${MAIN}channels:
  - name: support
    address: support@acme.example
    override:
      username: support@acme.example
    password: support-secret
agents:
  - name: alice
    address: alice@acme.example
    username: alice@acme.example
    override:
      password: alice-secret
`),
    ).toEqual([
      '14:5 channels[0].password: unknown key here; did you mean override.password? (indent it under override:)',
      '18:5 agents[0].username: unknown key here; did you mean override.username? (indent it under override:)',
    ]);
  });

  it('says so once when override: is left empty and its password written beside it', () => {
    expect(problems(`${MAIN}channels:\n  - name: support\n    address: support@acme.example\n    override:\n    password: support-secret\n`)).toEqual([
      '13:5 channels[0].password: unknown key here; did you mean override.password? (indent it under override:)',
    ]);
  });

  it('names the section for a key written at the top level or under a server', () => {
    expect(problems(`${MAIN}level: debug\n`)).toEqual(['9:1 level: unknown key here; did you mean log.level? (indent it under log:)']);
    expect(problems(MAIN.replace('    password: server-secret\n', '    password: server-secret\n    reject_unauthorized: false\n'))).toEqual([
      '9:5 servers[0].reject_unauthorized: unknown key here; did you mean tls.reject_unauthorized? (indent it under tls:)',
    ]);
  });

  it('names the level above for a key indented into a mapping it does not belong to', () => {
    expect(
      problems(`${MAIN}channels:
  - name: support
    address: support@acme.example
    override:
      password: support-secret
      server: main
`),
    ).toEqual(['14:7 channels[0].override.server: unknown key here; did you mean channels[0].server? (indent it less, beside override:)']);
  });

  it('suggests the closest key of a mapping held there, and a key of a mapping beside', () => {
    expect(problems(`${MAIN}channels:\n  - name: support\n    address: support@acme.example\n    override:\n      username: support@acme.example\n    pasword: x\n`)).toEqual([
      '14:5 channels[0].pasword: unknown key here; did you mean override.password? (indent it under override:)',
    ]);
    expect(problems(MAIN.replace('    password: server-secret\n', '    password: server-secret\n    tls:\n      min_version: TLSv1.2\n      cooldown: 5m\n'))).toEqual([
      '11:7 servers[0].tls.cooldown: unknown key here; did you mean servers[0].alternate.cooldown? (move it under alternate:)',
    ]);
  });

  it('still suggests the closest key of the same level for a typo', () => {
    expect(problems(MAIN.replace('security:', 'securty:'))[0]).toMatch(/^6:5 servers\[0\]\.securty: unknown key "securty" \(did you mean "security"\?\); known keys here: name, /);
  });
});

describe('a YAML indentation mistake', () => {
  it('is reported at the line of the key indented too deep, not the line above', () => {
    expect(
      problems(`${MAIN}channels:
  - name: support
      address: support@acme.example
`),
    ).toEqual(['11:7 YAML syntax: wrong indentation: "address:" is indented deeper than the line above it, so YAML reads it as part of that line\'s value; line it up with the keys beside it']);
    expect(problems(MAIN.replace('    port: 587', '      port: 587'))).toEqual([
      '5:7 YAML syntax: wrong indentation: "port:" is indented deeper than the line above it, so YAML reads it as part of that line\'s value; line it up with the keys beside it',
    ]);
  });

  it('is reported once, at the key indented too little', () => {
    expect(problems(MAIN.replace('    username:', '   username:'))).toEqual([
      '7:4 YAML syntax: wrong indentation: "username:" is not at the same column as the keys above it; line it up with them, or indent it under the key it belongs to',
    ]);
    expect(problems(`${MAIN}log:\n  level: info\n format: line\n`)[0]).toMatch(/^11:\d+ YAML syntax: wrong indentation: /);
  });

  it('never quotes a value (a password) in the message', () => {
    const out = problems(MAIN.replace('    password: server-secret', '      password: hunter2-secret'));
    expect(out).toEqual(['8:7 YAML syntax: wrong indentation: "password:" is indented deeper than the line above it, so YAML reads it as part of that line\'s value; line it up with the keys beside it']);
    expect(out.join('\n')).not.toContain('hunter2');
  });
});
