import { describe, expect, it } from "vitest";
import { makeByteLevelTokenizerFiles } from "../tokenizer/byte-level.ts";
import { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { TrainingMessage, TrainingRecord } from "../../src/training-data.ts";
import { tokenizeRecord, tokenizeRecords, type TokenizedExample, type TokenizeOutcome } from "./tokenize.ts";

const files = makeByteLevelTokenizerFiles();
const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);
const END_OF_TEXT = 256;
const IM_END = 258;

const chatRecord = (messages: TrainingMessage[]): TrainingRecord => ({ format: "chat", messages, line: 7 });
const completionRecord = (prompt: string, completion: string): TrainingRecord => ({ format: "prompt_completion", prompt, completion, line: 3 });

function expectExample(outcome: TokenizeOutcome): TokenizedExample {
  if (!outcome.ok) throw new Error(`expected an example, got: ${outcome.reason}`);
  return outcome.example;
}

// The text of the label tokens with weight 1, each maximal run separately.
function trainedRuns(example: TokenizedExample): string[] {
  const runs: number[][] = [];
  example.lossWeights.forEach((weight, i) => {
    if (weight === 0) return;
    if (i === 0 || example.lossWeights[i - 1] === 0) runs.push([]);
    runs.at(-1)!.push(example.labels[i]!);
  });
  return runs.map((ids) => tokenizer.decode(ids));
}

describe("tokenizeRecord, chat", () => {
  const conversation: TrainingMessage[] = [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Capital of France?" },
    { role: "assistant", content: "Paris." },
    { role: "user", content: "And of Italy?" },
    { role: "assistant", content: "Rome, of course." },
  ];

  it("shifts labels by one against the ChatML rendering of the whole conversation", () => {
    const example = expectExample(tokenizeRecord(chatRecord(conversation), tokenizer, { maxLength: 1000 }));
    const tokens = tokenizer.encode(tokenizer.applyChatTemplate(conversation, { addGenerationPrompt: false }), { addSpecialTokens: false });
    expect(example.inputIds).toEqual(tokens.slice(0, -1));
    expect(example.labels).toEqual(tokens.slice(1));
    expect(example.lossWeights).toHaveLength(tokens.length - 1);
  });

  it("trains exactly the assistant contents and the <|im_end|> closing each, nothing of system or user", () => {
    const example = expectExample(tokenizeRecord(chatRecord(conversation), tokenizer, { maxLength: 1000 }));
    expect(trainedRuns(example)).toEqual(["Paris.<|im_end|>", "Rome, of course.<|im_end|>"]);
    // The newline ChatML writes after <|im_end|> is context: the model stops at <|im_end|>.
    const closing = example.labels.map((id, i) => [id, example.lossWeights[i]]).filter(([id]) => id === IM_END);
    expect(closing.map(([, weight]) => weight)).toEqual([0, 0, 1, 0, 1]); // system, user, assistant, user, assistant
  });

  it("leaves assistant messages of weight 0 untrained but keeps their tokens", () => {
    const weighted = conversation.map((message, i) => (i === 2 ? { ...message, weight: 0 as const } : message));
    const example = expectExample(tokenizeRecord(chatRecord(weighted), tokenizer, { maxLength: 1000 }));
    expect(trainedRuns(example)).toEqual(["Rome, of course.<|im_end|>"]);
    const unweighted = expectExample(tokenizeRecord(chatRecord(conversation), tokenizer, { maxLength: 1000 }));
    expect(example.inputIds).toEqual(unweighted.inputIds);
  });

  it("handles multi-byte text and a conversation that starts with the assistant", () => {
    const example = expectExample(tokenizeRecord(chatRecord([{ role: "assistant", content: "Grüße 👋" }]), tokenizer, { maxLength: 100 }));
    expect(trainedRuns(example)).toEqual(["Grüße 👋<|im_end|>"]);
  });

  it("cuts a too-long conversation after the last trainable reply that fits", () => {
    const full = expectExample(tokenizeRecord(chatRecord(conversation), tokenizer, { maxLength: 1000 }));
    const firstReplyEnd = full.labels.indexOf(IM_END, full.lossWeights.indexOf(1)) + 2; // tokens through that <|im_end|>
    const cut = tokenizeRecord(chatRecord(conversation), tokenizer, { maxLength: firstReplyEnd - 1 });
    expect(cut.ok).toBe(true);
    if (!cut.ok) return;
    expect(cut.example.inputIds).toHaveLength(firstReplyEnd - 1);
    expect(cut.example.inputIds).toEqual(full.inputIds.slice(0, firstReplyEnd - 1));
    expect(trainedRuns(cut.example)).toEqual(["Paris.<|im_end|>"]);
    expect(cut.truncatedTokens).toBe(full.inputIds.length + 1 - firstReplyEnd);

    const refused = tokenizeRecord(chatRecord(conversation), tokenizer, { maxLength: firstReplyEnd - 2 });
    expect(refused).toEqual({ ok: false, reason: expect.stringContaining("too long") });
  });

  it("refuses a conversation the template cannot render", () => {
    const strict = makeByteLevelTokenizerFiles({
      chatTemplate:
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system here') }}{% endif %}" + "{{ m['content'] }}{% endfor %}",
      specialTokens: ["<|endoftext|>"],
    });
    const strictTokenizer = TextTokenizer.fromJson(strict.tokenizerJson, strict.tokenizerConfig);
    const outcome = tokenizeRecord(chatRecord(conversation), strictTokenizer, { maxLength: 1000 });
    expect(outcome).toEqual({ ok: false, reason: expect.stringContaining("no system here") });
  });

  it("refuses a template that rewrites earlier turns, since replies cannot be located", () => {
    // Drops every assistant turn but the last one, as some reasoning-model templates do.
    const forgetful = makeByteLevelTokenizerFiles({
      chatTemplate:
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}" +
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    });
    const forgetfulTokenizer = TextTokenizer.fromJson(forgetful.tokenizerJson, forgetful.tokenizerConfig);
    const outcome = tokenizeRecord(chatRecord(conversation), forgetfulTokenizer, { maxLength: 1000 });
    expect(outcome).toEqual({ ok: false, reason: expect.stringContaining("messages[2]") });
  });
});

