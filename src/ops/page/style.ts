import { createHash } from 'node:crypto';

/** The page's only style, inline; the Content-Security-Policy allows exactly this text by its hash. */
export const STYLE = `
:root { color-scheme: light dark; --line: #8884; --muted: #777; --warn: #b35c00; --bad: #b00020; --ok: #1b7f3b; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; padding: 1rem 1.5rem 3rem; max-width: 88rem; }
h1 { font-size: 1.4rem; margin: .2rem 0; } h2 { font-size: 1.1rem; margin: 1.8rem 0 .5rem; }
header p, .muted { color: var(--muted); margin: .2rem 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .3rem .6rem; border-bottom: 1px solid var(--line); }
th { font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12.5px/1.3 ui-monospace, monospace; overflow-wrap: break-word; }
.banner { border: 2px solid var(--warn); border-left-width: .5rem; padding: .6rem .9rem; margin: .8rem 0; }
.banner.bad { border-color: var(--bad); }
.badge { display: inline-block; font-size: 11px; font-weight: 700; padding: 0 .4rem; border-radius: .6rem; border: 1px solid currentColor; margin-left: .3rem; }
.default { color: var(--ok); } .alternate { color: var(--warn); } .problem { color: var(--bad); }
.fix { margin: .2rem 0 0; } .fix::before { content: "Fix: "; font-weight: 600; }
form { margin: 1rem 0; display: flex; gap: .5rem; } input[type=search] { flex: 1; max-width: 32rem; padding: .3rem .5rem; }
dl.stats { display: flex; flex-wrap: wrap; gap: .4rem 2rem; margin: .4rem 0; } dl.stats div { min-width: 8rem; }
dl.stats dt { color: var(--muted); } dl.stats dd { margin: 0; font-size: 1.3rem; font-variant-numeric: tabular-nums; }
details summary { cursor: pointer; }
a.id code { white-space: nowrap; } #deferred-by-reason { width: auto; min-width: 20rem; }
`;

export const STYLE_HASH = `sha256-${createHash('sha256').update(STYLE).digest('base64')}`;

/**
 * No script, no frames, no plugins, nothing from elsewhere: only this style, and forms sent back
 * here. A value that slipped through escaping still could not run.
 */
export const PAGE_CSP = `default-src 'none'; style-src '${STYLE_HASH}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`;
