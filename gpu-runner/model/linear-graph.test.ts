import { describe, expect, it } from "vitest";
import { tinyModel } from "../testing/tiny-checkpoints.ts";
import { weightsFromParameters } from "./linear-graph.ts";
import { buildTrainingGraph } from "./training-graph.ts";

describe("weightsFromParameters", () => {
  it.each(["llama-gqa", "qwen2-bias", "smollm-tied", "mistral-head-dim"] as const)(
    "recovers the Hugging Face weights from a full training graph's parameters (%s)",
    (variant) => {
      const { config, weights } = tinyModel(variant);
      const { parameters } = buildTrainingGraph(config, weights, { kind: "full" });
      const recovered = weightsFromParameters(config, new Map(parameters.map((p) => [p.name, p.initial])));
      for (const [name, tensor] of weights) {
        if (name === "lm_head.weight" && config.tieWordEmbeddings) continue; // stale, ignored by the model
        expect(recovered.get(name)?.shape, name).toEqual(tensor.shape);
        expect(recovered.get(name)?.data, name).toEqual(tensor.data);
      }
    },
  );
});
