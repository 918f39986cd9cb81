import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // e2e tests bind loopback ports and spawn swaks; two cores, so keep parallelism modest
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        // in-process and without shared state: one worker runs file after file without loading the
        // modules again (a fresh process per file was a third of the unit tests' time)
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'], isolate: false },
      },
      {
        extends: true,
        // relays, child processes, environment variables: each file in a fresh process
        test: { name: 'e2e', include: ['test/e2e/**/*.test.ts', 'test/support/**/*.test.ts', 'test/*.test.ts'] },
      },
    ],
  },
});
