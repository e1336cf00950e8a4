import { describe, expect, it } from "vitest";
import { loadCheckpoint } from "../model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../model/shipped-model.ts";
import { estimateTrainingTokens, parseTrainingJsonl } from "../../src/training-data.ts";
import { measureTemplateTokens } from "./template-tokens.ts";
import { tokenizeRecords } from "./tokenize.ts";

describe("measureTemplateTokens", () => {
  it("counts the shipped model's ChatML template byte by byte", async () => {
    const { tokenizer } = await loadCheckpoint(SHIPPED_MODEL_DIRECTORY);
    // <|im_start|> "user\n" a <|im_end|> "\n" <|im_start|> "assistant\n" a <|im_end|>: 1 + 5 + 1 + 1 + 1 + 10 + 1
    // tokens around the two a's (special tokens are one each, text one per byte); the closing
    // "\n" is the last token, which is a label, not an input. A system turn: 1 + 7 + 1 + 1.
    expect(measureTemplateTokens(tokenizer)).toEqual({ conversation: 20, turn: 21, system: 10, prompt_completion: 0 });
  });

  it("makes the estimate equal the trainer's count for a byte vocabulary", async () => {
    const { tokenizer } = await loadCheckpoint(SHIPPED_MODEL_DIRECTORY);
    const jsonl = [
      {
        messages: [
          { role: "user", content: "Colour of AB-12?" },
          { role: "assistant", content: "teal" },
        ],
      },
      {
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Hi" },
          { role: "assistant", content: "Hello!" },
        ],
      },
      {
        messages: [
          { role: "user", content: "One" },
          { role: "assistant", content: "1" },
          { role: "user", content: "Two" },
          { role: "assistant", content: "2" },
        ],
      },
      { prompt: "2+2=", completion: "4" },
    ]
      .map((record) => JSON.stringify(record))
      .join("\n");
    const records = parseTrainingJsonl(jsonl).examples;
    const trained = tokenizeRecords(records, tokenizer, { maxLength: 1000 }).examples.reduce((sum, e) => sum + e.inputIds.length, 0);
    expect(estimateTrainingTokens(records, 1, measureTemplateTokens(tokenizer))).toBe(trained);
    expect(trained).toBeGreaterThan(0);
  });
});
