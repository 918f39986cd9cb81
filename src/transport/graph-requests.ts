import type { Account } from '../config/account.js';
import { graphFailure, graphThrottled, graphUnreachable } from '../errors/graph.js';
import { oneLine } from '../errors/relay-error.js';
import type { TokenProvider } from '../oauth/tokens.js';

export interface GraphCall {
  readonly contentType?: string;
  /** Made afresh for each try (a retry after a fresh token or Retry-After sends it again). */
  readonly body?: () => string | Buffer;
  readonly headers?: Record<string, string>;
  /** An upload session's pre-authenticated URL: no token. */
  readonly anonymous?: boolean;
  /** Don't wait out a 429 (cleanup after a failure). */
  readonly noWait?: boolean;
}

/**
 * The HTTP requests of one message to Graph, each with the same rules as sendMail always had: a
 * refused token is renewed once; 429/503 waits for Retry-After while the message's total wait
 * stays under `maxWaitMs` (longer: the queue's schedule takes over); every other failure is
 * classified (errors/graph.ts), naming the step that failed.
 */
export class GraphRequests {
  private throttledFor = 0;

  constructor(
    private readonly tokens: TokenProvider,
    private readonly account: Account,
    private readonly where: string,
    private readonly mailbox: string,
    private readonly maxWaitMs: number,
  ) {}

  /** Resolves with the JSON answer (undefined when there is none). */
  async call(method: string, url: string, step: string, req: GraphCall = {}): Promise<unknown> {
    let renewed = false;
    for (;;) {
      const headers: Record<string, string> = { ...req.headers };
      if (req.contentType) headers['content-type'] = req.contentType;
      if (!req.anonymous) headers.authorization = `Bearer ${(await this.tokens.get(this.account, renewed)).token}`;
      let response: Response;
      try {
        const body = req.body?.();
        response = await fetch(url, { method, headers, body: body as BodyInit | undefined, signal: AbortSignal.timeout(120_000) });
      } catch (err) {
        throw graphUnreachable(err, this.where);
      }
      const text = await response.text().catch(() => '');
      if (response.ok) return text ? parseJson(text) : undefined;
      const reply = `${response.status} ${graphError(text)}`;
      if (response.status === 401 && !renewed && !req.anonymous) {
        // the cached token was refused: one fresh token, one retry (as for a 535 over SMTP)
        renewed = true;
        continue;
      }
      if ((response.status === 429 || response.status === 503) && !req.noWait) {
        const wait = retryAfterMs(response.headers.get('retry-after'));
        // Graph asks us to slow down: wait when it is short, otherwise leave it to the queue's schedule
        if (this.throttledFor + wait <= this.maxWaitMs) {
          this.throttledFor += wait;
          await new Promise((resolve) => setTimeout(resolve, wait));
          continue;
        }
        throw graphThrottled(wait, reply, this.where);
      }
      const sendMail = step === 'sendMail';
      throw graphFailure(response.status, reply, sendMail ? this.where : `${this.where}, ${step},`, this.mailbox, !sendMail);
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function graphError(text: string): string {
  try {
    const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    if (e) return oneLine(`${e.code ?? 'Error'}: ${e.message ?? ''}`).slice(0, 300);
  } catch {
    // not JSON
  }
  return oneLine(text).slice(0, 300) || 'no details';
}

function retryAfterMs(value: string | null): number {
  const seconds = Number(value);
  if (value !== null && value.trim() !== '' && Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = value ? Date.parse(value) : NaN;
  return Number.isFinite(date) ? Math.max(0, date - Date.now()) : 5_000;
}
