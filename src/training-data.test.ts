import { describe, expect, it } from "vitest";
import { estimateTrainingTokens, parseTrainingJsonl, validateTrainingFile } from "./training-data.ts";

const chat = (messages: unknown[]) => JSON.stringify({ messages });
const GOOD_CHAT = chat([
  { role: "system", content: "Be brief." },
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello." },
]);
const GOOD_COMPLETION = JSON.stringify({ prompt: "2+2=", completion: " 4" });

// One line per class of mistake, each with the words its reason must contain.
const BAD_CHAT_LINES: [string, string[]][] = [
  ["{not json", ["invalid JSON"]],
  ["[1, 2]", ["JSON object", "an array"]],
  ["42", ["JSON object", "number 42"]],
  ["{}", ["missing field", "messages"]],
  [JSON.stringify({ conversation: [] }), ["missing field", '"conversation"']],
  [JSON.stringify({ messages: [] }), ["messages must not be empty"]],
  [JSON.stringify({ messages: "hi" }), ["messages must be an array", "a string"]],
  [
    chat([
      { role: "tool", content: "x" },
      { role: "assistant", content: "y" },
    ]),
    ["messages[0].role", '"tool"'],
  ],
  [chat([{ content: "x" }]), ["missing field messages[0].role"]],
  [chat([{ role: "user" }, { role: "assistant", content: "y" }]), ["missing field messages[0].content"]],
  [
    chat([
      { role: "user", content: "x" },
      { role: "assistant", content: "" },
    ]),
    ["messages[1].content must not be empty"],
  ],
  [
    chat([
      { role: "user", content: "  \n" },
      { role: "assistant", content: "y" },
    ]),
    ["messages[0].content must not be empty"],
  ],
  [
    chat([
      { role: "user", content: ["x"] },
      { role: "assistant", content: "y" },
    ]),
    ["messages[0].content must be a string", "an array"],
  ],
  [
    chat([
      { role: "user", content: "x", name: "bob" },
      { role: "assistant", content: "y" },
    ]),
    ['messages[0] has unknown field "name"'],
  ],
  [JSON.stringify({ messages: [{ role: "assistant", content: "y" }], tools: [] }), ['the line has unknown field "tools"']],
  [
    chat([
      { role: "user", content: "x", weight: 1 },
      { role: "assistant", content: "y" },
    ]),
    ["messages[0].weight", "only allowed on assistant", '"user"'],
  ],
  [
    chat([
      { role: "user", content: "x" },
      { role: "assistant", content: "y", weight: 0.5 },
    ]),
    ["messages[1].weight must be one of 0, 1", "0.5"],
  ],
  [
    chat([
      { role: "system", content: "s" },
      { role: "user", content: "x" },
    ]),
    ["no assistant message"],
  ],
  [
    chat([
      { role: "user", content: "x" },
      { role: "assistant", content: "y", weight: 0 },
    ]),
    ["weight 0", "nothing to train on"],
  ],
  [JSON.stringify({ messages: [{ role: "assistant", content: "y" }], prompt: "p" }), ["not both"]],
  [GOOD_COMPLETION, ["prompt/completion example", "line 1", "must not mix"]],
];

