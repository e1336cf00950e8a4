// Training examples to token ids with a per-token loss weight, for next-token training.
//
// Convention (the label shift happens here, once): the example's tokens t[0..n) give
//   inputIds[i]    = t[i]      for i in [0, n-1)
//   labels[i]      = t[i+1]    (the token position i must predict)
//   lossWeights[i] = 1 iff t[i+1] is a trained token, else 0
// so all three arrays have length n-1 and the model's logits at position i are scored against
// labels[i]. Trained tokens are the content of assistant messages whose weight is not 0 plus the
// end-of-turn token that closes each (the model must learn to stop), or for prompt/completion
// examples the completion plus the eos token. Token t[0] is never trained: nothing predicts it.
import type { TextTokenizer } from "../tokenizer/tokenizer.ts";
import type { ChatTrainingRecord, LineError, PromptCompletionTrainingRecord, TrainingRecord } from "../../src/training-data.ts";

/** One example ready for batching; the three arrays have the same length (see the file comment). */
export interface TokenizedExample {
  inputIds: number[];
  labels: number[];
  lossWeights: number[];
}

/** Options of {@link tokenizeRecord}. */
export interface TokenizeOptions {
  /** Longest `inputIds` allowed (the model's sequence length), so at most maxLength + 1 tokens. */
  maxLength: number;
}

/** An example tokenized (and how many tokens truncation removed), or why it cannot be trained on. */
export type TokenizeOutcome = { ok: true; example: TokenizedExample; truncatedTokens: number } | { ok: false; reason: string };

// A stretch of the rendered text that is tokenized on its own; `trained` marks reply text.
interface Piece {
  text: string;
  trained: boolean;
}

// Token ids with a trained flag per token and the token counts at which a chat may be cut.
interface Tokens {
  ids: number[];
  trained: boolean[];
  /** Token counts that end a trained reply: the only places a too-long chat may be cut. */
  replyEnds: number[];
}

/**
 * Tokenizes one example for next-token training.
 *
 * Too long (more than maxLength + 1 tokens):
 * - prompt/completion: tokens are dropped from the left of the prompt (after a leading bos, which
 *   the model always saw in pre-training); when the completion and eos alone leave no room for
 *   one token of context, the example is refused.
 * - chat: the conversation is cut after the last trainable assistant reply that still fits, so the
 *   system prompt and the context of every kept reply stay exactly as at inference (cutting from
 *   the left would drop the system prompt); when even the first trainable reply does not fit, the
 *   example is refused. Replies after the cut are lost and counted in `truncatedTokens`.
 */
export function tokenizeRecord(record: TrainingRecord, tokenizer: TextTokenizer, options: TokenizeOptions): TokenizeOutcome {
  const { maxLength } = options;
  if (!Number.isInteger(maxLength) || maxLength < 1) throw new Error(`maxLength must be a positive integer, got ${maxLength}`);
  const limit = maxLength + 1;

  let tokens: Tokens;
  let truncatedTokens = 0;
  if (record.format === "prompt_completion") {
    const built = promptCompletionTokens(record, tokenizer, limit);
    if ("reason" in built) return { ok: false, reason: built.reason };
    ({ tokens, truncatedTokens } = built);
  } else {
    const pieces = chatPieces(record, tokenizer);
    if ("reason" in pieces) return { ok: false, reason: pieces.reason };
    tokens = tokenizePieces(pieces, tokenizer);
    if (tokens.ids.length > limit) {
      const cut = tokens.replyEnds.filter((end) => end <= limit).at(-1);
      if (cut === undefined) {
        return {
          ok: false,
          reason: `too long: the first trainable assistant reply ends at token ${tokens.replyEnds[0]}, ` + `but at most maxLength + 1 = ${limit} tokens fit`,
        };
      }
      truncatedTokens = tokens.ids.length - cut;
      tokens = { ids: tokens.ids.slice(0, cut), trained: tokens.trained.slice(0, cut), replyEnds: [] };
    }
  }

  const example: TokenizedExample = {
    inputIds: tokens.ids.slice(0, -1),
    labels: tokens.ids.slice(1),
    lossWeights: tokens.trained.slice(1).map((trained) => (trained ? 1 : 0)),
  };
  // Never hand the trainer an example that contributes nothing: it would only dilute the batch.
  if (!example.lossWeights.includes(1)) {
    return { ok: false, reason: "no token to train on: the trained text is empty or is the very first token" };
  }
  return { ok: true, example, truncatedTokens };
}

/** What {@link tokenizeRecords} made of a whole data set. */
export interface TokenizedDataset {
  examples: TokenizedExample[];
  /** Examples left out, by their JSONL line, with the reason. */
  skipped: LineError[];
  /** Examples kept but truncated, by their JSONL line, with the number of tokens removed. */
  truncated: { line: number; tokens: number }[];
}

/** Tokenizes every record, collecting the refused and truncated ones by line for the job's events. */
export function tokenizeRecords(records: readonly TrainingRecord[], tokenizer: TextTokenizer, options: TokenizeOptions): TokenizedDataset {
  const dataset: TokenizedDataset = { examples: [], skipped: [], truncated: [] };
  for (const record of records) {
    const outcome = tokenizeRecord(record, tokenizer, options);
    if (!outcome.ok) {
      dataset.skipped.push({ line: record.line, reason: outcome.reason });
      continue;
    }
    dataset.examples.push(outcome.example);
    if (outcome.truncatedTokens > 0) dataset.truncated.push({ line: record.line, tokens: outcome.truncatedTokens });
  }
  return dataset;
}

