/**
 * The tokens a base model's template adds to a training example, measured the way the trainer
 * tokenizes (tokenize.ts): a runner reports them so the edge's estimate of a job's trained tokens
 * counts the template as this tokenizer writes it, not as a guess.
 */
import type { TemplateTokens } from "../../src/protocol/training-figures.ts";
import type { ChatTrainingRecord, TrainingMessage } from "../../src/training-data.ts";
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import { tokenizeRecords } from "./tokenize.ts";

const CONTENT = "a"; // one short word per message; its own tokens are subtracted

/** Template tokens of this tokenizer's chat template and of a prompt/completion example. */
export function measureTemplateTokens(tokenizer: TextTokenizer): TemplateTokens {
  const content = tokenizer.encode(CONTENT, { addSpecialTokens: false }).length;
  const trainedLength = (records: Parameters<typeof tokenizeRecords>[0], messages: number): number => {
    const { examples, skipped } = tokenizeRecords(records, tokenizer, { maxLength: 100_000 });
    if (examples.length !== 1) throw new Error(`the template could not be measured: ${skipped[0]?.reason ?? "no example"}`);
    return examples[0]!.inputIds.length - messages * content;
  };
  const chat = (...roles: TrainingMessage["role"][]): number => {
    const record: ChatTrainingRecord = { format: "chat", messages: roles.map((role) => ({ role, content: CONTENT })), line: 1 };
    return trainedLength([record], roles.length);
  };
  const conversation = chat("user", "assistant");
  return {
    conversation,
    turn: chat("user", "assistant", "user", "assistant") - conversation,
    system: chat("system", "user", "assistant") - conversation,
    prompt_completion: trainedLength([{ format: "prompt_completion", prompt: CONTENT, completion: CONTENT, line: 1 }], 2),
  };
}
