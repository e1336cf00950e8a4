import { defineConfig } from "vitest/config";

// One project per runtime. The Node project holds the engine, the runner and the end-to-end
// tests; a Workers project (vitest-pool-workers) joins when the edge exists.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "node",
          environment: "node",
          include: ["src/**/*.test.ts", "gpu-runner/**/*.test.ts", "test/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          pool: "forks",
        },
      },
    ],
  },
});
