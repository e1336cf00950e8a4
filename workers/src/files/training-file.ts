/**
 * What an uploaded training file must be, checked before anything is stored: UTF-8 JSONL where
 * every line is a chat or prompt/completion example (src/training-data.ts, the same rules the
 * trainer applies), at most MAX_TRAINING_FILE_BYTES, at least MIN_TRAINING_EXAMPLES examples.
 * A refusal is a 400 on `file` whose message lists the first bad lines with their reasons (also
 * given as `error.lines`, for a client that shows them beside the lines).
 */
import { ApiError, badRequest } from "../../../src/errors.ts";
import type { TemplateTokens } from "../../../src/protocol/training-figures.ts";
import { DEFAULT_BYTES_PER_TOKEN, estimateTrainingTokens, parseTrainingJsonl, type LineError } from "../../../src/training-data.ts";

/** The base model's UTF-8 bytes per token as configured (BASE_MODEL_BYTES_PER_TOKEN), else the usual BPE rate. */
export function baseModelBytesPerToken(env: { BASE_MODEL_BYTES_PER_TOKEN?: string }): number {
  const configured = Number(env.BASE_MODEL_BYTES_PER_TOKEN);
  return Number.isFinite(configured) && configured > 0 ? configured : DEFAULT_BYTES_PER_TOKEN;
}

/** Largest training file accepted, in bytes (the whole validated text is held in memory). */
export const MAX_TRAINING_FILE_BYTES = 32 * 1024 * 1024;
/** Fewest examples a training file must have, as at OpenAI. */
export const MIN_TRAINING_EXAMPLES = 10;
/** How many bad lines a refusal names. */
export const REPORTED_LINE_ERRORS = 10;

/** A file that passed validation. */
export interface ValidTrainingFile {
  examples: number;
  estimatedTokens: number;
}

/**
 * Validates an upload's bytes (its tokens estimated at `bytesPerToken`, the base model's rate, with
 * its template's tokens); throws an ApiError (400 on `file`, or 413) naming lines and reasons.
 */
export function validateTrainingUpload(bytes: Uint8Array, bytesPerToken: number, template?: TemplateTokens): ValidTrainingFile {
  if (bytes.byteLength > MAX_TRAINING_FILE_BYTES) {
    throw new ApiError(
      413,
      "invalid_request_error",
      `The file is ${bytes.byteLength} bytes; training files may be at most ${MAX_TRAINING_FILE_BYTES} bytes.`,
      "file",
      "file_too_large",
    );
  }
  const parsed = parseTrainingJsonl(decodeUtf8(bytes), { maxErrors: REPORTED_LINE_ERRORS });
  if (parsed.errorCount > 0) throw invalidFile(parsed.errors, parsed.errorCount);
  if (parsed.examples.length < MIN_TRAINING_EXAMPLES) {
    throw badRequest(
      `Invalid training file: it has ${parsed.examples.length} example${parsed.examples.length === 1 ? "" : "s"}; at least ${MIN_TRAINING_EXAMPLES} are required.`,
      "file",
      "invalid_training_file",
    );
  }
  return { examples: parsed.examples.length, estimatedTokens: estimateTrainingTokens(parsed.examples, bytesPerToken, template) };
}

// A fatal decoder says only that the bytes are bad; decoding line by line names the lines.
function decodeUtf8(bytes: Uint8Array): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    const errors: LineError[] = [];
    let count = 0;
    let start = 0;
    let line = 1;
    const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
    for (let i = 0; i <= bytes.length; i++) {
      if (i < bytes.length && bytes[i] !== 0x0a) continue;
      try {
        decoder.decode(bytes.subarray(start, i));
      } catch {
        count++;
        if (errors.length < REPORTED_LINE_ERRORS) errors.push({ line, reason: "not valid UTF-8" });
      }
      start = i + 1;
      line++;
    }
    throw invalidFile(errors, count);
  }
}

function invalidFile(errors: LineError[], count: number): ApiError {
  const listed = errors.map((error) => `line ${error.line}: ${error.reason}`).join("; ");
  const more = count > errors.length ? `; and ${count - errors.length} more bad line${count - errors.length === 1 ? "" : "s"}` : "";
  const error = badRequest(`Invalid training file: ${count} bad line${count === 1 ? "" : "s"}. ${listed}${more}.`, "file", "invalid_training_file");
  error.lines = errors;
  return error;
}
