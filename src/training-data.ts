// Fine-tuning data in OpenAI's JSONL format: one example per line, either a chat
// `{"messages": [...]}` or a legacy `{"prompt": ..., "completion": ...}`. Bad lines are reported
// with their 1-based line number and a reason that names the field, the way the edge shows them to
// the tenant at upload time, so this module never throws on bad data and imports nothing from
// `node:` (the edge runs it in a Worker; the runner runs it again before training).
import { z } from "zod";
import { DEFAULT_TEMPLATE_TOKENS, type TemplateTokens } from "./protocol/training-figures.ts";
import { showValue } from "./show-value.ts";

/** A role a training message may have; tool and function messages are not supported. */
export type TrainingRole = "system" | "user" | "assistant";

/** One message of a chat example; `weight` (assistant only) 0 keeps it as context but untrained. */
export interface TrainingMessage {
  role: TrainingRole;
  content: string;
  weight?: 0 | 1;
}

/** A chat example: the conversation, trained on its assistant messages whose weight is not 0. */
export interface ChatTrainingRecord {
  format: "chat";
  messages: TrainingMessage[];
  /** 1-based line of the JSONL file, so later stages (tokenisation) can report by line too. */
  line: number;
}

/** A legacy prompt/completion example: trained on the completion and the end-of-text token. */
export interface PromptCompletionTrainingRecord {
  format: "prompt_completion";
  prompt: string;
  completion: string;
  /** 1-based line of the JSONL file. */
  line: number;
}

/** One valid training example. */
export type TrainingRecord = ChatTrainingRecord | PromptCompletionTrainingRecord;

/** The format of a training file: the format of its first valid example. */
export type TrainingFileFormat = TrainingRecord["format"];

/** A rejected line: its 1-based number and what is wrong with it, naming the field. */
export interface LineError {
  line: number;
  reason: string;
}

/** Options of {@link parseTrainingJsonl}. */
export interface ParseOptions {
  /** Most errors kept in `errors` (all are counted in `errorCount`); 20 like OpenAI's report. */
  maxErrors?: number;
}

/** What {@link parseTrainingJsonl} found: the valid examples and the first errors. */
export interface ParseResult {
  examples: TrainingRecord[];
  /** The first `maxErrors` bad lines, in file order. */
  errors: LineError[];
  /** Number of bad lines, including those left out of `errors`. */
  errorCount: number;
  /** Format of the first valid example; null when there is none. */
  format: TrainingFileFormat | null;
  /** Lines in the file, blank ones included; a final newline does not start another line. */
  totalLines: number;
}

const DEFAULT_MAX_ERRORS = 20;

const nonEmptyText = z.string().refine((text) => text.trim().length > 0, { message: "must not be empty" });

const messageSchema = z.strictObject({
  role: z.enum(["system", "user", "assistant"]),
  content: nonEmptyText,
  weight: z.literal([0, 1]).optional(),
});

const chatLineSchema = z.strictObject({ messages: z.array(messageSchema).min(1) });

const promptCompletionLineSchema = z.strictObject({ prompt: z.string(), completion: nonEmptyText });

/** Parses an OpenAI fine-tuning JSONL file into examples and per-line errors; never throws on bad data. */
export function parseTrainingJsonl(text: string, options: ParseOptions = {}): ParseResult {
  const maxErrors = options.maxErrors ?? DEFAULT_MAX_ERRORS;
  const examples: TrainingRecord[] = [];
  const errors: LineError[] = [];
  let errorCount = 0;
  let format: TrainingFileFormat | null = null;
  let formatLine = 0;

  const lines = splitLines(text);
  for (let index = 0; index < lines.length; index++) {
    const line = index + 1;
    if (lines[index]!.trim().length === 0) continue;
    const outcome = parseLine(lines[index]!, line, format, formatLine);
    if ("reason" in outcome) {
      errorCount++;
      if (errors.length < maxErrors) errors.push(outcome);
      continue;
    }
    if (format === null) {
      format = outcome.format;
      formatLine = line;
    }
    examples.push(outcome);
  }
  return { examples, errors, errorCount, format, totalLines: lines.length };
}

