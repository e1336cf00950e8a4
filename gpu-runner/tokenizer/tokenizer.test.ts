import { describe, it, expect } from "vitest";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeByteLevelTokenizerFiles } from "./byte-level.ts";
import { tinyByteLevelBpeJson, tinyMetaspaceBpeJson } from "./tiny-bpe-fixtures.ts";
import { TextTokenizer, loadTokenizer } from "./tokenizer.ts";

async function withTempDirectory(body: (directory: string) => Promise<void>): Promise<void> {
  const directory = await mkdtemp(join(tmpdir(), "tokenizer-test-"));
  try {
    await body(directory);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

// Llama 3's shape of template: bos from the variables, one header per turn, <|eot_id|> ends it.
const LLAMA3_STYLE_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}" +
  "{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' + message['role']) }}{% endif %}" +
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

function llama3StyleTokenizer(): TextTokenizer {
  const { tokenizerJson } = makeByteLevelTokenizerFiles({
    specialTokens: ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    chatTemplate: null,
  });
  // Real configs write special tokens as AddedToken objects as often as plain strings.
  return TextTokenizer.fromJson(tokenizerJson, {
    bos_token: { content: "<|begin_of_text|>", lstrip: false, rstrip: false, normalized: false, special: true },
    eos_token: { content: "<|end_of_text|>", lstrip: false, rstrip: false, normalized: false, special: true },
    chat_template: LLAMA3_STYLE_TEMPLATE,
  });
}

describe("TextTokenizer", () => {
  it("reads AddedToken objects for bos/eos and finds the template's end-of-turn token", () => {
    const tokenizer = llama3StyleTokenizer();
    expect(tokenizer.bosTokenId).toBe(256);
    expect(tokenizer.eosTokenIds).toEqual([257, 260]);
    expect(tokenizer.padTokenId).toBeNull();
  });

  it("passes bos_token to the template and renders a Llama 3 style conversation", () => {
    const rendered = llama3StyleTokenizer().applyChatTemplate(
      [
        { role: "user", content: " Hi " },
        { role: "assistant", content: "Hello" },
      ],
      { addGenerationPrompt: true },
    );
    expect(rendered).toBe(
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>" +
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    );
  });

  it("turns raise_exception in a template into an error carrying its message", () => {
    expect(() => llama3StyleTokenizer().applyChatTemplate([{ role: "tool", content: "x" }], { addGenerationPrompt: false })).toThrow(
      /chat template failed: unknown role tool/,
    );
  });

  it("refuses to apply a chat template it does not have", () => {
    const tokenizer = TextTokenizer.fromJson(tinyByteLevelBpeJson(), null);
    expect(tokenizer.chatTemplate).toBeNull();
    expect(tokenizer.eosTokenIds).toEqual([]);
    expect(tokenizer.bosTokenId).toBeNull();
    expect(() => tokenizer.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true })).toThrow(/no chat template/);
  });

  it("applies merges and word-boundary markers of real BPE vocabularies", () => {
    const byteLevel = TextTokenizer.fromJson(tinyByteLevelBpeJson());
    const ids = byteLevel.encode("hello the world");
    expect(ids.map((id) => byteLevel.idToToken(id))).toEqual(["he", "llo", "Ġthe", "Ġwor", "l", "d"]);
    expect(byteLevel.decode(ids)).toBe("hello the world");

    const metaspace = TextTokenizer.fromJson(tinyMetaspaceBpeJson());
    const metaspaceIds = metaspace.encode("Hello the world 😀");
    expect(metaspaceIds.map((id) => metaspace.idToToken(id))).toEqual(["▁", "Hello", "▁the", "▁wor", "l", "d", "▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]);
    expect(metaspace.decode(metaspaceIds)).toBe("Hello the world 😀");
  });

  it("rejects ids outside the vocabulary and decodes an empty list to empty text", () => {
    const tokenizer = TextTokenizer.fromJson(makeByteLevelTokenizerFiles().tokenizerJson);
    expect(tokenizer.decode([])).toBe("");
    expect(() => tokenizer.decode([259])).toThrow(/token id 259 is outside the vocabulary \[0, 259\)/);
  });

  it("honours clean_up_tokenization_spaces only when the config asks for it", () => {
    const { tokenizerJson } = makeByteLevelTokenizerFiles();
    const ids = TextTokenizer.fromJson(tokenizerJson).encode("a . b");
    expect(TextTokenizer.fromJson(tokenizerJson, {}).decode(ids)).toBe("a . b");
    expect(TextTokenizer.fromJson(tokenizerJson, { clean_up_tokenization_spaces: true }).decode(ids)).toBe("a. b");
  });
});

describe("loadTokenizer", () => {
  it("loads tokenizer.json and tokenizer_config.json from a directory", async () => {
    await withTempDirectory(async (directory) => {
      const { tokenizerJson, tokenizerConfig } = makeByteLevelTokenizerFiles();
      await writeFile(join(directory, "tokenizer.json"), JSON.stringify(tokenizerJson));
      await writeFile(join(directory, "tokenizer_config.json"), JSON.stringify(tokenizerConfig));
      const tokenizer = await loadTokenizer(directory);
      expect(tokenizer.vocabSize).toBe(259);
      expect(tokenizer.eosTokenIds).toEqual([256, 258]);
      expect(tokenizer.decode(tokenizer.encode("héllo 😀"))).toBe("héllo 😀");
    });
  });

  it("works without tokenizer_config.json and prefers chat_template.jinja", async () => {
    await withTempDirectory(async (directory) => {
      await writeFile(join(directory, "tokenizer.json"), JSON.stringify(makeByteLevelTokenizerFiles().tokenizerJson));
      const bare = await loadTokenizer(directory);
      expect(bare.chatTemplate).toBeNull();
      expect(bare.eosTokenIds).toEqual([]);
      await writeFile(join(directory, "chat_template.jinja"), "{% for m in messages %}{{ m.role }}: {{ m.content }} <|im_end|>{% endfor %}");
      const templated = await loadTokenizer(directory);
      expect(templated.applyChatTemplate([{ role: "user", content: "x" }], { addGenerationPrompt: false })).toBe("user: x <|im_end|>");
      expect(templated.eosTokenIds).toEqual([258]);
    });
  });

  it("names the missing tokenizer.json in its error", async () => {
    await withTempDirectory(async (directory) => {
      await expect(loadTokenizer(directory)).rejects.toThrow(`tokenizer file ${join(directory, "tokenizer.json")} does not exist`);
    });
  });

  it("names the file that is not valid JSON", async () => {
    await withTempDirectory(async (directory) => {
      await writeFile(join(directory, "tokenizer.json"), JSON.stringify(makeByteLevelTokenizerFiles().tokenizerJson));
      await writeFile(join(directory, "tokenizer_config.json"), "{ not json");
      await expect(loadTokenizer(directory)).rejects.toThrow(`tokenizer file ${join(directory, "tokenizer_config.json")} is not valid JSON`);
      await writeFile(join(directory, "tokenizer.json"), "[]");
      await rm(join(directory, "tokenizer_config.json"));
      await expect(loadTokenizer(directory)).rejects.toThrow(/tokenizer\.json.*must be an object with a "model" entry/);
    });
  });
});
