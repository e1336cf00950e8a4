import { describe, expect, it } from "vitest";
import {
  basisRowsFor,
  canonicalModules,
  LINEAR_MODULES,
  rankCeiling,
  rankLimitsBody,
  rankLimitsOf,
  rankLimitsSchema,
  rankRefusal,
  targetModulesSchema,
  type LinearShapes,
} from "./adapter-rank.ts";

/** `[out, in]` of a Llama-family model's linear weights. */
function shapes(hidden: number, heads: number, kvHeads: number, headDim: number, intermediate: number): LinearShapes {
  return {
    q_proj: [heads * headDim, hidden],
    k_proj: [kvHeads * headDim, hidden],
    v_proj: [kvHeads * headDim, hidden],
    o_proj: [hidden, heads * headDim],
    gate_proj: [intermediate, hidden],
    up_proj: [intermediate, hidden],
    down_proj: [hidden, intermediate],
  };
}

const SHIPPED = shapes(256, 4, 2, 64, 704); // models/pica-base-4m: k and v are [128, 256]
const QWEN_05B = shapes(896, 14, 2, 64, 4864);
const LLAMA_8B = shapes(4096, 32, 8, 128, 14336);
const PAPER_MODULES = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"] as const;

describe("rankCeiling", () => {
  it("is min(256, min(out, in) of every targeted weight, the basis's rows)", () => {
    expect(rankCeiling({ linearShapes: SHIPPED, basisRows: 256 }, LINEAR_MODULES)).toEqual({
      rank: 128,
      reason: "min(out, in) of k_proj, whose weight is [128, 256]",
    });
    expect(rankCeiling({ linearShapes: QWEN_05B, basisRows: 256 }, PAPER_MODULES).rank).toBe(128);
    expect(rankCeiling({ linearShapes: LLAMA_8B, basisRows: 256 }, LINEAR_MODULES)).toEqual({ rank: 256, reason: "the largest PiCa rank, 256" });
    // Without k and v the 0.5B weights allow 896, but PiCa stops at 256; a basis of 96 rows, at 96.
    expect(rankCeiling({ linearShapes: QWEN_05B, basisRows: 256 }, ["q_proj", "up_proj", "down_proj"]).rank).toBe(256);
    expect(rankCeiling({ linearShapes: QWEN_05B, basisRows: 96 }, ["q_proj", "up_proj"])).toEqual({
      rank: 96,
      reason: "the rows of the runner's PiCa basis, 96",
    });
    expect(rankCeiling(null, ["k_proj"]).rank).toBe(256);
  });

  it("sizes a basis to the model's ceiling", () => {
    expect(basisRowsFor(SHIPPED, LINEAR_MODULES)).toBe(128);
    expect(basisRowsFor(QWEN_05B, LINEAR_MODULES)).toBe(128);
    expect(basisRowsFor(LLAMA_8B, LINEAR_MODULES)).toBe(256);
  });

  it("refuses a rank above the ceiling with the reason, and accepts the ceiling", () => {
    const ceiling = rankCeiling({ linearShapes: SHIPPED, basisRows: 128 }, LINEAR_MODULES);
    expect(rankRefusal(128, ceiling, "pica-base-4m")).toBeNull();
    expect(rankRefusal(129, ceiling, "pica-base-4m")).toBe(
      "rank 129 is above 128, the largest rank pica-base-4m allows for these target modules (min(out, in) of k_proj, whose weight is [128, 256])",
    );
  });
});

describe("target modules", () => {
  it("accepts a subset in any order and puts it in the canonical order", () => {
    expect(canonicalModules(targetModulesSchema.parse(["down_proj", "q_proj", "v_proj"]))).toEqual(["q_proj", "v_proj", "down_proj"]);
  });

  it("refuses unknown modules, an empty list and repeats", () => {
    expect(targetModulesSchema.safeParse(["q_proj", "qkv_proj"]).error?.issues[0].path).toEqual([1]);
    expect(targetModulesSchema.safeParse([]).error?.issues[0].message).toBe("at least one module is needed");
    expect(targetModulesSchema.safeParse(["q_proj", "q_proj"]).error?.issues[0].message).toBe("a module is listed twice");
  });
});

describe("rank limits in a heartbeat", () => {
  it("round-trip, and refuse shapes that are not positive pairs", () => {
    const body = rankLimitsBody({ linearShapes: QWEN_05B, basisRows: 128 });
    expect(rankLimitsOf(rankLimitsSchema.parse(JSON.parse(JSON.stringify(body))))).toEqual({ linearShapes: QWEN_05B, basisRows: 128 });
    expect(rankLimitsSchema.safeParse({ ...body, linear_shapes: { ...body.linear_shapes, o_proj: [896] } }).success).toBe(false);
    expect(rankLimitsSchema.safeParse({ ...body, basis_rows: 0 }).success).toBe(false);
  });
});
