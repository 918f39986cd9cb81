import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { diffSnapshots, type ConfigChange } from './diff.js';
import { ConfigError, type ConfigIssue } from './issues.js';
import { loadConfigFile } from './load.js';
import type { ConfigSnapshot } from './types.js';

export type { ConfigChange };

/** The file on disk is invalid since `at`; the relay serves with the last good snapshot meanwhile. */
export interface ReloadError {
  readonly at: Date;
  readonly issues: readonly ConfigIssue[];
}

/** What subscribers hear. Each reload that parsed the file ends in exactly one of these. */
export type ConfigEvent =
  /** A new snapshot is current. `recovered`: it ended a period of invalid files. */
  | { readonly type: 'applied'; readonly reason: string; readonly previous: ConfigSnapshot; readonly snapshot: ConfigSnapshot; readonly change: ConfigChange; readonly recovered: boolean }
  /** The file is invalid; `repeated`: with the same problems as the previous failed reload. */
  | { readonly type: 'failed'; readonly reason: string; readonly error: ConfigError; readonly repeated: boolean; readonly serving: ConfigSnapshot }
  /** The file is valid again and means what the current snapshot already says. */
  | { readonly type: 'recovered'; readonly reason: string; readonly snapshot: ConfigSnapshot };

export interface ConfigHolderOptions {
  /** How a file becomes a snapshot (asynchronous: {age: …} secrets are decrypted); tests count or replace it. */
  readonly load?: (file: string) => ConfigSnapshot | Promise<ConfigSnapshot>;
}

/**
 * The current configuration: an immutable snapshot swapped whole on reload, the time it was
 * loaded, the last reload error, and the files it came from. Stages read `current` when they start
 * something (a session, a delivery attempt) and keep what they read.
 */
export class ConfigHolder {
  #current: ConfigSnapshot;
  #loadedAt = new Date();
  #lastReloadError: ReloadError | undefined;
  /** Secret files the last failed attempt referenced: a fix may be a file the current snapshot doesn't know. */
  #attemptedSecretFiles: readonly string[] = [];
  #seenFiles: string | undefined;
  readonly #listeners = new Set<(event: ConfigEvent) => void>();
  readonly #load: (file: string) => ConfigSnapshot | Promise<ConfigSnapshot>;
  /** The reload running now: the next one waits for it, so reloads apply in the order asked. */
  #reloading: Promise<unknown> = Promise.resolve();

  constructor(initial: ConfigSnapshot, opts: ConfigHolderOptions = {}) {
    this.#current = initial;
    this.#load = opts.load ?? ((file) => loadConfigFile(file));
    this.#seenFiles = this.filesFingerprint();
  }

  get current(): ConfigSnapshot {
    return this.#current;
  }

  get loadedAt(): Date {
    return this.#loadedAt;
  }

  get lastReloadError(): ReloadError | undefined {
    return this.#lastReloadError;
  }

  /** The config file and every secret file it references (now, or in the invalid file on disk): what a watcher watches. */
  get files(): readonly string[] {
    return [...new Set([this.#current.file, ...this.#current.secretFiles, ...this.#attemptedSecretFiles])];
  }

  /** Calls `listener` after every reload that parsed the file; returns the unsubscribe function. */
  subscribe(listener: (event: ConfigEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Re-reads the file, unless neither it nor a secret file changed since the last time (a SIGHUP
   * and the watcher's event for one edit, an editor touching the file). Returns what changed when
   * a new snapshot became current. Reloads run one at a time: loading waits for decryption, and
   * a reload asked meanwhile starts (and fingerprints the files) after the running one is done.
   */
  reload(reason: string): Promise<ConfigChange | undefined> {
    const run = this.#reloading.then(() => this.reloadNow(reason));
    this.#reloading = run.catch(() => undefined);
    return run;
  }

  private async reloadNow(reason: string): Promise<ConfigChange | undefined> {
    const seen = this.filesFingerprint();
    if (seen !== undefined && seen === this.#seenFiles) return undefined;
    this.#seenFiles = seen;
    let next: ConfigSnapshot;
    try {
      next = await this.#load(this.#current.file);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const repeated = this.#lastReloadError !== undefined && JSON.stringify(this.#lastReloadError.issues) === JSON.stringify(err.issues);
      this.#lastReloadError = { at: new Date(), issues: err.issues };
      this.#attemptedSecretFiles = err.secretFiles;
      this.emit({ type: 'failed', reason, error: err, repeated, serving: this.#current });
      return undefined;
    }
    this.#attemptedSecretFiles = [];
    if (next.version === this.#current.version) {
      // an editor touched the file, or a directory event: nothing to do, but an earlier error is over
      if (this.#lastReloadError) {
        this.#lastReloadError = undefined;
        this.emit({ type: 'recovered', reason, snapshot: this.#current });
      }
      return undefined;
    }
    return this.apply(next, reason);
  }

  /** Makes a validated snapshot current. */
  apply(next: ConfigSnapshot, reason: string): ConfigChange {
    const previous = this.#current;
    const change = diffSnapshots(previous, next);
    this.#current = next;
    this.#loadedAt = new Date();
    const recovered = this.#lastReloadError !== undefined;
    this.#lastReloadError = undefined;
    this.emit({ type: 'applied', reason, previous, snapshot: next, change, recovered });
    return change;
  }

  private emit(event: ConfigEvent): void {
    for (const listener of this.#listeners) listener(event);
  }

  /** A digest of the config file and the secret files, as they are on disk now. */
  private filesFingerprint(): string | undefined {
    const [file, ...secretFiles] = this.files;
    try {
      const hash = createHash('sha256').update(readFileSync(file!));
      for (const f of secretFiles) {
        try {
          hash.update('\0').update(readFileSync(f));
        } catch {
          hash.update('\0-');
        }
      }
      return hash.digest('hex');
    } catch {
      return undefined;
    }
  }
}
