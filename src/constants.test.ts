import { describe, expect, it } from "vitest";
import { ApiError } from "./errors.ts";
import { BASE_MODEL_ID, fineTunedModelId, parseFineTunedModelId } from "./constants.ts";

describe("fine-tuned model ids", () => {
  it("round-trips ft:{base}:{tenant}:{suffix}:{jobId}", () => {
    const parts = { base: BASE_MODEL_ID, tenant: "acme", suffix: "support-bot-2", jobId: "ftjob-abc123" };
    const id = fineTunedModelId(parts);
    expect(id).toBe("ft:pica-base-4m:acme:support-bot-2:ftjob-abc123");
    expect(parseFineTunedModelId(id)).toEqual(parts);
  });

  it("allows an empty suffix", () => {
    const id = fineTunedModelId({ base: BASE_MODEL_ID, tenant: "acme", suffix: "", jobId: "ftjob-1" });
    expect(id).toBe("ft:pica-base-4m:acme::ftjob-1");
    expect(parseFineTunedModelId(id)?.suffix).toBe("");
  });

  it("refuses bad suffixes with a 400 naming 'suffix'", () => {
    for (const suffix of ["a".repeat(41), "Upper", "has space", "colon:x", "under_score"]) {
      let caught: unknown;
      try {
        fineTunedModelId({ base: BASE_MODEL_ID, tenant: "acme", suffix, jobId: "ftjob-1" });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(ApiError);
      expect((caught as ApiError).status).toBe(400);
      expect((caught as ApiError).param).toBe("suffix");
    }
    expect(fineTunedModelId({ base: BASE_MODEL_ID, tenant: "t", suffix: "a".repeat(40), jobId: "j" })).toContain("a".repeat(40));
  });

  it("refuses parts that would break the id", () => {
    expect(() => fineTunedModelId({ base: "a:b", tenant: "acme", suffix: "x", jobId: "j" })).toThrow(/base/);
    expect(() => fineTunedModelId({ base: BASE_MODEL_ID, tenant: "", suffix: "x", jobId: "j" })).toThrow(/tenant/);
    expect(() => fineTunedModelId({ base: BASE_MODEL_ID, tenant: "acme", suffix: "x", jobId: "j:k" })).toThrow(/job/);
  });

  it("does not parse ids that are not well-formed fine-tuned ids", () => {
    for (const id of [
      BASE_MODEL_ID,
      "ft:pica-base-4m:acme:x",
      "ft:pica-base-4m:acme:x:j:extra",
      "xx:pica-base-4m:acme:x:j",
      "ft::acme:x:j",
      "ft:pica-base-4m::x:j",
      "ft:pica-base-4m:acme:x:",
      `ft:pica-base-4m:acme:${"a".repeat(41)}:j`,
      "ft:pica-base-4m:acme:BAD:j",
    ]) {
      expect(parseFineTunedModelId(id), id).toBeNull();
    }
  });
});
