import type { ServerConfig } from '../config/types.js';
import type { SendOutcome } from '../transport/send.js';

export interface Route {
  readonly host: string;
  readonly port: number;
  readonly alternate: boolean;
}

/** What a send's outcome means for the server's routing. */
export type FailoverTurn =
  /** The primary could not be reached: send this batch again on the alternate. */
  | 'use-alternate'
  /** The primary took a send begun after the cool-down: traffic is back on it. */
  | 'back-to-primary'
  | undefined;

/**
 * Which host a server's messages go to. After the primary fails with an error classified as
 * unreachable the alternate is used; once `cooldown` has passed, the next send probes the primary
 * and, if it answers, traffic goes back to it (no restart needed).
 *
 * Only a send that began after the cool-down ends a failover: sends begun before the primary
 * failed finish afterwards, and one of them succeeding on a connection opened back then says
 * nothing about the primary now (it used to end every failover within milliseconds).
 */
export class FailoverState {
  private failedOver = false;
  /** No send goes to the primary before this, and only sends begun from then on count. */
  private nextProbeAt = 0;
  /** When traffic last moved (to the alternate or back); undefined while it never has. */
  private switchedAt: number | undefined;

  constructor(private readonly server: ServerConfig) {}

  get usingAlternate(): boolean {
    return this.failedOver;
  }

  primary(): Route {
    return { host: this.server.host, port: this.server.port, alternate: false };
  }

  alternate(): Route | undefined {
    const alt = this.server.alternate;
    return alt ? { host: alt.host, port: alt.port, alternate: true } : undefined;
  }

  /** Should a send starting at `now` try the primary first (always, unless failed over and not yet cooled down)? */
  shouldTryPrimary(now: number): boolean {
    return !this.failedOver || now >= this.nextProbeAt;
  }

  /** Where a send starting at `now` goes first. */
  routeAt(now: number): Route {
    const alternate = this.alternate();
    return alternate && !this.shouldTryPrimary(now) ? alternate : this.primary();
  }

  /**
   * Applies the outcome of a send on `route` that began at `startedAt` and ended at `now`. The
   * classification decides what "unreachable" is; this only keeps time.
   */
  afterSend(route: Route, outcome: SendOutcome, startedAt: number, now: number): FailoverTurn {
    if (route.alternate) return undefined;
    if (!outcome.ok) {
      if (!outcome.error.unreachable || !this.server.alternate) return undefined;
      this.primaryFailed(now);
      return 'use-alternate';
    }
    return this.primaryWorked(startedAt, now) ? 'back-to-primary' : undefined;
  }

  /** The primary could not be reached: use the alternate until the cool-down has passed. */
  primaryFailed(now: number): void {
    const alternate = this.server.alternate;
    if (!alternate) return; // nowhere to go: every send keeps trying the primary
    // a failed probe after the cool-down confirms the failover: it does not start a new one
    if (!this.failedOver) this.switchedAt = now;
    this.failedOver = true;
    this.nextProbeAt = now + alternate.cooldownMs;
  }

  /** The primary took a send begun at `startedAt` (and ended at `now`). Returns true if this ends a failover. */
  primaryWorked(startedAt: number, now = startedAt): boolean {
    if (!this.failedOver || startedAt < this.nextProbeAt) return false;
    this.failedOver = false;
    this.switchedAt = now;
    return true;
  }

  /**
   * The host traffic is on, for /status and the route metric: the alternate from the failover
   * until the primary has taken a send again (sends after the cool-down probe the primary, but
   * only a success moves traffic back), and since when (undefined: never moved).
   */
  inUse(): { route: Route; since: number | undefined } {
    return { route: (this.failedOver && this.alternate()) || this.primary(), since: this.switchedAt };
  }
}

/** What a server's failover depends on: a change (reload) starts it afresh. */
export function failoverFingerprint(server: ServerConfig): string {
  return `${server.host}:${server.port}|${server.alternate?.host}:${server.alternate?.port}|${server.alternate?.cooldownMs}`;
}
