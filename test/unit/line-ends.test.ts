import { describe, expect, it } from 'vitest';
import { LineEnds } from '../../src/reception/line-ends.js';
import { RelayError } from '../../src/errors/relay-error.js';

/** Runs the bytes through LineEnds in the given chunks: the output, or what it had put out before the error. */
function run(mode: 'reject' | 'normalize', chunks: (string | Buffer)[]): { out: string; err?: RelayError } {
  const lineEnds = new LineEnds(mode);
  const parts: Buffer[] = [];
  try {
    for (const c of chunks) {
      const out = lineEnds.push(typeof c === 'string' ? Buffer.from(c, 'latin1') : c);
      if (out) parts.push(out);
    }
    const last = lineEnds.end();
    if (last) parts.push(last);
  } catch (err) {
    return { out: Buffer.concat(parts).toString('latin1'), err: err as RelayError };
  }
  return { out: Buffer.concat(parts).toString('latin1') };
}

/** Every way of cutting the text in two, plus one byte per chunk. */
function splits(text: string): string[][] {
  const out: string[][] = [[text], text.split('')];
  for (let i = 1; i < text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  return out;
}

const HEAD = 'From: sales@acme.example\r\nSubject: s\r\n\r\n';

describe('LineEnds: normalize', () => {
  it('passes a CRLF message through unchanged, the body chunk as the same buffer', () => {
    const lineEnds = new LineEnds('normalize');
    const body = Buffer.from('line one\r\n.dot\r\nline three\r\n');
    expect(lineEnds.push(Buffer.from(HEAD))?.toString()).toBe(HEAD);
    expect(lineEnds.push(body)).toBe(body);
    expect(lineEnds.end()).toBeUndefined();
  });

  it('makes a bare LF a line end and drops a bare CR in the body, however the bytes are cut', () => {
    const input = `${HEAD}a\nb\rc\r\r\nd\r\n\n.\n\r.\r\r\n.\r\r\n`;
    const expected = `${HEAD}a\r\nbc\r\nd\r\n\r\n.\r\n.\r\n.\r\n`;
    for (const chunks of splits(input)) expect((run('normalize', chunks)).out, JSON.stringify(chunks)).toBe(expected);
  });

  it('in the header section of a CRLF message, a bare LF is a space: no header line is added', () => {
    const input = 'From: "x\nBcc: evil@x" <sales@acme.example>\r\nSubject: s\n\r\nTo: c@example.net\r\n\r\nbody\n';
    const expected = 'From: "x Bcc: evil@x" <sales@acme.example>\r\nSubject: s \r\nTo: c@example.net\r\n\r\nbody\r\n';
    for (const chunks of splits(input)) expect((run('normalize', chunks)).out, JSON.stringify(chunks)).toBe(expected);
  });

  it('a bare LF can not end the header section of a CRLF message early', () => {
    const { out } = run('normalize', ['Subject: s\r\n\nBcc: evil@x\r\n\r\nbody\r\n']);
    expect(out).toBe('Subject: s\r\n Bcc: evil@x\r\n\r\nbody\r\n');
  });

  it('a message written with bare LF throughout gets CRLF throughout', () => {
    const input = 'From: sales@acme.example\nSubject: s\n\nbody\n.\nend\n';
    for (const chunks of splits(input)) expect((run('normalize', chunks)).out).toBe('From: sales@acme.example\r\nSubject: s\r\n\r\nbody\r\n.\r\nend\r\n');
  });

  it('never lets a bare CR or LF through, whatever the bytes', () => {
    const alphabet = ['a', '\r', '\n', '.', ':', ' '];
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let n = 0; n < 300; n++) {
      const text = Array.from({ length: 40 }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');
      const cut = Math.floor(random() * text.length);
      const { out } = run('normalize', [text.slice(0, cut), text.slice(cut)]);
      expect(out.replace(/\r\n/g, ''), JSON.stringify(text)).not.toMatch(/[\r\n]/);
    }
  });
});

describe('LineEnds: reject, and NUL in either mode', () => {
  it('names the line that ends with a bare LF, header or body', () => {
    const body = Array.from({ length: 10 }, (_, i) => `line ${i + 4}\r\n`).join('');
    const { err } = run('reject', [HEAD, body, 'line 14\n', 'more\r\n']);
    expect(err).toBeInstanceOf(RelayError);
    expect([err!.status, err!.message]).toEqual([{ code: 550, enhanced: '5.5.2' }, 'Message line 14 ends with a bare LF; send CRLF line endings']);
    expect((run('reject', ['From: "x\nBcc: evil@x" <s@acme.example>\r\n\r\n'])).err?.message).toBe('Message line 1 ends with a bare LF; send CRLF line endings');
  });

  it('refuses a bare CR, also one at the end of a chunk', () => {
    for (const chunks of splits(`${HEAD}ok\r\nthe \r.\r is here\r\n`)) {
      expect((run('reject', chunks)).err?.message).toBe('Message line 5 contains a bare CR; send CRLF line endings');
    }
  });

  it('passes a CRLF message in reject mode unchanged, however the bytes are cut', () => {
    const input = `${HEAD}a\r\n..\r\n\r\nb\r\n`;
    for (const chunks of splits(input)) expect(run('reject', chunks)).toEqual({ out: input });
  });

  it('refuses a NUL byte with 550 5.6.0 in both modes, naming its line', () => {
    for (const mode of ['reject', 'normalize'] as const) {
      for (const chunks of splits(`${HEAD}one\r\ntwo\r\n\x00.\r\n`)) {
        const { err } = run(mode, chunks);
        expect([err?.status.enhanced, err?.message]).toEqual(['5.6.0', 'Message line 6 contains a NUL byte, which mail may not carry; remove it and send the message again']);
      }
      expect((run(mode, ['Subject: \x00\r\n\r\n'])).err?.message).toMatch(/^Message line 1 contains a NUL byte/);
    }
  });
});
