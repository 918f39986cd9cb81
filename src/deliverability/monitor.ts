import type { ConfigSnapshot } from '../config/types.js';
import type { Logger } from '../log.js';
import type { DeliverabilityStatus } from '../ops/status.js';
import type { DeliverabilityReport } from './check.js';
import { dnsResolve } from './dns.js';

export interface MonitorOptions {
  readonly getSnapshot: () => ConfigSnapshot;
  readonly logger: Logger;
  readonly now?: () => Date;
}

/**
 * The relay's background `sendas check --dns`: at start, after each applied reload and every
 * `deliverability.interval`. Never on the message path and never fatal: DNS that can't be
 * reached is a result ("could not look up: …") in /status, like any other.
 */
export class DeliverabilityMonitor {
  private report: DeliverabilityReport | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The check in flight; a newer one (a reload) makes its result stale. */
  private generation = 0;
  private inFlight: { cancel(): void } | undefined;
  private stopped = false;
  private failure: string | undefined;

  constructor(private readonly opts: MonitorOptions) {}

  /** Checks the current snapshot now (a check already running is dropped), then again after the interval. */
  check(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.inFlight?.cancel();
    this.inFlight = undefined;
    const generation = ++this.generation;
    const snapshot = this.opts.getSnapshot();
    if (!snapshot.deliverability.check) {
      this.report = undefined;
      return;
    }
    let resolve: ReturnType<typeof dnsResolve>;
    try {
      resolve = dnsResolve({ servers: snapshot.deliverability.dnsServers });
    } catch (err) {
      // the schema lets only addresses through; whatever else Node refuses must not stop the relay
      this.failure = `the check failed: ${(err as Error).message}`;
      this.opts.logger.error(`deliverability: ${this.failure}`);
      return;
    }
    this.inFlight = resolve;
    // loaded at the first check: mailauth's SPF and DMARC code and the public suffix list cost a
    // quarter of a second, which the relay's start need not wait for
    import('./check.js').then(({ checkDeliverability }) => checkDeliverability(snapshot, resolve, this.opts.now)).then(
      (report) => {
        if (generation !== this.generation || this.stopped) return;
        this.report = report;
        this.failure = undefined;
        this.logReport(report, snapshot);
        this.schedule(snapshot.deliverability.intervalMs);
      },
      (err: unknown) => {
        if (generation !== this.generation || this.stopped) return;
        // a bug in the check, not DNS trouble (that is part of the report): say so, keep relaying
        this.failure = `the check failed: ${(err as Error).message}`;
        this.opts.logger.error({ err }, `deliverability: ${this.failure}`);
        this.schedule(snapshot.deliverability.intervalMs);
      },
    );
  }

  /** The `deliverability` field of /status. */
  status(): DeliverabilityStatus {
    const snapshot = this.opts.getSnapshot();
    if (!snapshot.deliverability.check) return { state: 'off' };
    if (this.failure) return { state: 'failed', error: this.failure };
    if (!this.report) return { state: 'pending' };
    return { state: 'checked', checkedAt: this.report.checkedAt, result: this.report.result, domains: this.report.domains };
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.inFlight?.cancel();
  }

  private schedule(ms: number): void {
    this.inFlight = undefined;
    this.timer = setTimeout(() => this.check(), ms);
    // the next check must never keep a stopping process alive
    this.timer.unref();
  }

  private logReport(report: DeliverabilityReport, snapshot: ConfigSnapshot): void {
    for (const d of report.domains) {
      const fields = { domain: d.domain, server: d.server, result: d.result, problems: d.problems, fixes: d.fixes.map((f) => f.record), config: snapshot.version };
      if (d.result === 'fail') {
        this.opts.logger.warn(fields, `deliverability: mail from ${d.addresses.join(', ')} through server ${d.server} would fail DMARC: ${d.problems.at(-1) ?? ''} (sendas check --dns shows the records to add)`);
      } else if (d.result === 'unknown') {
        this.opts.logger.info(fields, `deliverability: ${d.domain} through server ${d.server} not checked: ${d.problems.find((p) => /could not|no A or AAAA/.test(p)) ?? d.problems[0] ?? 'could not look up'}`);
      }
    }
    const passed = report.domains.filter((d) => d.result === 'pass').length;
    this.opts.logger.info({ result: report.result, domains: report.domains.length, passed }, `deliverability checked: ${passed} of ${report.domains.length} From domain${report.domains.length === 1 ? '' : 's'} by server pass DMARC`);
  }
}
