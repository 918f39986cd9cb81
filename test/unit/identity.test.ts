import { describe, expect, it } from 'vitest';
import { RelayError } from '../../src/errors/relay-error.js';
import { resolveSender, type Resolution } from '../../src/reception/identity.js';
import { BASE_YAML, snapshotOf } from './helpers.js';

const ok = (r: Resolution | RelayError): Resolution => {
  if (r instanceof RelayError) throw new Error(`unexpected refusal: ${r.message}`);
  return r;
};
const refused = (r: Resolution | RelayError): RelayError => {
  expect(r).toBeInstanceOf(RelayError);
  return r as RelayError;
};

describe('who sends, with which account', () => {
  const snapshot = snapshotOf();

  it('finds the identity by header From first', () => {
    const r = ok(resolveSender(snapshot, { headerFrom: 'support@acme.example', envelopeFrom: 'alice@acme.example', login: undefined }));
    expect(r.identity?.name).toBe('support');
    expect(r.matchedBy).toBe('header-from');
  });

  it('falls back to the envelope sender', () => {
    const r = ok(resolveSender(snapshot, { headerFrom: 'noreply@crm.local', envelopeFrom: 'Alice@Acme.Example', login: undefined }));
    expect(r.identity?.name).toBe('alice');
    expect(r.matchedBy).toBe('envelope-from');
  });

  it("then to the single identity a login's send_as names", () => {
    const r = ok(resolveSender(snapshot, { headerFrom: 'noreply@crm.local', envelopeFrom: undefined, login: 'alice-client' }));
    expect(r.identity?.name).toBe('alice');
    expect(r.matchedBy).toBe('login');
  });

  it('refuses an unknown sender with 550 5.7.1 naming the address (unknown_sender: reject)', () => {
    const err = refused(resolveSender(snapshot, { headerFrom: 'noreply@crm.local', envelopeFrom: 'bounce@crm.local', login: 'two' }));
    expect(err.status).toEqual({ code: 550, enhanced: '5.7.1' });
    expect(err.message).toContain('noreply@crm.local');
  });

  it("sends an unknown sender with the default server's own account (unknown_sender: default)", () => {
    const s = snapshotOf(BASE_YAML + 'policy:\n  unknown_sender: default\n');
    const r = ok(resolveSender(s, { headerFrom: 'noreply@crm.local', envelopeFrom: undefined, login: undefined }));
    expect(r.identity).toBeUndefined();
    expect(r.account.username).toBe('relay@acme.example');
    expect(r.account.address).toBe('relay@acme.example');
  });

  it('refuses a login sending as an identity outside its send_as', () => {
    const err = refused(resolveSender(snapshot, { headerFrom: 'support@acme.example', envelopeFrom: undefined, login: 'alice-client' }));
    expect(err.status).toEqual({ code: 550, enhanced: '5.7.1' });
    expect(err.message).toContain('alice-client');
    expect(err.message).toContain('support');
  });

  it('lets a login without send_as send as anyone', () => {
    expect(ok(resolveSender(snapshot, { headerFrom: 'support@acme.example', envelopeFrom: undefined, login: 'crm' })).identity?.name).toBe('support');
  });

  it("uses the identity's own login with override, the server's account without", () => {
    const support = ok(resolveSender(snapshot, { headerFrom: 'support@acme.example', envelopeFrom: undefined, login: undefined })).account;
    expect([support.via, support.username, support.password?.reveal(), support.address]).toEqual(['override', 'support@acme.example', 'support-pw', 'support@acme.example']);
    const sales = ok(resolveSender(snapshot, { headerFrom: 'sales@acme.example', envelopeFrom: undefined, login: undefined })).account;
    expect([sales.via, sales.username, sales.password?.reveal(), sales.address]).toEqual(['server', 'relay@acme.example', 'server-pw', 'relay@acme.example']);
  });

  it('moves every identity without `server` when default: true moves', () => {
    const moved = snapshotOf(BASE_YAML.replace('    default: true\n', '').replace('host: smtp2.acme.example', 'host: smtp2.acme.example\n    default: true'));
    const sales = ok(resolveSender(moved, { headerFrom: 'sales@acme.example', envelopeFrom: undefined, login: undefined })).account;
    expect(sales.server.name).toBe('backup');
    expect(sales.username).toBe('backup@acme.example');
    const alice = ok(resolveSender(moved, { headerFrom: 'alice@acme.example', envelopeFrom: undefined, login: undefined })).account;
    expect([alice.server.name, alice.username]).toEqual(['backup', 'alice@acme.example']);
  });

  it('refuses an override without password with a reply saying no email password is configured', () => {
    const s = snapshotOf(BASE_YAML.replace('    override:\n      password: alice-pw\n', '    override:\n'));
    const err = refused(resolveSender(s, { headerFrom: 'alice@acme.example', envelopeFrom: undefined, login: undefined }));
    expect(err.status.code).toBeGreaterThanOrEqual(500);
    expect(err.message).toMatch(/agent "alice" .*has no email password configured/);
    expect(err.message).toContain('agents[0].override.password');
  });
});
