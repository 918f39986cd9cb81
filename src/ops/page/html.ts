/**
 * HTML built only through the `html` template: every interpolated value is escaped unless it is
 * itself markup made by `html`, so a display name, a reply text or a search term can never become
 * markup (or script) on the status page.
 */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

/** A value in a template: markup stays, lists are joined, nothing/false is empty, the rest is escaped text. */
function part(value: unknown): string {
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(part).join('');
  if (value === undefined || value === null || value === false) return '';
  return escapeHtml(String(value));
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += part(values[i]) + strings[i + 1]!;
  return new Html(out);
}

/** A query string's value for a link (`/?q=…`). */
export function queryHref(path: string, q: string): string {
  return `${path}?q=${encodeURIComponent(q)}`;
}