describe("parseTrainingJsonl, chat", () => {
  it("accepts valid chat lines, keeps weights and line numbers, skips blank lines", () => {
    const weighted = chat([
      { role: "user", content: "a" },
      { role: "assistant", content: "b", weight: 0 },
      { role: "user", content: "c" },
      { role: "assistant", content: "d", weight: 1 },
    ]);
    const result = parseTrainingJsonl(`${GOOD_CHAT}\n\n   \r\n${weighted}\n`);
    expect(result.errors).toEqual([]);
    expect(result.errorCount).toBe(0);
    expect(result.format).toBe("chat");
    expect(result.totalLines).toBe(4);
    expect(result.examples.map((example) => example.line)).toEqual([1, 4]);
    expect(result.examples[1]).toEqual({
      format: "chat",
      line: 4,
      messages: [
        { role: "user", content: "a" },
        { role: "assistant", content: "b", weight: 0 },
        { role: "user", content: "c" },
        { role: "assistant", content: "d", weight: 1 },
      ],
    });
  });

  it("reports each bad line class with its line number and a reason naming the field", () => {
    // The good chat line first fixes the file's format; each bad line follows at line index + 2.
    const text = [GOOD_CHAT, ...BAD_CHAT_LINES.map(([line]) => line)].join("\n");
    const result = parseTrainingJsonl(text, { maxErrors: 100 });
    expect(result.examples).toHaveLength(1);
    expect(result.errorCount).toBe(BAD_CHAT_LINES.length);
    BAD_CHAT_LINES.forEach(([line, words], index) => {
      const error = result.errors[index]!;
      expect(error.line, line).toBe(index + 2);
      for (const word of words) expect(error.reason, line).toContain(word);
    });
  });

  it("counts every error but keeps only maxErrors (default 20)", () => {
    const text = `${Array.from({ length: 30 }, () => "{oops").join("\n")}\n${GOOD_CHAT}`;
    const capped = parseTrainingJsonl(text, { maxErrors: 5 });
    expect(capped.errors.map((error) => error.line)).toEqual([1, 2, 3, 4, 5]);
    expect(capped.errorCount).toBe(30);
    expect(capped.examples).toHaveLength(1);
    expect(parseTrainingJsonl(text).errors).toHaveLength(20);
  });

  it("reports several problems of one line as one reason", () => {
    const result = parseTrainingJsonl(chat([{ role: "x", content: 1 }]));
    expect(result.errors[0]!.reason).toMatch(/messages\[0\]\.role .*\(and 1 more problem\)/);
  });

  it("strips a byte-order mark and accepts CRLF line ends", () => {
    const result = parseTrainingJsonl(`\uFEFF${GOOD_CHAT}\r\n${GOOD_CHAT}\r\n`);
    expect(result.errors).toEqual([]);
    expect(result.examples).toHaveLength(2);
    expect(result.totalLines).toBe(2);
  });
});

describe("parseTrainingJsonl, prompt/completion", () => {
  it("accepts prompt/completion lines, including an empty prompt", () => {
    const result = parseTrainingJsonl(`${GOOD_COMPLETION}\n${JSON.stringify({ prompt: "", completion: "x" })}`);
    expect(result.errors).toEqual([]);
    expect(result.format).toBe("prompt_completion");
    expect(result.examples[0]).toEqual({ format: "prompt_completion", prompt: "2+2=", completion: " 4", line: 1 });
  });

  it("names the bad field", () => {
    const lines: [string, string[]][] = [
      [JSON.stringify({ prompt: 1, completion: "x" }), ["prompt must be a string", "number 1"]],
      [JSON.stringify({ prompt: "p" }), ["missing field completion"]],
      [JSON.stringify({ completion: "c" }), ["missing field prompt"]],
      [JSON.stringify({ prompt: "p", completion: "" }), ["completion must not be empty"]],
      [JSON.stringify({ prompt: "p", completion: null }), ["completion must be a string", "null"]],
      [JSON.stringify({ prompt: "p", completion: "c", label: 1 }), ['unknown field "label"']],
      [GOOD_CHAT, ['chat ("messages") example', "(line 1) is prompt/completion"]],
    ];
    const result = parseTrainingJsonl([GOOD_COMPLETION, ...lines.map(([line]) => line)].join("\n"));
    expect(result.errorCount).toBe(lines.length);
    lines.forEach(([line, words], index) => {
      expect(result.errors[index]!.line).toBe(index + 2);
      for (const word of words) expect(result.errors[index]!.reason, line).toContain(word);
    });
  });

  it("takes the format from the first valid example, not from an invalid earlier line", () => {
    const result = parseTrainingJsonl(`${chat([{ role: "user", content: "x" }])}\n${GOOD_COMPLETION}\n${GOOD_CHAT}`);
    expect(result.format).toBe("prompt_completion");
    expect(result.errors.map((error) => error.line)).toEqual([1, 3]);
    expect(result.errors[1]!.reason).toContain("(line 2)");
  });
});

