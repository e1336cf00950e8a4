import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Completion } from "../generate/completion.ts";
import { makeByteLevelTokenizerFiles } from "./byte-level.ts";
import { parseGenerationEosTokenIds, readGenerationEosTokenIds } from "./generation-config.ts";
import { LLAMA3_DIRECTORY, QWEN3_DIRECTORY, withTokenizerDirectory } from "./real-tokenizer-fixtures.ts";
import { TextTokenizer, loadTokenizer } from "./tokenizer.ts";

// The generation_config.json files of real checkpoints, as published.
const LLAMA31_INSTRUCT_GENERATION_CONFIG = {
  bos_token_id: 128000,
  do_sample: true,
  eos_token_id: [128001, 128008, 128009],
  temperature: 0.6,
  top_p: 0.9,
  transformers_version: "4.42.3",
};
const QWEN3_GENERATION_CONFIG = {
  bos_token_id: 151643,
  do_sample: true,
  eos_token_id: [151645, 151643],
  pad_token_id: 151643,
  temperature: 0.6,
  top_k: 20,
  top_p: 0.95,
  transformers_version: "4.51.0",
};

/** What the runner's completion loop makes of a scripted sequence of greedy picks. */
function runScript(tokenizer: TextTokenizer, script: readonly number[]): { ids: number[]; reason: string; text: string } {
  // One Completion drives each sequence in both generate() and the scheduler.
  const completion = new Completion(tokenizer, { maxNewTokens: script.length, temperature: 0 }, 1, 8192);
  const logits = new Float32Array(tokenizer.vocabSize);
  const ids: number[] = [];
  for (const id of script) {
    logits.fill(0);
    logits[id] = 1;
    const { events, next } = completion.advance(logits);
    for (const event of events) {
      if (event.type === "token") ids.push(event.id);
      else return { ids, reason: event.reason, text: event.text };
    }
    if (next === null) break;
  }
  throw new Error("the script ended before the completion did");
}

describe("parseGenerationEosTokenIds", () => {
  it("reads an id or a list of ids, without repeats and in their order", () => {
    expect(parseGenerationEosTokenIds(LLAMA31_INSTRUCT_GENERATION_CONFIG)).toEqual([128001, 128008, 128009]);
    expect(parseGenerationEosTokenIds(QWEN3_GENERATION_CONFIG)).toEqual([151645, 151643]);
    expect(parseGenerationEosTokenIds({ eos_token_id: 151643 })).toEqual([151643]);
    expect(parseGenerationEosTokenIds({ eos_token_id: [7, 3, 7, 0] })).toEqual([7, 3, 0]);
  });

  it("reads no ids when eos_token_id is absent, null or an empty list", () => {
    expect(parseGenerationEosTokenIds({ bos_token_id: 1, temperature: 0.7 })).toEqual([]);
    expect(parseGenerationEosTokenIds({ eos_token_id: null })).toEqual([]);
    expect(parseGenerationEosTokenIds({ eos_token_id: [] })).toEqual([]);
  });

  it("names the file and the field of a malformed value", () => {
    const source = "/models/x/generation_config.json";
    expect(() => parseGenerationEosTokenIds({ eos_token_id: "128009" }, source)).toThrow(
      `${source}: eos_token_id must be a token id (an integer ≥ 0) or a list of them, got "128009"`,
    );
    expect(() => parseGenerationEosTokenIds({ eos_token_id: -1 }, source)).toThrow(`${source}: eos_token_id must be a token id`);
    expect(() => parseGenerationEosTokenIds({ eos_token_id: 2.5 })).toThrow("generation_config.json: eos_token_id must be a token id");
    expect(() => parseGenerationEosTokenIds({ eos_token_id: { id: 2 } })).toThrow('got {"id":2}');
    expect(() => parseGenerationEosTokenIds({ eos_token_id: [128001, 1.5] }, source)).toThrow(
      `${source}: eos_token_id[1] must be a token id (an integer ≥ 0), got 1.5`,
    );
    expect(() => parseGenerationEosTokenIds({ eos_token_id: [null] })).toThrow("eos_token_id[0] must be a token id (an integer ≥ 0), got null");
    expect(() => parseGenerationEosTokenIds([128001], source)).toThrow(`${source} must be a JSON object, got [128001]`);
    expect(() => parseGenerationEosTokenIds(null)).toThrow("generation_config.json must be a JSON object, got null");
  });
});

describe("readGenerationEosTokenIds", () => {
  it("reads no ids from a directory without the file, and names a file that is not JSON", async () => {
    expect(await readGenerationEosTokenIds(QWEN3_DIRECTORY)).toEqual([]);
    await withTokenizerDirectory(QWEN3_DIRECTORY, { files: { "generation_config.json": "{ eos_token_id: 1 }" } }, async (directory) => {
      await expect(readGenerationEosTokenIds(directory)).rejects.toThrow(`${join(directory, "generation_config.json")} is not valid JSON`);
    });
  });
});

