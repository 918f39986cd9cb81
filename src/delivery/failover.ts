import type { ServerConfig } from '../config/types.js';
import type { RelayError } from '../errors/relay-error.js';

export interface Route {
  readonly host: string;
  readonly port: number;
  readonly alternate: boolean;
}

/**
 * Failures that say "this host can't be reached" (connect, DNS, timeout, TLS, 421 service not
 * available), as opposed to "this host refuses this message or this account".
 */
export function isUnreachable(err: RelayError): boolean {
  return err.kind === 'network' || err.kind === 'tls' || /^421[ -]/.test(err.upstreamReply ?? '');
}

/**
 * Which host a server's messages go to. After the primary fails with a connection-level error
 * the alternate is used; once `cooldown` has passed, the next send probes the primary and, if it
 * answers, goes back to it. (Unlike some help-desk products, a restart is not needed to return.)
 */
export class FailoverState {
  private onAlternateSince: number | undefined;
  private nextProbeAt = 0;

  constructor(private readonly server: ServerConfig) {}

  get usingAlternate(): boolean {
    return this.onAlternateSince !== undefined;
  }

  primary(): Route {
    return { host: this.server.host, port: this.server.port, alternate: false };
  }

  alternate(): Route | undefined {
    const alt = this.server.alternate;
    return alt ? { host: alt.host, port: alt.port, alternate: true } : undefined;
  }

  /** Should the next send try the primary first (always, unless failed over and not yet cooled down)? */
  shouldTryPrimary(now: number): boolean {
    return this.onAlternateSince === undefined || now >= this.nextProbeAt;
  }

  /** The primary could not be reached: use the alternate until the cool-down has passed. */
  primaryFailed(now: number): void {
    if (this.onAlternateSince === undefined) this.onAlternateSince = now;
    this.nextProbeAt = now + (this.server.alternate?.cooldownMs ?? 60_000);
  }

  /** The primary answered: back to it. Returns true if this ends a failover. */
  primaryWorked(): boolean {
    const was = this.onAlternateSince !== undefined;
    this.onAlternateSince = undefined;
    return was;
  }
}
