import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // e2e tests bind loopback ports and spawn swaks; two cores, so keep parallelism modest
    maxWorkers: 2,
  },
});