describe("tokenizeRecord, prompt/completion", () => {
  it("trains the completion and the eos after the prompt, with no chat template", () => {
    const example = expectExample(tokenizeRecord(completionRecord("2+2=", " 4"), tokenizer, { maxLength: 100 }));
    expect(example.inputIds).toEqual([..."2+2= 4"].map((c) => c.charCodeAt(0)));
    expect(example.labels).toEqual([..."+2= 4"].map((c) => c.charCodeAt(0)).concat(END_OF_TEXT));
    expect(example.lossWeights).toEqual([0, 0, 0, 1, 1, 1]);
    expect(trainedRuns(example)).toEqual([" 4<|endoftext|>"]);
  });

  it("drops tokens from the left of the prompt when too long, keeping the whole completion", () => {
    const outcome = tokenizeRecord(completionRecord("abcdefgh", "XY"), tokenizer, { maxLength: 5 });
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect(tokenizer.decode([...outcome.example.inputIds, outcome.example.labels.at(-1)!])).toBe("fghXY<|endoftext|>");
    expect(outcome.truncatedTokens).toBe(5);
    expect(trainedRuns(outcome.example)).toEqual(["XY<|endoftext|>"]);
  });

  it("keeps a leading bos when it truncates the prompt", () => {
    // A tokenizer whose post-processor adds bos, like Llama 3's.
    const withBos = makeByteLevelTokenizerFiles();
    withBos.tokenizerJson.post_processor = {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|endoftext|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<|endoftext|>": { id: "<|endoftext|>", ids: [END_OF_TEXT], tokens: ["<|endoftext|>"] } },
    };
    const bosTokenizer = TextTokenizer.fromJson(withBos.tokenizerJson, withBos.tokenizerConfig);
    expect(bosTokenizer.encode("a")).toEqual([END_OF_TEXT, 97]);
    const outcome = tokenizeRecord(completionRecord("abcdefgh", "XY"), bosTokenizer, { maxLength: 5 });
    if (!outcome.ok) throw new Error(outcome.reason);
    expect(bosTokenizer.decode(outcome.example.inputIds)).toBe("<|endoftext|>ghXY");
  });

  it("ends the completion with the config's eos even when generation_config.json lists another stop id first", () => {
    // Like Llama 3.1 Instruct: generation_config.json starts with a stop id that is not the tokenizer's eos_token.
    const listed = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig, null, [IM_END, END_OF_TEXT]);
    expect(listed.eosTokenIds[0]).toBe(IM_END);
    const example = expectExample(tokenizeRecord(completionRecord("2+2=", " 4"), listed, { maxLength: 100 }));
    expect(example.labels.at(-1)).toBe(END_OF_TEXT);
    // Chat replies still end with the template's end-of-turn token.
    const chat = expectExample(
      tokenizeRecord(
        chatRecord([
          { role: "user", content: "hi" },
          { role: "assistant", content: "yo" },
        ]),
        listed,
        { maxLength: 100 },
      ),
    );
    expect(trainedRuns(chat)).toEqual(["yo<|im_end|>"]);
  });

  it("refuses an example whose completion leaves no room for context", () => {
    expect(tokenizeRecord(completionRecord("abc", "WXYZ"), tokenizer, { maxLength: 5 }).ok).toBe(true); // 1 prompt token kept
    const refused = tokenizeRecord(completionRecord("abc", "VWXYZ"), tokenizer, { maxLength: 5 });
    expect(refused).toEqual({ ok: false, reason: expect.stringContaining("too long") });
  });

  it("never returns an example without a trained token", () => {
    // With an empty prompt and no bos, nothing predicts the first completion token; a one-byte
    // completion still trains its eos, so the example is kept.
    expect(trainedRuns(expectExample(tokenizeRecord(completionRecord("", "x"), tokenizer, { maxLength: 10 })))).toEqual(["<|endoftext|>"]);
  });

  it("rejects a maxLength that is not a positive integer", () => {
    expect(() => tokenizeRecord(completionRecord("a", "b"), tokenizer, { maxLength: 0 })).toThrow(/maxLength/);
  });
});

describe("tokenizeRecords", () => {
  it("reports refused and truncated examples by line", () => {
    const records: TrainingRecord[] = [
      { format: "prompt_completion", prompt: "hello", completion: "ok", line: 1 },
      { format: "prompt_completion", prompt: "a", completion: "far too long a completion", line: 2 },
      { format: "prompt_completion", prompt: "a long long prompt", completion: "ok", line: 5 },
    ];
    const dataset = tokenizeRecords(records, tokenizer, { maxLength: 8 });
    expect(dataset.examples).toHaveLength(2);
    expect(dataset.skipped).toEqual([{ line: 2, reason: expect.stringContaining("too long") }]);
    expect(dataset.truncated).toEqual([{ line: 5, tokens: 21 - 9 }]);
  });
});
