// PiCa's ranks and target modules: which ranks a fine-tuning job or a PEFT import may ask for.
// One rule, applied by the edge before it dispatches a job (from what runners report in their
// heartbeats) and by the runner itself (its basis size, job manager and PEFT import).
import { z } from "zod";

/** The linear modules of a decoder layer, by their Hugging Face names, in the canonical order. */
export const ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"] as const;
export const MLP_MODULES = ["gate_proj", "up_proj", "down_proj"] as const;
export const LINEAR_MODULES = [...ATTENTION_MODULES, ...MLP_MODULES] as const;
export type LinearModule = (typeof LINEAR_MODULES)[number];

/** The largest rank any adapter may have: the largest the PiCa paper trains (r = 256). */
export const PICA_MAX_RANK = 256;

/** `[out, in]` of every linear module of a base model, as PyTorch stores the weight. */
export type LinearShapes = Readonly<Record<LinearModule, readonly [number, number]>>;

/** What bounds the ranks one runner trains and serves: its model's linear shapes and the rows of its basis. */
export interface RankLimits {
  linearShapes: LinearShapes;
  /** Rows of every P of the runner's basis (an adapter of rank r uses the first r). */
  basisRows: number;
}

/** The largest rank allowed, and what sets it (for error messages). */
export interface RankCeiling {
  rank: number;
  /** e.g. "min(out, in) of k_proj, whose weight is [64, 256]". */
  reason: string;
}

/**
 * The largest rank an adapter of `targetModules` may have: at most PICA_MAX_RANK, at most
 * min(out, in) of every targeted weight (P has orthonormal rows in in-space, M maps them to
 * out-space, so a larger rank adds nothing a smaller one cannot express), and at most the rows of
 * the basis. Without limits (no runner has reported its model yet) only the first bound applies.
 */
export function rankCeiling(limits: RankLimits | null, targetModules: readonly LinearModule[]): RankCeiling {
  let ceiling: RankCeiling = { rank: PICA_MAX_RANK, reason: `the largest PiCa rank, ${PICA_MAX_RANK}` };
  if (limits === null) return ceiling;
  for (const module of LINEAR_MODULES) {
    if (!targetModules.includes(module)) continue;
    const [out, inputs] = limits.linearShapes[module];
    const bound = Math.min(out, inputs);
    if (bound < ceiling.rank) ceiling = { rank: bound, reason: `min(out, in) of ${module}, whose weight is [${out}, ${inputs}]` };
  }
  if (limits.basisRows < ceiling.rank) ceiling = { rank: limits.basisRows, reason: `the rows of the runner's PiCa basis, ${limits.basisRows}` };
  return ceiling;
}

/** The rows a basis needs to serve every rank the model allows on these modules: the ceiling without a basis. */
export function basisRowsFor(linearShapes: LinearShapes, targetModules: readonly LinearModule[]): number {
  return rankCeiling({ linearShapes, basisRows: PICA_MAX_RANK }, targetModules).rank;
}

/** Why `rank` is refused, or null when it is within the ceiling. */
export function rankRefusal(rank: number, ceiling: RankCeiling, modelName: string): string | null {
  if (rank <= ceiling.rank) return null;
  return `rank ${rank} is above ${ceiling.rank}, the largest rank ${modelName} allows for these target modules (${ceiling.reason})`;
}

/** Target modules as a job asks for them: known names, at least one, none twice. */
export const targetModulesSchema = z
  .array(z.enum(LINEAR_MODULES))
  .min(1, "at least one module is needed")
  .refine((modules) => new Set(modules).size === modules.length, "a module is listed twice")
  .describe(`the linear modules the adapter adapts; default all seven (${LINEAR_MODULES.join(", ")})`);

/** Target modules in the canonical order (LINEAR_MODULES), whatever order they were given in. */
export function canonicalModules(modules: readonly LinearModule[]): LinearModule[] {
  return LINEAR_MODULES.filter((module) => modules.includes(module));
}

/** The rank limits a runner reports in its heartbeat. */
export const rankLimitsSchema = z
  .object({
    linear_shapes: z.object(
      Object.fromEntries(LINEAR_MODULES.map((module) => [module, z.tuple([z.int().min(1), z.int().min(1)])])) as Record<
        LinearModule,
        z.ZodTuple<[z.ZodInt, z.ZodInt], null>
      >,
    ),
    basis_rows: z.int().min(1),
  })
  .strict();
export type RankLimitsBody = z.infer<typeof rankLimitsSchema>;

/** A heartbeat's limits as the rule reads them. */
export function rankLimitsOf(body: RankLimitsBody): RankLimits {
  return { linearShapes: body.linear_shapes, basisRows: body.basis_rows };
}

/** The heartbeat form of a runner's limits. */
export function rankLimitsBody(limits: RankLimits): RankLimitsBody {
  const linear_shapes = Object.fromEntries(LINEAR_MODULES.map((module) => [module, [...limits.linearShapes[module]]])) as RankLimitsBody["linear_shapes"];
  return { linear_shapes, basis_rows: limits.basisRows };
}