describe("TextTokenizer with generation_config.json's ids", () => {
  const files = makeByteLevelTokenizerFiles(); // eos <|endoftext|> 256, end of turn <|im_end|> 258

  it("puts generation_config's ids first, then the config's eos and the end-of-turn token, without repeats", () => {
    expect(TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig).eosTokenIds).toEqual([256, 258]);
    const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig, null, [258, 257, 256]);
    expect(tokenizer.eosTokenIds).toEqual([258, 257, 256]);
    expect(tokenizer.eosTokenId).toBe(256);
    expect(TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig, null, [10]).eosTokenIds).toEqual([10, 256, 258]);
  });

  it("refuses an id the tokenizer does not have", () => {
    expect(() => TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig, null, [259])).toThrow(
      "generation_config.json: eos_token_id 259 is not a token of this tokenizer (ids [0, 259))",
    );
  });
});

describe("loadTokenizer with generation_config.json", () => {
  it("stops Llama 3.1 Instruct generation on each of its three stop ids, and not on other special tokens", async () => {
    const files = { "generation_config.json": LLAMA31_INSTRUCT_GENERATION_CONFIG };
    const tokenizer = await withTokenizerDirectory(LLAMA3_DIRECTORY, { files }, loadTokenizer);
    expect(tokenizer.eosTokenIds).toEqual([128001, 128008, 128009]); // <|end_of_text|>, <|eom_id|>, <|eot_id|>
    expect(tokenizer.eosTokenId).toBe(128001);
    const hello = tokenizer.encode("Hello there", { addSpecialTokens: false });
    for (const stop of [128001, 128008, 128009]) {
      expect(runScript(tokenizer, [...hello, stop, ...hello]), `stop id ${stop}`).toEqual({ ids: hello, reason: "stop", text: "Hello there" });
    }
    // <|start_header_id|> is special but not a stop: it is generated (and left out of the text).
    expect(runScript(tokenizer, [...hello, 128006, ...hello])).toEqual({
      ids: [...hello, 128006, ...hello],
      reason: "length",
      text: "Hello thereHello there",
    });

    // Without the file, <|eom_id|> does not end generation: the two sources of stop ids differ.
    const packaged = await loadTokenizer(LLAMA3_DIRECTORY);
    expect(packaged.eosTokenIds).toEqual([128001, 128009]);
    expect(runScript(packaged, [...hello, 128008, 128009]).reason).toBe("stop");
    expect(runScript(packaged, [...hello, 128008, 128009]).ids).toEqual([...hello, 128008]);
  });

  it("reads Qwen3's list, and a single id ahead of the tokenizer config's", async () => {
    const listed = await withTokenizerDirectory(QWEN3_DIRECTORY, { files: { "generation_config.json": QWEN3_GENERATION_CONFIG } }, loadTokenizer);
    expect(listed.eosTokenIds).toEqual([151645, 151643]); // <|im_end|>, <|endoftext|>
    const hi = listed.encode("Hi");
    expect(runScript(listed, [...hi, 151643, ...hi])).toEqual({ ids: hi, reason: "stop", text: "Hi" });
    expect(runScript(listed, [...hi, 151645, ...hi])).toEqual({ ids: hi, reason: "stop", text: "Hi" });

    const single = await withTokenizerDirectory(QWEN3_DIRECTORY, { files: { "generation_config.json": { eos_token_id: 151643 } } }, loadTokenizer);
    expect(single.eosTokenIds).toEqual([151643, 151645]);
    expect(single.eosTokenId).toBe(151645); // the tokenizer config's eos_token stays what it is
  });

  it("refuses a malformed file, naming it and the field", async () => {
    const malformed = { files: { "generation_config.json": { eos_token_id: [151645, "151643"] } } };
    await withTokenizerDirectory(QWEN3_DIRECTORY, malformed, async (directory) => {
      await expect(loadTokenizer(directory)).rejects.toThrow(
        `${join(directory, "generation_config.json")}: eos_token_id[1] must be a token id (an integer ≥ 0), got "151643"`,
      );
    });
    const foreign = { files: { "generation_config.json": { eos_token_id: [151645, 200000] } } };
    await withTokenizerDirectory(QWEN3_DIRECTORY, foreign, async (directory) => {
      await expect(loadTokenizer(directory)).rejects.toThrow("generation_config.json: eos_token_id 200000 is not a token of this tokenizer (ids [0, 151669))");
    });
  });
});
