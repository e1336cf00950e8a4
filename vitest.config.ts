import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// One project per runtime: Node (engine, runner, end-to-end) and Workers (the edge, in workerd
// with local D1, R2, Queues and Durable Objects, the real migrations applied).
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
      {
        plugins: [
          cloudflareTest(async () => ({
            wrangler: { configPath: "./workers/wrangler.jsonc" },
            miniflare: {
              bindings: {
                TEST_MIGRATIONS: await readD1Migrations("./migrations"),
                ADMIN_TOKEN: "test-admin-token",
                RUNNER_SECRET: "test-runner-secret",
                SESSION_SECRET: "test-session-secret-of-at-least-32-characters",
                RUNNER_URLS: "http://runner-a.test,http://runner-b.test",
                PUBLIC_URL: "http://edge.test",
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["workers/**/*.test.ts"],
          globalSetup: ["./test/workerd-log-filter.ts"],
          setupFiles: ["./workers/test/apply-migrations.ts"],
        },
      },
    ],
  },
});
