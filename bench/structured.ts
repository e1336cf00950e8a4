/**
 * Structured output on the shipped model, through the runner's API in process:
 *   validity   — JSON schemas (nested objects, enums, arrays, numbers, required and optional
 *                properties) × prompts, sampled at temperature 0.8, on the base model and on a
 *                PiCa adapter fine-tuned here to answer in JSON; an output counts as valid when
 *                it finished by itself, parses and validates against its schema.
 *   throughput — 16 concurrent requests of 48 tokens each (end-of-sequence banned by logit_bias,
 *                so every row decodes all of them), rotating round by round over: free text;
 *                the same rows constrained by a schema they cannot finish within 48 tokens; free
 *                text with top_logprobs 5. Ratios are medians of per-round ratios of tokens/s.
 */
import { Validator } from "@cfworker/json-schema";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { loadCheckpoint } from "../gpu-runner/model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../gpu-runner/model/shipped-model.ts";
import { loadOrComputeBasis } from "../gpu-runner/pica/basis.ts";
import { ANIMALS, NAMES } from "../gpu-runner/pretrain/corpus.ts";
import { Rng } from "../gpu-runner/random.ts";
import { createRunnerApp } from "../gpu-runner/server/app.ts";
import { Scheduler } from "../gpu-runner/server/scheduler.ts";
import { fineTune } from "../gpu-runner/training/trainer.ts";
import { type ChatCompletion, chatCompletionSchema } from "../src/protocol/openai.ts";
import { median, progress, round } from "./stats.ts";

const SEED = 20_261_204;
const RANK = 8;
const R_MAX = 32; // the shipped basis, pica-basis-r32.safetensors
const ROWS = 16;
const THROUGHPUT_TOKENS = 48;
const ROUNDS = 7;
const CHOICES_PER_PROMPT = 4;
const ADAPTER_ID = "json-person";

// Small schemas: the shipped model's context is 128 byte-level tokens, prompt included.
const SCHEMAS: Record<string, Record<string, unknown>> = {
  person: {
    type: "object",
    properties: { name: { type: "string", maxLength: 8 }, age: { type: "integer", minimum: 0, maximum: 99 } },
    required: ["name", "age"],
    additionalProperties: false,
  },
  mood: { type: "object", properties: { mood: { enum: ["glad", "sad", "calm"] }, sure: { type: "boolean" } }, required: ["mood"] },
  nested: {
    type: "object",
    properties: {
      pet: { type: "object", properties: { kind: { enum: ANIMALS.slice(0, 4) }, legs: { type: "integer", minimum: 0, maximum: 8 } }, required: ["kind"] },
    },
    required: ["pet"],
    additionalProperties: false,
  },
  list: {
    type: "object",
    properties: { ids: { type: "array", items: { type: "integer", minimum: 0, maximum: 9 }, minItems: 1, maxItems: 4 } },
    required: ["ids"],
  },
  number: {
    type: "object",
    properties: { score: { type: "number", minimum: -1, maximum: 1 }, note: { type: ["string", "null"], maxLength: 6 } },
    required: ["score", "note"],
  },
};
const PROMPTS = ["Ada?", "A pet?", "JSON:", "Tell me."];

// A schema no row can finish within THROUGHPUT_TOKENS: at least 40 numbers.
const UNFINISHABLE = {
  type: "object",
  properties: { v: { type: "array", items: { type: "integer", minimum: 0, maximum: 99 }, minItems: 40 } },
  required: ["v"],
};

type Json = Record<string, unknown>;

