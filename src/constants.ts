// Identifiers both the edge and the runner must agree on. Defined here once; never copy them.
import { badRequest } from "./errors.ts";

/** The id of the base model that ships in `models/pica-base-4m`; as `model` it means "no adapter". */
export const BASE_MODEL_ID = "pica-base-4m";

/** The longest `suffix` a fine-tuned model id may carry. */
export const MAX_SUFFIX_LENGTH = 40;

const SUFFIX_PATTERN = /^[a-z0-9-]*$/;
// Colons separate the parts of a fine-tuned id, so no part may contain one.
const BASE_PATTERN = /^[^:\s]+$/;
const IDENTIFIER_PATTERN = /^[A-Za-z0-9_-]+$/;

/** The parts of `ft:{base}:{tenant}:{suffix}:{jobId}`. `suffix` may be empty. */
export interface FineTunedModelIdParts {
  base: string;
  tenant: string;
  suffix: string;
  jobId: string;
}

/** Checks a user-chosen suffix (≤ 40 of [a-z0-9-]); throws a 400 naming `suffix`. */
export function validateSuffix(suffix: string): string {
  if (suffix.length > MAX_SUFFIX_LENGTH) {
    throw badRequest(`Invalid value for 'suffix': at most ${MAX_SUFFIX_LENGTH} characters, got ${suffix.length}.`, "suffix");
  }
  if (!SUFFIX_PATTERN.test(suffix)) {
    throw badRequest(`Invalid value for 'suffix': only lowercase letters, digits and '-' are allowed, got '${suffix}'.`, "suffix");
  }
  return suffix;
}

/** Builds the id of a fine-tuned adapter, `ft:{base}:{tenant}:{suffix}:{jobId}` (DESIGN §3.4). */
export function fineTunedModelId(parts: FineTunedModelIdParts): string {
  validateSuffix(parts.suffix);
  if (!BASE_PATTERN.test(parts.base)) throw new Error(`fineTunedModelId: invalid base model id '${parts.base}'`);
  if (!IDENTIFIER_PATTERN.test(parts.tenant)) throw new Error(`fineTunedModelId: invalid tenant id '${parts.tenant}'`);
  if (!IDENTIFIER_PATTERN.test(parts.jobId)) throw new Error(`fineTunedModelId: invalid job id '${parts.jobId}'`);
  return `ft:${parts.base}:${parts.tenant}:${parts.suffix}:${parts.jobId}`;
}

/** Splits a fine-tuned adapter id into its parts; null when `id` is not a well-formed one. */
export function parseFineTunedModelId(id: string): FineTunedModelIdParts | null {
  const pieces = id.split(":");
  if (pieces.length !== 5 || pieces[0] !== "ft") return null;
  const [, base, tenant, suffix, jobId] = pieces;
  if (!BASE_PATTERN.test(base) || !IDENTIFIER_PATTERN.test(tenant) || !IDENTIFIER_PATTERN.test(jobId)) return null;
  if (suffix.length > MAX_SUFFIX_LENGTH || !SUFFIX_PATTERN.test(suffix)) return null;
  return { base, tenant, suffix, jobId };
}