/** Options of {@link validateTrainingFile}. */
export interface ValidateOptions extends ParseOptions {
  /** Fewest valid examples a fine-tuning job accepts; 10 as at OpenAI. */
  minExamples?: number;
  /** Largest file accepted, in UTF-8 bytes; no limit when left out. */
  maxBytes?: number;
}

/** The upload-time report on a training file, small enough to store with the file. */
export interface ValidationReport {
  /** True when the file can be trained on as is: no bad line and no file-level problem. */
  ok: boolean;
  format: TrainingFileFormat | null;
  totalLines: number;
  /** Number of valid examples. */
  examples: number;
  errorCount: number;
  errors: LineError[];
  /** Problems of the file as a whole (size, too few examples), as sentences. */
  fileErrors: string[];
}

/** Validates a whole training file (size, every line, number of examples) into a storable report. */
export function validateTrainingFile(text: string, options: ValidateOptions = {}): ValidationReport {
  const minExamples = options.minExamples ?? 10;
  if (options.maxBytes !== undefined) {
    const bytes = utf8ByteLength(text);
    // A file over the limit is not parsed at all: the limit exists to bound the work done here.
    if (bytes > options.maxBytes) {
      return {
        ok: false,
        format: null,
        totalLines: 0,
        examples: 0,
        errorCount: 0,
        errors: [],
        fileErrors: [`the file is ${bytes} bytes, more than the limit of ${options.maxBytes} bytes`],
      };
    }
  }
  const parsed = parseTrainingJsonl(text, options);
  const fileErrors: string[] = [];
  if (parsed.examples.length < minExamples) {
    fileErrors.push(
      `the file has ${parsed.examples.length} valid example${parsed.examples.length === 1 ? "" : "s"}; ` + `at least ${minExamples} are required`,
    );
  }
  return {
    ok: parsed.errorCount === 0 && fileErrors.length === 0,
    format: parsed.format,
    totalLines: parsed.totalLines,
    examples: parsed.examples.length,
    errorCount: parsed.errorCount,
    errors: parsed.errors,
    fileErrors,
  };
}

function parseLine(text: string, line: number, fileFormat: TrainingFileFormat | null, formatLine: number): TrainingRecord | LineError {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { line, reason: `invalid JSON: ${(error as Error).message}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { line, reason: `a line must be a JSON object, got ${describeJsonType(value)}` };
  }
  const lineFormat = detectFormat(value);
  if (typeof lineFormat !== "string") return { line, reason: lineFormat.reason };
  // A file is one format throughout, fixed by its first valid example, because the trainer renders
  // every example of a job the same way; every line of the other format is reported.
  if (fileFormat !== null && lineFormat !== fileFormat) {
    return {
      line,
      reason:
        `this line is a ${formatName(lineFormat)} example but the file's first example ` +
        `(line ${formatLine}) is ${formatName(fileFormat)}; a file must not mix formats`,
    };
  }
  if (lineFormat === "prompt_completion") {
    const parsed = promptCompletionLineSchema.safeParse(value, { reportInput: true });
    if (!parsed.success) return { line, reason: describeIssues(parsed.error.issues) };
    return { format: "prompt_completion", prompt: parsed.data.prompt, completion: parsed.data.completion, line };
  }
  const parsed = chatLineSchema.safeParse(value, { reportInput: true });
  if (!parsed.success) return { line, reason: describeIssues(parsed.error.issues) };
  const messages = parsed.data.messages;
  // OpenAI's rules that span fields, checked after the shape so the reasons stay one per line.
  const weighted = messages.findIndex((message) => message.role !== "assistant" && message.weight !== undefined);
  if (weighted >= 0) {
    return { line, reason: `messages[${weighted}].weight is only allowed on assistant messages ` + `(this one has role "${messages[weighted]!.role}")` };
  }
  if (!messages.some((message) => message.role === "assistant")) {
    return { line, reason: "messages has no assistant message; an example needs at least one to train on" };
  }
  if (!messages.some((message) => message.role === "assistant" && message.weight !== 0)) {
    return { line, reason: "every assistant message has weight 0, so the example has nothing to train on" };
  }
  return { format: "chat", messages: messages.map((message) => ({ ...message })), line };
}

