/** Where the shipped base model lives in the repository (reproduced by `npm run pretrain`). */
import { join } from "node:path";
import { BASE_MODEL_ID } from "../../src/constants.ts";

/** The shipped model's checkpoint directory: models/<BASE_MODEL_ID>. */
export const SHIPPED_MODEL_DIRECTORY = join(import.meta.dirname, "..", "..", "models", BASE_MODEL_ID);
