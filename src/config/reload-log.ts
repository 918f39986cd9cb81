import type { Logger } from '../log.js';
import { describeChange, isEmptyChange } from './diff.js';
import type { ConfigEvent } from './holder.js';

/**
 * The one log line per reload that parsed the file (README "Live configuration"). A failure
 * with the same problems as the previous one is not logged again: an editor saving a broken file
 * repeatedly would otherwise flood the log. `closedPools`: the pools the new config retired.
 */
export function logConfigEvent(logger: Logger, event: ConfigEvent, closedPools?: readonly string[]): void {
  switch (event.type) {
    case 'failed': {
      if (event.repeated) return;
      const { error, serving } = event;
      logger.error(
        { reason: event.reason, file: error.file, issues: error.issues, version: serving.version },
        `configuration reload failed; still serving with version ${serving.version}: ${error.issues.length} problem${error.issues.length === 1 ? '' : 's'}`,
      );
      return;
    }
    case 'recovered': {
      const { version } = event.snapshot;
      logger.info({ reason: event.reason, version, recovered: true }, `configuration is valid again (version ${version}, unchanged)`);
      return;
    }
    case 'applied': {
      const { change, snapshot } = event;
      const fields = { reason: event.reason, version: snapshot.version, change, closedPools, ...(event.recovered ? { recovered: true } : {}) };
      const text = `configuration reloaded (version ${snapshot.version}): ${describeChange(change)}`;
      if (change.needsRestart.length > 0) logger.warn(fields, `${text}. Restart sendas to apply ${change.needsRestart.join(', ')}`);
      else logger.info(fields, isEmptyChange(change) ? `configuration reloaded (version ${snapshot.version}): secrets or formatting only` : text);
      for (const w of snapshot.warnings) logger.warn({ path: w.path }, w.message);
    }
  }
}