function detectFormat(value: object): TrainingFileFormat | { reason: string } {
  const isChat = "messages" in value;
  const isPromptCompletion = "prompt" in value || "completion" in value;
  if (isChat && isPromptCompletion) {
    return { reason: 'a line must have either "messages" (chat) or "prompt" and "completion", not both' };
  }
  if (isChat) return "chat";
  if (isPromptCompletion) return "prompt_completion";
  const keys = Object.keys(value);
  return {
    reason:
      'missing field "messages" (chat) or "prompt" and "completion"' +
      (keys.length > 0 ? `; found ${keys.map((key) => JSON.stringify(key)).join(", ")}` : "; the object is empty"),
  };
}

function formatName(format: TrainingFileFormat): string {
  return format === "chat" ? 'chat ("messages")' : "prompt/completion";
}

// Turns zod's issues into one sentence naming the field, e.g. `messages[1].role must be one of …`.
function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  const first = describeIssue(issues[0]!);
  return issues.length > 1 ? `${first} (and ${issues.length - 1} more problem${issues.length > 2 ? "s" : ""})` : first;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const field = formatPath(issue.path);
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case "unrecognized_keys": {
      const keys = issue.keys.map((key) => JSON.stringify(key)).join(", ");
      return `${field === "" ? "the line" : field} has unknown field${issue.keys.length > 1 ? "s" : ""} ${keys}`;
    }
    case "invalid_type":
      if (input === undefined) return `missing field ${field}`;
      return `${field} must be ${withArticle(issue.expected)}, got ${describeJsonType(input)}`;
    case "invalid_value":
      if (input === undefined) return `missing field ${field}`;
      return `${field} must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}, got ${showValue(input)}`;
    case "too_small":
      return `${field} must not be empty`;
    default:
      return `${field} ${issue.message}`;
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let text = "";
  for (const part of path) {
    text += typeof part === "number" ? `[${part}]` : `${text === "" ? "" : "."}${String(part)}`;
  }
  return text;
}

function withArticle(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function describeJsonType(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `a string (${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)})`;
  if (typeof value === "number" || typeof value === "boolean") return `${typeof value} ${String(value)}`;
  return withArticle(typeof value);
}

function splitLines(text: string): string[] {
  // A leading byte-order mark (Windows editors write one) would otherwise break line 1's JSON.
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text;
  if (body.length === 0) return [];
  const lines = body.split(/\r?\n/);
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

// TextEncoder would copy a possibly large file just to measure it; count UTF-8 bytes directly.
function utf8ByteLength(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

// Without the tokenizer at hand (the edge has none), the estimate takes the base model's rate of
// UTF-8 bytes per token as configured (BASE_MODEL_BYTES_PER_TOKEN): ~4 is the usual rate for
// byte-level BPE on English text, 1 for a byte vocabulary such as the shipped model's. The tokens
// the chat template adds are the runner's own count (training-figures.ts), measured on its tokenizer.
export const DEFAULT_BYTES_PER_TOKEN = 4;

/** The count of the tokens one epoch over these examples trains on (for estimates, not billing). */
export function estimateTrainingTokens(
  examples: readonly TrainingRecord[],
  bytesPerToken = DEFAULT_BYTES_PER_TOKEN,
  template: TemplateTokens = DEFAULT_TEMPLATE_TOKENS,
): number {
  let tokens = 0;
  for (const example of examples) {
    if (example.format === "prompt_completion") {
      tokens +=
        Math.ceil(utf8ByteLength(example.prompt) / bytesPerToken) + Math.ceil(utf8ByteLength(example.completion) / bytesPerToken) + template.prompt_completion;
      continue;
    }
    let system = 0;
    let others = 0;
    for (const message of example.messages) {
      tokens += Math.ceil(utf8ByteLength(message.content) / bytesPerToken);
      if (message.role === "system") system++;
      else others++;
    }
    tokens += template.conversation + Math.max(0, Math.ceil(others / 2) - 1) * template.turn + system * template.system;
  }
  return Math.max(0, tokens);
}