// Prompt/completion examples use no chat template: the prompt is tokenized exactly as the
// completions endpoint tokenizes a prompt (with the tokenizer's own special tokens, e.g. Llama 3's
// bos), and the completion on its own after it, as the model generates it, then eos. That eos is
// the tokenizer config's eos_token, as TRL appends it: eosTokenIds starts with
// generation_config.json's list, whose first id can be another stop token (Llama 3.1 Instruct lists
// <|end_of_text|> first while its tokenizer's eos is <|eot_id|>).
function promptCompletionTokens(
  record: PromptCompletionTrainingRecord,
  tokenizer: TextTokenizer,
  limit: number,
): { tokens: Tokens; truncatedTokens: number } | { reason: string } {
  const eos = tokenizer.eosTokenId ?? tokenizer.eosTokenIds[0];
  if (eos === undefined) throw new Error("the tokenizer has no eos token, so a completion cannot be taught to end");
  let prompt = tokenizer.encode(record.prompt, { addSpecialTokens: true });
  const completion = [...tokenizer.encode(record.completion, { addSpecialTokens: false }), eos];
  let truncatedTokens = 0;
  if (prompt.length + completion.length > limit) {
    if (completion.length >= limit) {
      return {
        reason: `too long: the completion and eos are ${completion.length} tokens, ` + `leaving no room for the prompt within maxLength + 1 = ${limit} tokens`,
      };
    }
    const keepBos = tokenizer.bosTokenId !== null && prompt[0] === tokenizer.bosTokenId ? 1 : 0;
    truncatedTokens = prompt.length + completion.length - limit;
    prompt = [...prompt.slice(0, keepBos), ...prompt.slice(keepBos + truncatedTokens)];
  }
  return {
    tokens: {
      ids: [...prompt, ...completion],
      trained: [...prompt.map(() => false), ...completion.map(() => true)],
      replyEnds: [prompt.length + completion.length],
    },
    truncatedTokens,
  };
}

// Finds each assistant reply in the rendered conversation by rendering twice per reply: the
// messages before it with the generation prompt (the exact text the model is given when it writes
// that reply) and the messages through it. The difference is the reply as the template writes it,
// closing token included. Searching the rendered text for the content instead would break on
// templates that trim or escape content, and on replies that repeat earlier text. The rendered
// text is then cut at those boundaries and each piece tokenized on its own, so a reply's tokens
// begin exactly where generation begins, as they do when the model produces it; the cuts are the
// same whatever the weights, so a weight changes which tokens train, never the tokens themselves.
function chatPieces(record: ChatTrainingRecord, tokenizer: TextTokenizer): Piece[] | { reason: string } {
  const messages = record.messages.map(({ role, content }) => ({ role, content }));
  const render = (count: number, addGenerationPrompt: boolean): string => tokenizer.applyChatTemplate(messages.slice(0, count), { addGenerationPrompt });
  // Special tokens that end a turn; the trained part of a reply stops after the last of them, so the
  // separator a template writes between turns (ChatML's "\n") is context, not something to learn.
  const turnEnds = tokenizer.eosTokenIds.map((id) => tokenizer.idToToken(id)).filter((token): token is string => !!token);

  try {
    const full = render(messages.length, false);
    const pieces: Piece[] = [];
    let cursor = 0;
    for (let index = 0; index < messages.length; index++) {
      const message = record.messages[index]!;
      if (message.role !== "assistant") continue;
      const before = render(index, true);
      const through = render(index + 1, false);
      if (before.length < cursor || !through.startsWith(before) || !full.startsWith(through)) {
        return {
          reason:
            `the chat template does not render messages[${index}] (assistant) as a continuation ` +
            "of the conversation before it, so its tokens cannot be located",
        };
      }
      const reply = through.slice(before.length);
      if (!reply.includes(message.content.trim())) {
        return { reason: `the chat template does not write the content of messages[${index}] (assistant) verbatim` };
      }
      let trainedLength = 0;
      for (const token of turnEnds) {
        const at = reply.lastIndexOf(token);
        if (at >= 0) trainedLength = Math.max(trainedLength, at + token.length);
      }
      if (trainedLength === 0) trainedLength = reply.length; // a template without an end-of-turn token
      pieces.push({ text: full.slice(cursor, before.length), trained: false });
      pieces.push({ text: reply.slice(0, trainedLength), trained: message.weight !== 0 });
      cursor = before.length + trainedLength;
    }
    pieces.push({ text: full.slice(cursor), trained: false });
    return pieces;
  } catch (error) {
    // Templates raise on conversations they do not support (e.g. roles that do not alternate).
    return { reason: (error as Error).message };
  }
}

function tokenizePieces(pieces: readonly Piece[], tokenizer: TextTokenizer): Tokens {
  const tokens: Tokens = { ids: [], trained: [], replyEnds: [] };
  for (const piece of pieces) {
    if (piece.text.length === 0) continue;
    // No added specials: a chat template writes bos itself when the model wants one.
    for (const id of tokenizer.encode(piece.text, { addSpecialTokens: false })) {
      tokens.ids.push(id);
      tokens.trained.push(piece.trained);
    }
    if (piece.trained) tokens.replyEnds.push(tokens.ids.length);
  }
  return tokens;
}
