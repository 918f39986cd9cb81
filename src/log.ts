import pino, { type Logger } from 'pino';
import { lineDestination } from './log/line.js';

export type { Logger };

/** `log.format`: json lines (for collectors), one readable line per event (line), or pino-pretty's multi-line blocks (pretty). */
export type LogFormat = 'json' | 'line' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'line', 'pretty'];

/**
 * JSON lines on stdout; one readable line per event when stdout is a terminal (`log.format`,
 * SENDAS_LOG_FORMAT wins). Secrets are Secret objects and serialize as "[secret]" whatever is logged.
 */
export function createLogger(opts: { level?: string; destination?: NodeJS.WritableStream; pretty?: boolean; format?: LogFormat } = {}): Logger {
  const level = process.env.SENDAS_LOG_LEVEL ?? opts.level ?? 'info';
  const format = logFormat(opts);
  if (format === 'pretty') {
    return pino({ level, base: { service: 'sendas' }, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:standard', ignore: 'pid,hostname,service' } } });
  }
  const out = opts.destination ?? pino.destination({ dest: 1, sync: false });
  const logger = pino(
    {
      level,
      base: { service: 'sendas' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // json is the default off a terminal and what the benchmark measures: pino's own path, untouched
    format === 'line' ? lineDestination(out) : out,
  );
  const env = process.env.SENDAS_LOG_FORMAT;
  if (env && !(LOG_FORMATS as readonly string[]).includes(env.toLowerCase())) logger.warn({ SENDAS_LOG_FORMAT: env }, `SENDAS_LOG_FORMAT is not one of ${LOG_FORMATS.join(', ')}: ignored`);
  return logger;
}

/** SENDAS_LOG_FORMAT, then the config's, then by where stdout goes. */
function logFormat(opts: { destination?: NodeJS.WritableStream; pretty?: boolean; format?: LogFormat }): LogFormat {
  const env = process.env.SENDAS_LOG_FORMAT?.toLowerCase();
  if (env && (LOG_FORMATS as readonly string[]).includes(env)) return env as LogFormat;
  if (opts.pretty) return 'pretty';
  return opts.format ?? (process.stdout.isTTY && !opts.destination ? 'line' : 'json');
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
