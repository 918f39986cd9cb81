import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * JSON lines on stdout; human-readable (pino-pretty) when stdout is a terminal. Secrets are
 * Secret objects and serialize as "[secret]" whatever is logged.
 */
export function createLogger(opts: { level?: string; destination?: NodeJS.WritableStream; pretty?: boolean } = {}): Logger {
  const level = process.env.SENDAS_LOG_LEVEL ?? opts.level ?? 'info';
  if (opts.pretty ?? (process.stdout.isTTY && !opts.destination)) {
    return pino({ level, base: { service: 'sendas' }, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:standard', ignore: 'pid,hostname,service' } } });
  }
  return pino(
    {
      level,
      base: { service: 'sendas' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
