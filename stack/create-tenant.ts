/**
 * Another tenant on the local stack and an API key for it, through the edge's admin API with the
 * admin token `npm start` generated (ADMIN_TOKEN in `<data dir>/secrets.env`). Prints the tenant's
 * id and the key; the key is shown here once and stored nowhere in plain text.
 *
 *   npx tsx stack/create-tenant.ts --name NAME [--scopes inference,fine_tuning] [--data-dir DIR] [--url URL]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createTenantWithKey, type Scope } from "./admin.ts";
import { DEFAULT_DATA_DIR, DEFAULT_EDGE_PORT, readStackSecrets } from "./cluster.ts";

const SCOPES: readonly Scope[] = ["inference", "fine_tuning", "admin"];

/** The scopes named in `--scopes`, each checked. */
function scopesOf(text: string): Scope[] {
  const names = text.split(",").map((name) => name.trim());
  const unknown = names.filter((name) => !SCOPES.includes(name as Scope));
  if (unknown.length > 0 || names.length === 0) throw new Error(`--scopes takes a comma-separated list of ${SCOPES.join(", ")}; got ${JSON.stringify(text)}`);
  return names as Scope[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      name: { type: "string" },
      scopes: { type: "string", default: "inference,fine_tuning" },
      "data-dir": { type: "string", default: DEFAULT_DATA_DIR },
      url: { type: "string", default: `http://127.0.0.1:${DEFAULT_EDGE_PORT}` },
    },
  });
  if (values.name === undefined) throw new Error("give the tenant a name: npx tsx stack/create-tenant.ts --name NAME");
  const scopes = scopesOf(values.scopes);
  const secrets = await readStackSecrets(values["data-dir"]);
  if (secrets === null) throw new Error(`no ADMIN_TOKEN in ${join(values["data-dir"], "secrets.env")}: npm start writes it on its first start`);
  const created = await createTenantWithKey(values.url, secrets.ADMIN_TOKEN, { name: values.name }, scopes).catch((error: Error) => {
    throw error.cause === undefined ? error : new Error(`the edge at ${values.url} did not answer (is npm start running?): ${error.message}`);
  });
  console.log(`tenant ${created.tenantId} (${values.name}), scopes ${scopes.join(", ")}, API key: ${created.key}`);
}

main().catch((error: unknown) => {
  console.error(`error: ${(error as Error).message}`);
  process.exit(1);
});
