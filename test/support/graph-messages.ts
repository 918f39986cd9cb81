import { createHash } from 'node:crypto';
import nodemailer from 'nodemailer';

/** A message as a CRM writes it: text, HTML and attachments, with the headers a relay must keep. */
export async function messageWithAttachments(from: string, attachments: { filename: string; content: Buffer }[], subject = 'your documents'): Promise<Buffer> {
  const info = await nodemailer.createTransport({ streamTransport: true, buffer: true }).sendMail({
    from,
    to: 'customer@example.net',
    replyTo: 'tickets@contoso.example',
    subject,
    messageId: '<ticket-4711@crm.contoso.example>',
    headers: { 'X-Ticket-Id': '4711' },
    text: 'Please find your documents attached.',
    html: '<p>Please find your documents attached.</p>',
    attachments,
  });
  return info.message as Buffer;
}

/** Bytes that don't compress or repeat, so a wrong offset shows. */
export function randomish(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
