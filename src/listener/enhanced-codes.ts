import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

const HAS_ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
let installed = false;

/**
 * smtp-server picks the enhanced status code from a fixed table keyed by the reply code (550 is
 * always 5.1.1 "mailbox unavailable"), and an error from a handler can't say otherwise. sendas
 * replies carry their own precise code ("550 5.7.1 …"), so when a reply text already starts with
 * one, the table is skipped for that reply. Every other reply keeps smtp-server's codes, so
 * ENHANCEDSTATUSCODES can be advertised truthfully (RFC 2034).
 */
export function installEnhancedCodePassthrough(): void {
  if (installed) return;
  installed = true;
  const proto = SMTPConnection.prototype as unknown as { send(code: number, data: unknown, context?: unknown): void };
  const original = proto.send;
  proto.send = function send(this: unknown, code: number, data: unknown, context?: unknown) {
    if (typeof data === 'string' && HAS_ENHANCED.test(data)) return original.call(this, code, data, false);
    return original.call(this, code, data, context);
  };
}
