/** Hono's environment for the edge app: the worker's bindings and what middleware sets. */
import type { KeyScope } from "./auth/keys.ts";

export interface Caller {
  tenantId: string;
  keyId: string;
  scopes: KeyScope[];
}

export interface AppEnv {
  Bindings: Env;
  Variables: { caller: Caller };
}
