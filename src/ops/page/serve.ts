import type { TraceLookup } from '../../history/types.js';
import type { RelayStatus } from '../status.js';
import { renderStatusPage } from './render.js';
import type { SearchView } from './search.js';
import { PAGE_CSP } from './style.js';

/** Headers of every status page answer: no script can run, nothing is cached, nothing framed. */
export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': PAGE_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/** How many trace events one search shows. */
export const SEARCH_LIMIT = 200;

/**
 * The page for `/` (and `/?q=…`): the status now, and with `q` what the delivery history finds.
 * A failed lookup is shown on the page (its message only) rather than failing the whole page.
 */
export async function statusPage(status: RelayStatus, trace: TraceLookup | undefined, params: URLSearchParams, now = Date.now()): Promise<string> {
  const q = params.get('q');
  let search: SearchView | undefined;
  if (q !== null) {
    const query = q.trim().slice(0, 256);
    if (!trace) search = { query, found: 'off' };
    else if (query === '') search = { query, found: { events: [], limit: SEARCH_LIMIT } };
    else {
      try {
        search = { query, found: { events: await trace(query, SEARCH_LIMIT), limit: SEARCH_LIMIT } };
      } catch (err) {
        search = { query, found: { error: (err as Error).message } };
      }
    }
  }
  return renderStatusPage(status, { now, ...(search ? { search } : {}) });
}