describe("validateTrainingFile", () => {
  const tenChats = Array.from({ length: 10 }, () => GOOD_CHAT).join("\n");

  it("passes a clean file of at least minExamples examples", () => {
    expect(validateTrainingFile(tenChats)).toEqual({
      ok: true,
      format: "chat",
      totalLines: 10,
      examples: 10,
      errorCount: 0,
      errors: [],
      fileErrors: [],
    });
  });

  it("fails a file with too few examples or any bad line", () => {
    const few = validateTrainingFile(`${GOOD_CHAT}\n${GOOD_CHAT}`);
    expect(few.ok).toBe(false);
    expect(few.fileErrors).toEqual(["the file has 2 valid examples; at least 10 are required"]);
    expect(validateTrainingFile(`${GOOD_CHAT}\n${GOOD_CHAT}`, { minExamples: 2 }).ok).toBe(true);
    const bad = validateTrainingFile(`${tenChats}\n{`);
    expect(bad.ok).toBe(false);
    expect(bad.examples).toBe(10);
    expect(bad.errors).toEqual([{ line: 11, reason: expect.stringContaining("invalid JSON") }]);
    expect(validateTrainingFile("").fileErrors).toEqual(["the file has 0 valid examples; at least 10 are required"]);
  });

  it("refuses a file over maxBytes without parsing it, counting UTF-8 bytes", () => {
    const text = JSON.stringify({ prompt: "é", completion: "😀" }); // é is 2 bytes, 😀 is 4
    const bytes = new TextEncoder().encode(text).length;
    expect(validateTrainingFile(text, { maxBytes: bytes, minExamples: 1 }).ok).toBe(true);
    const over = validateTrainingFile(text, { maxBytes: bytes - 1, minExamples: 1 });
    expect(over.ok).toBe(false);
    expect(over.examples).toBe(0);
    expect(over.fileErrors).toEqual([`the file is ${bytes} bytes, more than the limit of ${bytes - 1} bytes`]);
  });
});

describe("estimateTrainingTokens", () => {
  it("counts about one token per four UTF-8 bytes plus the default template's tokens", () => {
    const { examples } = parseTrainingJsonl(`${GOOD_CHAT}\n`);
    // "Be brief." 9 bytes → 3, "Hi" → 1, "Hello." → 2; a one-turn conversation adds 10, its system message 5.
    expect(estimateTrainingTokens(examples)).toBe(3 + 1 + 2 + 10 + 5);
    const completion = parseTrainingJsonl(GOOD_COMPLETION).examples;
    expect(estimateTrainingTokens(completion)).toBe(1 + 1 + 2); // "2+2=" → 1, " 4" → 1, and 2 around them
    expect(estimateTrainingTokens([])).toBe(0);
    // A byte vocabulary (the shipped model's): one token per UTF-8 byte.
    expect(estimateTrainingTokens(completion, 1)).toBe(4 + 2 + 2);
  });

  it("counts further turns and a system message with the template's own figures", () => {
    const jsonl = JSON.stringify({
      messages: [
        { role: "system", content: "ab" },
        { role: "user", content: "c" },
        { role: "assistant", content: "d" },
        { role: "user", content: "e" },
        { role: "assistant", content: "f" },
        { role: "user", content: "g" },
        { role: "assistant", content: "h" },
      ],
    });
    const { examples } = parseTrainingJsonl(jsonl);
    // 8 bytes of text, a conversation (20), two further turns (2 × 21) and a system message (-3: it replaces a longer default).
    expect(estimateTrainingTokens(examples, 1, { conversation: 20, turn: 21, system: -3, prompt_completion: 0 })).toBe(8 + 20 + 42 - 3);
  });
});
