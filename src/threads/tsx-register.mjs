// Loaded with --import by a worker thread whose module is TypeScript (the tests; see module.ts).
// tsx/esm (`--import tsx`) registers its hooks in the main thread only on Node 20 (in workers from
// 22.22.3 and 24.11.1, tsx 4.23); its API registers them wherever it is called.
import { register } from 'tsx/esm/api';

register();
