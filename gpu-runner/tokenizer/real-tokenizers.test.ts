import { beforeAll, describe, expect, it } from "vitest";
import type { LlamaEngine } from "../engine/llama-engine.ts";
import type { GenerationEvent } from "../generate/generate.ts";
import { createRunnerApp } from "../server/app.ts";
import type { Scheduler } from "../server/scheduler.ts";
import { tokenizeRecord } from "../training/tokenize.ts";
import type { TrainingMessage } from "../../src/training-data.ts";
import {
  LLAMA3_BOS_POST_PROCESSOR,
  LLAMA3_DIRECTORY,
  QWEN3_DIRECTORY,
  referenceTokenizer,
  withTokenizerDirectory,
  type ReferenceTokenizer,
} from "./real-tokenizer-fixtures.ts";
import { StreamDecoder } from "./stream-decoder.ts";
import { loadTokenizer, type ChatMessage, type TextTokenizer } from "./tokenizer.ts";

// Texts that exercise each part of the two pre-tokenizers (contractions, letter runs, digit
// groups, punctuation runs, whitespace runs before newlines), byte-level fallback for every
// script, Qwen3's NFC normalizer, and added tokens matched inside text.
const SAMPLE_TEXTS: readonly string[] = [
  "The quick brown fox jumps over the lazy dog.",
  "  two leading spaces",
  "trailing spaces   ",
  "several     spaces   between words",
  "\n\nleading newlines",
  "trailing newlines\n\n\n",
  "mixed \n \n\t whitespace \r\n and CRLF\r\n",
  "tab\tseparated\tvalues\t\t",
  "\t\tindented with tabs",
  "3.14159 2025 1234567890123456789 -42 1e10 0x1F 1,000,000",
  "Wait... what?!?! --- *** ((())) !!! ???",
  "I'm sure they'll say WE'RE fine, isn't it, don't you think?",
  "function add(a, b) {\n    return a + b; // sum\n}\n\nconst squares = [1, 2, 3].map((n) => n ** 2);\n",
  "def f(x):\n\treturn {'key': x * 2}  # comment\n",
  "https://example.com/path/to?q=tokenizer&lang=en#section and mailto:user@example.org",
  "Café naïve résumé façade Ångström señor Straße œuvre",
  "東京は日本の首都です。今日は天気がいいですね。中文分词测试，标点！",
  "한국어 텍스트와 ひらがな カタカナ",
  "مرحبا بالعالم، كيف حالك؟ ١٢٣",
  "Emoji 😀👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🇫🇷 heart ❤️ rainbow 🏳️\u200d🌈",
  "combining e\u0301 a\u0308 n\u0303 Z\u0351\u0324 and precomposed é ä ñ",
  "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>",
  "text with <|endoftext|> and <|end_of_text|> inside",
  "",
  " ",
  "\n",
  "a , b . c ! d ? e n't f 's",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/** A conversation rendered by both template engines. */
interface Conversation {
  name: string;
  messages: ChatMessage[];
  addGenerationPrompt: boolean;
}

const UNICODE_SYSTEM = "  Réponds en français 🇫🇷\n";
const UNICODE_USER = "\n東京 👨\u200d👩\u200d👧\u200d👦 مرحبا e\u0301\t<|im_end|> <|eot_id|>  ";
const THINKING_REPLY = "<think>\nTwo plus two is four.\n</think>\n\n4";

const CONVERSATIONS: readonly Conversation[] = [
  {
    name: "system and user, with the generation prompt",
    messages: [
      { role: "system", content: "You are a concise assistant." },
      { role: "user", content: "What is the capital of France?" },
    ],
    addGenerationPrompt: true,
  },
  ...[true, false].map((addGenerationPrompt) => ({
    name: `multi-turn, ${addGenerationPrompt ? "with" : "without"} the generation prompt`,
    messages: [
      { role: "system", content: "Answer briefly." },
      { role: "user", content: "Capital of France?" },
      { role: "assistant", content: "Paris." },
      { role: "user", content: "And of Italy?" },
    ],
    addGenerationPrompt,
  })),
  { name: "no system message", messages: [{ role: "user", content: "Hi there" }], addGenerationPrompt: true },
  {
    name: "an assistant message last",
    messages: [
      { role: "user", content: "Say hi" },
      { role: "assistant", content: "Hi!" },
    ],
    addGenerationPrompt: false,
  },
  {
    name: "unicode, surrounding whitespace and special-token text in content",
    messages: [
      { role: "system", content: UNICODE_SYSTEM },
      { role: "user", content: UNICODE_USER },
    ],
    addGenerationPrompt: true,
  },
  {
    name: "<think> in an assistant reply before the last user message",
    messages: [
      { role: "user", content: "2+2?" },
      { role: "assistant", content: THINKING_REPLY },
      { role: "user", content: "3+3?" },
    ],
    addGenerationPrompt: true,
  },
  {
    name: "<think> in the last assistant reply",
    messages: [
      { role: "user", content: "2+2?" },
      { role: "assistant", content: THINKING_REPLY },
    ],
    addGenerationPrompt: false,
  },
  {
    name: "two assistant replies after the last user message",
    messages: [
      { role: "user", content: "Count" },
      { role: "assistant", content: "<think>\nstart\n</think>\n\none" },
      { role: "assistant", content: "two" },
    ],
    addGenerationPrompt: false,
  },
];

// Qwen3's template, as transformers renders it (Python Jinja2 with trim_blocks and lstrip_blocks;
// these strings were checked against Jinja2 3.1.6 set up as transformers sets it up). The
// reference implementation's Jinja cannot parse this template (`split(...)[-1]`), so here the
// expected text is written out. The template keeps a reply's reasoning only after the last user
// message: earlier replies lose their <think> block, and a last reply without one gets an empty one.
const QWEN3_RENDERED: Record<string, string> = {
  "system and user, with the generation prompt":
    "<|im_start|>system\nYou are a concise assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" + "<|im_start|>assistant\n",
  "multi-turn, with the generation prompt":
    "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n" +
    "<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n",
  "multi-turn, without the generation prompt":
    "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n" +
    "<|im_start|>assistant\nParis.<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n",
  "no system message": "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
  "an assistant message last": "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHi!<|im_end|>\n",
  "unicode, surrounding whitespace and special-token text in content": `<|im_start|>system\n${UNICODE_SYSTEM}<|im_end|>\n<|im_start|>user\n${UNICODE_USER}<|im_end|>\n<|im_start|>assistant\n`,
  "<think> in an assistant reply before the last user message":
    "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n",
  "<think> in the last assistant reply": `<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n${THINKING_REPLY}<|im_end|>\n`,
  "two assistant replies after the last user message":
    "<|im_start|>user\nCount<|im_end|>\n<|im_start|>assistant\n<think>\nstart\n</think>\n\none<|im_end|>\n" +
    "<|im_start|>assistant\n<think>\n\n</think>\n\ntwo<|im_end|>\n",
};

/** What each checkpoint's files are known to hold. */
interface ModelCase {
  name: string;
  model: "llama3" | "qwen3";
  directory: string;
  vocabSize: number;
  bosTokenId: number | null;
  eosTokenId: number;
  padTokenId: number | null;
  /** The config's eos_token, then the template's end-of-turn token. */
  eosTokenIds: number[];
  /** "Hello world" without special tokens, pinned so that agreement cannot hide a shared fault. */
  helloWorldIds: number[];
  /** The normalizer applied to input text (Qwen3 composes to NFC; Llama 3 has none). */
  normalize: (text: string) => string;
}

const MODELS: readonly ModelCase[] = [
  {
    name: "Llama 3",
    model: "llama3",
    directory: LLAMA3_DIRECTORY,
    vocabSize: 128_256,
    bosTokenId: 128_000, // <|begin_of_text|>
    eosTokenId: 128_001, // <|end_of_text|>
    padTokenId: null,
    eosTokenIds: [128_001, 128_009], // <|end_of_text|>, <|eot_id|>
    helloWorldIds: [9906, 1917],
    normalize: (text) => text,
  },
  {
    name: "Qwen3",
    model: "qwen3",
    directory: QWEN3_DIRECTORY,
    vocabSize: 151_669,
    bosTokenId: null,
    eosTokenId: 151_645, // <|im_end|>
    padTokenId: 151_643, // <|endoftext|>
    eosTokenIds: [151_645],
    helloWorldIds: [9707, 1879],
    normalize: (text) => text.normalize("NFC"),
  },
];

// Each packaged directory is loaded once for the whole file (a load takes about a second).
const loaded = new Map<string, Promise<TextTokenizer>>();
function loadPackaged(directory: string): Promise<TextTokenizer> {
  if (!loaded.has(directory)) loaded.set(directory, loadTokenizer(directory));
  return loaded.get(directory)!;
}

describe.each(MODELS)("$name tokenizer files through loadTokenizer", (model) => {
  let tokenizer: TextTokenizer;
  let reference: ReferenceTokenizer;
  beforeAll(async () => {
    tokenizer = await loadPackaged(model.directory);
    reference = referenceTokenizer(model.model);
  });

  it("encodes every sample text to the reference implementation's ids, with and without special tokens", () => {
    for (const text of SAMPLE_TEXTS) {
      for (const addSpecialTokens of [true, false]) {
        expect(tokenizer.encode(text, { addSpecialTokens }), `${JSON.stringify(text)}, specials ${addSpecialTokens}`).toEqual(
          reference.encode(text, { add_special_tokens: addSpecialTokens }),
        );
      }
      // Neither packaged tokenizer.json adds anything: Qwen3 has no bos, and this Llama 3 file
      // predates the post-processor that adds <|begin_of_text|> (tested below on that variant).
      expect(tokenizer.encode(text, { addSpecialTokens: true })).toEqual(tokenizer.encode(text, { addSpecialTokens: false }));
    }
    expect(tokenizer.encode("Hello world")).toEqual(model.helloWorldIds);
    expect(tokenizer.encode("")).toEqual([]);
  });

  it("matches special-token strings in text as single ids, and only this model's own", () => {
    const ids = tokenizer.encode("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n");
    const llamaIds = tokenizer.encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>");
    if (model.model === "qwen3") {
      expect(ids.filter((id) => id === 151_644)).toHaveLength(2); // <|im_start|>
      expect(ids).toContain(151_645); // <|im_end|>
      expect(llamaIds.filter((id) => id >= 151_643)).toEqual([]); // Llama's markers are plain text here
    } else {
      expect(llamaIds).toEqual([128_000, 128_006, 882, 128_007, 271, 15339, 128_009]);
      expect(ids.filter((id) => id >= 128_000)).toEqual([]); // ChatML markers are plain text here
    }
  });

  it("decodes every sample text back to itself (after the model's normalizer), and as the reference decodes", () => {
    for (const text of SAMPLE_TEXTS) {
      const ids = tokenizer.encode(text, { addSpecialTokens: false });
      expect(tokenizer.decode(ids, { cleanUpTokenizationSpaces: false }), JSON.stringify(text)).toBe(model.normalize(text));
      if (ids.length > 0) expect(tokenizer.decode(ids), JSON.stringify(text)).toBe(reference.decode(ids));
    }
    // Qwen3 composes "e" + U+0301 into "é"; Llama 3 keeps the two code points.
    expect(tokenizer.decode(tokenizer.encode("e\u0301"))).toBe(model.model === "qwen3" ? "\u00e9" : "e\u0301");
  });

  it("honours the config's clean_up_tokenization_spaces on decode, like transformers", () => {
    const ids = tokenizer.encode("a , b . c n't");
    // Llama 3's config sets it to true; Qwen3's to false.
    expect(tokenizer.decode(ids)).toBe(model.model === "llama3" ? "a, b. cn't" : "a , b . c n't");
    expect(tokenizer.decode(ids, { cleanUpTokenizationSpaces: false })).toBe("a , b . c n't");
  });

  it("streams every sample text token by token to the text itself, never splitting a character", () => {
    for (const text of SAMPLE_TEXTS) {
      const ids = tokenizer.encode(text);
      const decoder = new StreamDecoder(tokenizer);
      const pieces = ids.map((id) => decoder.push(id));
      pieces.push(decoder.flush());
      for (const piece of pieces) expect(piece, JSON.stringify(text)).not.toContain("\uFFFD");
      // Streaming leaves out the clean-up (as TGI and vLLM do), so Llama 3's pieces add up to the text.
      expect(pieces.join(""), JSON.stringify(text)).toBe(model.normalize(text));
    }
  });

  it("reads bos, eos and pad from the config and the end-of-turn token from the chat template", () => {
    expect(tokenizer.vocabSize).toBe(model.vocabSize);
    expect(tokenizer.bosTokenId).toBe(model.bosTokenId);
    expect(tokenizer.eosTokenId).toBe(model.eosTokenId);
    expect(tokenizer.padTokenId).toBe(model.padTokenId);
    expect(tokenizer.eosTokenIds).toEqual(model.eosTokenIds);
    const endOfTurn = model.model === "llama3" ? "<|eot_id|>" : "<|im_end|>";
    expect(tokenizer.idToToken(model.eosTokenIds.at(-1)!)).toBe(endOfTurn);
    expect(tokenizer.tokenToId(endOfTurn)).toBe(model.eosTokenIds.at(-1));
  });

  it("renders every conversation exactly as the reference (Llama 3) or transformers' Jinja2 (Qwen3) does", () => {
    for (const conversation of CONVERSATIONS) {
      const rendered = tokenizer.applyChatTemplate(conversation.messages, { addGenerationPrompt: conversation.addGenerationPrompt });
      const expected =
        model.model === "llama3"
          ? reference.apply_chat_template(conversation.messages, { tokenize: false, add_generation_prompt: conversation.addGenerationPrompt })
          : QWEN3_RENDERED[conversation.name];
      expect(rendered, conversation.name).toBe(expected);
    }
  });
});

describe("Llama 3 chat template", () => {
  it("writes bos, trims content and always ends with the assistant header", async () => {
    const tokenizer = await loadPackaged(LLAMA3_DIRECTORY);
    const render = (addGenerationPrompt: boolean) =>
      tokenizer.applyChatTemplate(
        [
          { role: "system", content: " Be brief.\n" },
          { role: "user", content: "Hi" },
          { role: "assistant", content: "Hello!" },
        ],
        { addGenerationPrompt },
      );
    // This packaged template, as Llama 3 was first published, ignores add_generation_prompt.
    const header = (role: string) => `<|start_header_id|>${role}<|end_header_id|>\n\n`;
    const expected =
      `<|begin_of_text|>${header("system")}Be brief.<|eot_id|>${header("user")}Hi<|eot_id|>` + `${header("assistant")}Hello!<|eot_id|>${header("assistant")}`;
    expect(render(true)).toBe(expected);
    expect(render(false)).toBe(expected);
  });
});

describe("Llama 3 with the post-processor that adds <|begin_of_text|>", () => {
  const BOS = 128_000;
  const changes = { tokenizerJson: { post_processor: LLAMA3_BOS_POST_PROCESSOR } };
  const messages: TrainingMessage[] = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Capital of France?" },
  ];
  const countBos = (ids: readonly number[]) => ids.filter((id) => id === BOS).length;

  let tokenizer: TextTokenizer;
  let reference: ReferenceTokenizer;
  beforeAll(async () => {
    tokenizer = await withTokenizerDirectory(LLAMA3_DIRECTORY, changes, loadTokenizer);
    reference = referenceTokenizer("llama3", changes.tokenizerJson);
  });

  it("adds <|begin_of_text|> once, only with special tokens, as the reference does", () => {
    for (const text of SAMPLE_TEXTS) {
      const withSpecials = tokenizer.encode(text);
      expect(withSpecials, JSON.stringify(text)).toEqual(reference.encode(text, { add_special_tokens: true }));
      expect(withSpecials).toEqual([BOS, ...tokenizer.encode(text, { addSpecialTokens: false })]);
    }
    expect(tokenizer.encode("Hello world")).toEqual([BOS, 9906, 1917]);
  });

  it("gives a rendered chat prompt one <|begin_of_text|>: the template's, encoded without added specials", () => {
    const rendered = tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
    const ids = tokenizer.encode(rendered, { addSpecialTokens: false });
    expect(ids[0]).toBe(BOS);
    expect(countBos(ids)).toBe(1);
    // What encoding with the post-processor would do to it, and what the runner must avoid.
    expect(tokenizer.encode(rendered).slice(0, 2)).toEqual([BOS, BOS]);
  });

  it("the runner's chat route sends one <|begin_of_text|>, its completions route the post-processor's one", async () => {
    const submitted: number[][] = [];
    const scheduler = {
      stats: {},
      contextLimit: 8192,
      submit(request: { promptIds: number[] }): AsyncIterable<GenerationEvent> {
        submitted.push(request.promptIds);
        return (async function* () {
          yield { type: "finish", reason: "stop", tail: "", text: "", promptTokens: request.promptIds.length, completionTokens: 1 };
        })();
      },
    } as unknown as Scheduler;
    const engine = { config: { maxPositionEmbeddings: 8192 }, hasAdapter: () => false, adapterIds: () => [] } as unknown as LlamaEngine;
    const app = createRunnerApp({ engine, tokenizer, scheduler, modelId: "llama3" });
    const post = (path: string, body: unknown) =>
      Promise.resolve(app.request(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) }));

    expect((await post("/v1/chat/completions", { model: "llama3", messages, max_tokens: 1 })).status).toBe(200);
    const rendered = tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
    expect(submitted[0]).toEqual(tokenizer.encode(rendered, { addSpecialTokens: false }));
    expect(submitted[0]![0]).toBe(BOS);
    expect(countBos(submitted[0]!)).toBe(1);

    expect((await post("/v1/completions", { model: "llama3", prompt: "The capital of France is", max_tokens: 1 })).status).toBe(200);
    expect(submitted[1]).toEqual([BOS, ...tokenizer.encode("The capital of France is", { addSpecialTokens: false })]);
  });

  it("training examples start with one <|begin_of_text|>, chat and prompt/completion alike", () => {
    const chat = tokenizeRecord({ format: "chat", line: 1, messages: [...messages, { role: "assistant", content: "Paris." }] }, tokenizer, { maxLength: 512 });
    if (!chat.ok) throw new Error(chat.reason);
    expect(chat.example.inputIds[0]).toBe(BOS);
    expect(countBos(chat.example.inputIds)).toBe(1);
    const trained = chat.example.labels.filter((_, i) => chat.example.lossWeights[i] === 1);
    expect(tokenizer.decode(trained)).toBe("Paris.<|eot_id|>");

    const completion = tokenizeRecord({ format: "prompt_completion", line: 2, prompt: "2+2=", completion: " 4" }, tokenizer, { maxLength: 512 });
    if (!completion.ok) throw new Error(completion.reason);
    expect(completion.example.inputIds).toEqual([BOS, ...tokenizer.encode("2+2= 4", { addSpecialTokens: false })]);
    expect(completion.example.labels.at(-1)).toBe(128_001); // the config's eos_token, <|end_of_text|>
  });
});
