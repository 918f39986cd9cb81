import { HeaderTooLargeError } from '../mail/header-stream.js';
import { RelayError, internalError, isRelayError } from './relay-error.js';

/**
 * What the client is told when its message fails inside the relay while it is being received:
 * a RelayError as it is, a header section over the limit as 552 5.3.4, anything else as the
 * internal 451 (the client keeps the message and retries).
 */
export function receptionError(err: unknown, id: string): RelayError {
  if (isRelayError(err)) return err;
  if (err instanceof HeaderTooLargeError) {
    return new RelayError('message', { code: 552, enhanced: '5.3.4' }, `The header section is larger than ${err.limit} bytes`);
  }
  return internalError(id, err);
}

/**
 * A file-system failure while writing a queue entry, said as such: the client keeps the message
 * and retries (4xx), ops see the system's error code. A full disk is 452 4.3.1, "insufficient
 * system storage" (RFC 5321, RFC 3463), as Postfix answers. Anything else: receptionError.
 */
export function queueWriteError(err: unknown, id: string): RelayError {
  if (isRelayError(err) || !isSystemError(err)) return receptionError(err, id);
  const { code } = err;
  const full = code === 'ENOSPC' || code === 'EDQUOT';
  return new RelayError(
    'internal',
    full ? { code: 452, enhanced: '4.3.1' } : { code: 451, enhanced: '4.3.0' },
    `The relay could not store the message in its queue (${code}${full ? ': the disk is full' : ''}); nothing was accepted, send it again later (id ${id})`,
    { cause: err },
  );
}

/** An error of a system call (ENOSPC, EACCES…), as opposed to Node's own ERR_… codes. */
export function isSystemError(err: unknown): err is NodeJS.ErrnoException & { code: string } {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code);
}
