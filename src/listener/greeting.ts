import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

let installed = false;

interface ConnectionInternals {
  _server: { options: { maxClients?: number }; connections: Set<unknown> };
  name: string;
  _setListeners(done: () => void): void;
  connectionReady(): void;
  send(code: number, data: string, context?: unknown): void;
}

/**
 * smtp-server waits 100 ms before its greeting to catch clients that talk too early — a spam
 * defense for public MX hosts (Postfix does it only with postscreen) that has no option. sendas
 * is a submission relay beside known systems that open a connection per message: the pause
 * capped 20 sessions at 200 messages/s in the benchmark. It greets at once instead; the rest of
 * smtp-server's init (connection limit, reverse lookup, greeting) is unchanged.
 */
export function installImmediateGreeting(): void {
  if (installed) return;
  installed = true;
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals & { init(): void };
  if (typeof proto._setListeners !== 'function' || typeof proto.connectionReady !== 'function') return; // a future smtp-server: keep its own init
  proto.init = function init(this: ConnectionInternals) {
    this._setListeners(() => {
      if (this._server.options.maxClients && this._server.connections.size > this._server.options.maxClients) {
        this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
        return;
      }
      this.connectionReady();
    });
  };
}
