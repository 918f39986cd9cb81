import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON lines on stdout. Secrets are Secret objects and serialize as "[secret]" whatever is logged. */
export function createLogger(opts: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.SENDAS_LOG_LEVEL ?? 'info',
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
