import { dirname } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';

/**
 * Watches the config file's directory and the directories of the secret files it references,
 * so an in-place write, an editor's write-and-rename and a Kubernetes ConfigMap symlink swap
 * (..data → new directory) are all seen. Every event only *asks* for a reload, debounced; the
 * reload itself compares versions, so events that change nothing cost one read of the file.
 */
export class ConfigWatcher {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private dirs = new Set<string>();

  constructor(
    private readonly onChange: (reason: string) => void,
    private readonly debounceMs = 250,
  ) {}

  /** (Re)points the watcher at the config file and the secret files of the current snapshot. */
  async watch(configFile: string, secretFiles: readonly string[]): Promise<void> {
    const dirs = new Set([dirname(configFile), ...secretFiles.map((f) => dirname(f))]);
    if (this.watcher && [...dirs].every((d) => this.dirs.has(d)) && dirs.size === this.dirs.size) return;
    await this.watcher?.close();
    this.dirs = dirs;
    this.watcher = watch([...dirs], { ignoreInitial: true, depth: 0, followSymlinks: true });
    this.watcher.on('all', (_event, path) => this.request(`file changed: ${path}`));
    await new Promise<void>((resolve) => this.watcher!.once('ready', () => resolve()));
  }

  /** A reload request (file event or SIGHUP): coalesced into one reload after `debounceMs`. */
  request(reason: string): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.onChange(reason);
    }, this.debounceMs);
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    await this.watcher?.close();
    this.watcher = undefined;
  }
}
