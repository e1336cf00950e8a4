// drizzle-kit: `npx drizzle-kit generate` writes a migration for each schema change into migrations/.
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "sqlite",
  schema: "./workers/src/db/schema.ts",
  out: "./migrations",
});
