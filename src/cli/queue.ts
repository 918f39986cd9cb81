import { randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConfigSnapshot } from '../config/types.js';
import { formatAge } from '../config/duration.js';
import { identityLabel } from '../history/types.js';
import type { QueueEntryMeta } from '../queue/entry.js';
import { queueHolder, runQueueRequest, type QueueRequest, type QueueResponse } from '../queue/control.js';
import { QueueStore, type QueueArea } from '../queue/store.js';
import { QUEUE_USAGE } from './usage.js';

/** `sendas queue …`: safe while the relay runs (changes go through the relay itself). */
export async function queueCommand(snapshot: ConfigSnapshot, args: { sub: string | undefined; id: string | undefined; failed: boolean; all: boolean }, out: NodeJS.WritableStream): Promise<number> {
  const store = new QueueStore(snapshot.queue.dir);
  const print = (s: string) => out.write(`${s}\n`);
  switch (args.sub) {
    case 'list': {
      const area: QueueArea = args.failed ? 'failed' : 'active';
      const metas = await store.list(area);
      print(listTable(metas, area, Date.now()));
      return 0;
    }
    case 'show': {
      if (!args.id) return usage('queue show needs an ID');
      const meta = (await store.read(args.id, 'active')) ?? (await store.read(args.id, 'failed'));
      if (!meta) {
        process.stderr.write(`sendas queue show: no message ${args.id} in ${store.dir}\n`);
        return 1;
      }
      print(showEntry(meta, (await store.read(args.id, 'active')) ? 'active' : 'failed', Date.now()));
      return 0;
    }
    case 'retry':
    case 'delete': {
      let req: QueueRequest;
      if (args.sub === 'retry' && args.all) req = { op: 'retry-all' };
      else if (args.id) req = { op: args.sub, id: args.id };
      else return usage(`queue ${args.sub} needs an ID${args.sub === 'retry' ? ' or --all' : ''}`);
      const res = await sendRequest(store, req);
      (res.ok ? process.stdout : process.stderr).write(`${res.message}\n`);
      return res.ok ? 0 : 1;
    }
    default:
      return usage(args.sub ? `unknown queue command "${args.sub}"` : 'queue needs a command');
  }
}

function usage(problem: string): number {
  process.stderr.write(`sendas: ${problem}\n${QUEUE_USAGE}\n`);
  return 2;
}

/**
 * With a relay holding the queue, the request is written into requests/ and the relay carries it
 * out (its schedule then matches the files); without one, it is carried out here on the files.
 */
async function sendRequest(store: QueueStore, req: QueueRequest, timeoutMs = 10_000): Promise<QueueResponse> {
  const holder = await queueHolder(store.dir);
  if (holder === undefined) return runQueueRequest(store, req);
  const dir = store.areaDir('requests');
  const base = join(dir, `${Date.now()}-${randomBytes(4).toString('hex')}`);
  const responseFile = `${base}.res.json`;
  return new Promise<QueueResponse>((resolve, reject) => {
    const readResponse = async () => {
      try {
        const res = JSON.parse(await readFile(responseFile, 'utf8')) as QueueResponse;
        done();
        await rm(responseFile, { force: true });
        resolve(res);
      } catch {
        // not there yet
      }
    };
    const watcher = watch(dir, () => void readResponse());
    const timer = setTimeout(() => {
      done();
      reject(new Error(`the relay (pid ${holder}) did not answer within ${timeoutMs / 1000} s; is it stuck? (request left in ${dir})`));
    }, timeoutMs);
    const done = () => {
      watcher.close();
      clearTimeout(timer);
    };
    void (async () => {
      await writeFile(`${base}.tmp`, JSON.stringify(req));
      await rename(`${base}.tmp`, `${base}.req.json`);
      await readResponse();
    })().catch((err: unknown) => {
      done();
      reject(err as Error);
    });
  });
}

export function listTable(metas: readonly QueueEntryMeta[], area: QueueArea, now: number): string {
  if (metas.length === 0) return area === 'failed' ? 'no failed messages' : 'the queue is empty';
  const rows = metas.map((m) => {
    const pending = m.recipients.filter((r) => r.status === 'pending').length;
    const rcpts = `${m.recipients.length}${pending !== m.recipients.length ? ` (${pending} pending)` : ''}`;
    const next = area === 'failed' ? `failed ${formatAge(now - Date.parse(m.failedAt ?? m.receivedAt))} ago` : m.nextAttemptAt ? `in ${formatAge(Date.parse(m.nextAttemptAt) - now)}` : 'now';
    return [
      m.id,
      formatAge(now - Date.parse(m.receivedAt)),
      m.envelope.originalFrom || '<>',
      m.notice ? 'notice' : identityLabel(m.identity),
      m.serverName,
      rcpts,
      String(m.attempts),
      next,
      m.lastError ? `${m.lastError.code} ${m.lastError.enhanced} ${m.lastError.kind}: ${m.lastError.reason}${m.lastError.fix ? ` (fix: ${m.lastError.fix})` : ''}` : '',
    ];
  });
  const header = ['ID', 'AGE', 'SENDER', 'IDENTITY', 'SERVER', 'RCPTS', 'TRIES', area === 'failed' ? 'FAILED' : 'NEXT', 'LAST REASON'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line), `${metas.length} message${metas.length === 1 ? '' : 's'}`].join('\n');
}

/** "d=acme.example s=s2026" from a DKIM-Signature field. */
function dkimTags(field: string): string {
  const tag = (name: string) => new RegExp(`[;:\\s]${name}=([^;\\s]+)`).exec(field.replace(/\r\n[ \t]+/g, ' '))?.[1] ?? '?';
  return `d=${tag('d')} s=${tag('s')}`;
}

export function showEntry(m: QueueEntryMeta, area: QueueArea, now: number): string {
  const out = [
    `id:            ${m.id}${area === 'failed' ? ' (failed area)' : ''}${m.notice ? ' (a failure notice written by sendas)' : ''}`,
    `received:      ${m.receivedAt} (${formatAge(now - Date.parse(m.receivedAt))} ago) from ${m.client.address}${m.client.login ? ` as ${m.client.login}` : ''}`,
    `envelope from: ${m.envelope.originalFrom || '<>'}`,
    `identity:      ${identityLabel(m.identity)} via server ${m.serverName}, sent as ${m.accountAddress}`,
    `From:          ${m.fromBefore ?? '(none)'} -> ${m.fromAfter}`,
    `subject:       ${m.subject ?? '(none)'}`,
    ...(m.dkimSignature ? [`DKIM:          signed ${dkimTags(m.dkimSignature)} at acceptance`] : []),
    ...(m.messageId ? [`Message-ID:    <${m.messageId}> (sendas trace finds it after delivery too)`] : []),
    `size:          ${m.size} bytes`,
    `attempts:      ${m.attempts}${m.nextAttemptAt ? `, next at ${m.nextAttemptAt}` : area === 'active' ? ', next: now' : ''}`,
    'recipients:',
  ];
  for (const r of m.recipients) {
    const why = r.lastError ? ` - ${r.lastError.code} ${r.lastError.enhanced} ${r.lastError.kind}: ${r.lastError.reason}` : '';
    const when = r.deliveredAt ? ` at ${r.deliveredAt}` : '';
    out.push(`  ${r.address}: ${r.status}${when} (${r.attempts} attempt${r.attempts === 1 ? '' : 's'})${why}`);
    if (r.lastError?.fix) out.push(`    fix: ${r.lastError.fix}`);
  }
  return out.join('\n');
}
