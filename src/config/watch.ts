import { lstatSync, readlinkSync, realpathSync, statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

/** Deeper than this, a chain of symlinks is a loop (the kernel's ELOOP limit is 40; ConfigMaps use 2). */
const MAX_LINK_HOPS = 16;

/**
 * Watches the directory entries that decide what the config file and its secret files contain:
 * each file's own name, every symlink on the way to its content and the real file, each in its
 * directory. A directory is watched rather than the file itself, so an in-place write, an
 * editor's write-and-rename and a Kubernetes ConfigMap update (the `..data` symlink swapped to a
 * new directory) are all seen; an event for any other name in that directory (a log file written
 * beside relay.yaml) is dropped at its name, before any other work. Events only *ask* for a
 * reload, debounced; the reload itself compares the files' bytes.
 *
 * node:fs watch, not chokidar: on every event in a watched directory chokidar lists the
 * directory and lstat()s each entry (readdirp with alwaysStat) before its `ignored` test runs,
 * and it watches and stats every file there; a busy neighbour file cost an idle relay 10-20% of
 * a core.
 */
export class ConfigWatcher {
  /** Directory → its watch and the names in it that matter. */
  private readonly dirs = new Map<string, { watcher: FSWatcher; names: Set<string> }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly onChange: (reason: string) => void,
    private readonly debounceMs = 250,
  ) {}

  /** (Re)points the watcher at these files (the config file and its secret files); cheap when nothing moved. */
  watch(files: readonly string[]): void {
    const wanted = new Map<string, Set<string>>();
    for (const f of files) addWatchPoints(f, wanted, 0);
    for (const [dir, entry] of this.dirs) {
      if (!wanted.has(dir)) {
        entry.watcher.close();
        this.dirs.delete(dir);
      }
    }
    for (const [dir, names] of wanted) {
      const entry = this.dirs.get(dir);
      if (entry) entry.names = names;
      else this.open(dir, names);
    }
  }

  /** The directory entries watched now, for tests and diagnostics. */
  watched(): Map<string, string[]> {
    return new Map([...this.dirs].map(([dir, { names }]) => [dir, [...names].sort()]));
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
    this.timer = undefined;
    for (const { watcher } of this.dirs.values()) watcher.close();
    this.dirs.clear();
  }

  private open(dir: string, names: Set<string>): void {
    let watcher: FSWatcher;
    try {
      watcher = watch(dir);
    } catch {
      // gone since addWatchPoints looked: the next reload request points the watcher again
      return;
    }
    const entry = { watcher, names };
    watcher.on('change', (_event, name) => {
      // no name: the platform could not say which entry changed, so it may be ours
      const file = name === null ? undefined : name.toString();
      if (file === undefined || entry.names.has(file)) this.request(`file changed: ${file === undefined ? dir : resolve(dir, file)}`);
    });
    watcher.on('error', () => {
      // the directory itself went away (or the watch broke): ask for a reload, which re-points the watch
      watcher.close();
      if (this.dirs.get(dir) === entry) this.dirs.delete(dir);
      this.request(`watch of ${dir} ended`);
    });
    this.dirs.set(dir, entry);
  }
}

/**
 * Adds the (directory, name) pairs whose change can change what `path` reads: its own entry, and
 * for each symlink on the way (the file itself, or a directory such as Kubernetes' `..data`) the
 * link's entry and then its target's. A directory that does not exist is watched for in its parent.
 */
function addWatchPoints(path: string, points: Map<string, Set<string>>, hops: number): void {
  const abs = resolve(path);
  const dir = dirname(abs);
  addPoint(points, realOr(dir), basename(abs));
  if (hops >= MAX_LINK_HOPS) return;
  for (let up = dir; dirname(up) !== up; up = dirname(up)) {
    if (isSymlink(up)) addWatchPoints(up, points, hops + 1);
  }
  if (isSymlink(abs)) {
    try {
      addWatchPoints(resolve(dir, readlinkSync(abs)), points, hops + 1);
    } catch {
      // replaced since lstat: the event that replaced it asks for a reload
    }
  }
}

function addPoint(points: Map<string, Set<string>>, dir: string, name: string): void {
  if (!isDirectory(dir) && dirname(dir) !== dir) {
    addPoint(points, dirname(dir), basename(dir));
    return;
  }
  let names = points.get(dir);
  if (!names) points.set(dir, (names = new Set()));
  names.add(name);
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function realOr(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    return dir;
  }
}