/** Runs the structured-output bench and returns its figures. */
export async function runStructuredBench(): Promise<Record<string, unknown>> {
  const { config, weights, tokenizer, directory } = await loadCheckpoint(SHIPPED_MODEL_DIRECTORY);
  const { basis } = await loadOrComputeBasis(directory, config, weights, { rMax: R_MAX });
  progress("fine-tuning a PiCa adapter that answers in JSON…");
  const trained = await fineTune({ config, weights, tokenizer, basis }, { training: personJsonl(), hyperparameters: { n_epochs: 3, rank: RANK }, seed: SEED });
  const engine = await LlamaEngine.create(config, weights, { adapters: { basis, rank: RANK } });
  engine.registerAdapter(ADAPTER_ID, trained.adapter!);
  const scheduler = new Scheduler(engine, tokenizer, { maxBatch: ROWS, maxQueue: 4 * ROWS });
  const app = createRunnerApp({ engine, tokenizer, scheduler });
  const chat = async (body: Json): Promise<ChatCompletion> => {
    const response = await app.request("/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const json: unknown = await response.json();
    if (response.status !== 200) throw new Error(`${response.status}: ${JSON.stringify(json)}`);
    return chatCompletionSchema.parse(json);
  };

  try {
    let valid = 0;
    let total = 0;
    const byModel: Record<string, number> = {};
    for (const model of ["pica-base-4m", ADAPTER_ID]) {
      let modelValid = 0;
      let modelTotal = 0;
      for (const [name, schema] of Object.entries(SCHEMAS)) {
        const validator = new Validator(schema as never);
        const answers = await Promise.all(
          PROMPTS.map((prompt, index) =>
            chat({
              model,
              messages: [{ role: "user", content: prompt }],
              temperature: 0.8,
              seed: SEED + index,
              n: CHOICES_PER_PROMPT,
              response_format: { type: "json_schema", json_schema: { name, schema, strict: false } },
            }),
          ),
        );
        for (const choice of answers.flatMap((answer) => answer.choices)) {
          modelTotal++;
          if (choice.finish_reason !== "stop") continue;
          try {
            if (validator.validate(JSON.parse(choice.message.content ?? "")).valid) modelValid++;
          } catch {
            // not JSON: counted as invalid
          }
        }
      }
      progress(`${model}: ${modelValid}/${modelTotal} outputs finished, parsed and validated`);
      byModel[model] = modelValid / modelTotal;
      valid += modelValid;
      total += modelTotal;
    }

    // Throughput: every row decodes THROUGHPUT_TOKENS tokens in each setting.
    const banEos = Object.fromEntries(tokenizer.eosTokenIds.map((id) => [String(id), -100]));
    const settings: Record<string, Json> = {
      free: {},
      constrained: { response_format: { type: "json_schema", json_schema: { name: "numbers", schema: UNFINISHABLE } } },
      logprobs: { logprobs: true, top_logprobs: 5 },
    };
    const measureRound = async (extra: Json): Promise<number> => {
      const started = performance.now();
      const answers = await Promise.all(
        Array.from({ length: ROWS }, (_, row) =>
          chat({
            model: row % 2 === 0 ? "pica-base-4m" : ADAPTER_ID,
            messages: [{ role: "user", content: PROMPTS[row % PROMPTS.length] }],
            max_tokens: THROUGHPUT_TOKENS,
            temperature: 0.8,
            seed: row,
            logit_bias: banEos,
            ...extra,
          }),
        ),
      );
      const tokens = answers.reduce((sum, answer) => sum + answer.usage.completion_tokens, 0);
      if (tokens !== ROWS * THROUGHPUT_TOKENS) throw new Error(`expected ${ROWS * THROUGHPUT_TOKENS} tokens, got ${tokens}`);
      return tokens / ((performance.now() - started) / 1000);
    };
    await measureRound(settings.free); // warm-up: sessions, the grammar compiler, the compiled schema
    await measureRound(settings.constrained);
    const rates: Record<string, number[]> = { free: [], constrained: [], logprobs: [] };
    const rng = new Rng(SEED);
    for (let r = 0; r < ROUNDS; r++) {
      const order = Object.keys(settings);
      for (let i = order.length - 1; i > 0; i--) {
        const j = rng.integer(0, i);
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (const name of order) rates[name].push(await measureRound(settings[name]));
      progress(`round ${r + 1}/${ROUNDS}: ${order.map((name) => `${name} ${rates[name].at(-1)!.toFixed(0)} tok/s`).join(", ")}`);
    }
    const ratio = (a: number[], b: number[]) => median(a.map((value, i) => value / b[i]));
    return {
      valid_fraction: round(valid / total),
      valid_fraction_base: round(byModel["pica-base-4m"]),
      valid_fraction_adapter: round(byModel[ADAPTER_ID]),
      outputs: total,
      constrained_over_free_tok_s: round(ratio(rates.constrained, rates.free), 3),
      logprobs_overhead: round(ratio(rates.logprobs, rates.free), 3),
      free_tok_s: Math.round(median(rates.free)),
      constrained_tok_s: Math.round(median(rates.constrained)),
      logprobs_tok_s: Math.round(median(rates.logprobs)),
      rows: ROWS,
    };
  } finally {
    await scheduler.close();
    engine.dispose();
  }
}

/** Chat examples that answer a person's description with a JSON object. */
function personJsonl(): string {
  const rng = new Rng(SEED);
  const lines: string[] = [];
  for (let i = 0; i < 64; i++) {
    const name = rng.pick(NAMES);
    const age = rng.integer(1, 99);
    lines.push(
      JSON.stringify({
        messages: [
          { role: "user", content: `${name} is ${age}.` },
          { role: "assistant", content: JSON.stringify({ name, age }) },
        ],
      }),
    );
  }
  return lines.join("\n");
}
