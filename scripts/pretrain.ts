/**
 * `npm run pretrain`: reproduces the shipped base model. A small Llama-architecture model with a
 * byte-level vocabulary is trained from scratch, every weight trainable, by the same training
 * graphs and autodiff that fine-tune adapters, on the project's generated corpus; the result is
 * written as a Hugging Face checkpoint directory with a model card.
 *
 *   npm run pretrain -- [--steps N] [--out DIR] [--seed S]
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeSafetensorsFile } from "../gpu-runner/checkpoint/safetensors.ts";
import { LlamaEngine } from "../gpu-runner/engine/llama-engine.ts";
import { generateText } from "../gpu-runner/generate/generate.ts";
import { parseModelConfig } from "../gpu-runner/model/config.ts";
import { weightsFromParameters } from "../gpu-runner/model/linear-graph.ts";
import { SHIPPED_MODEL_DIRECTORY } from "../gpu-runner/model/shipped-model.ts";
import { pretrainingWeights } from "../gpu-runner/model/random-weights.ts";
import { generateCorpus } from "../gpu-runner/pretrain/corpus.ts";
import { Rng } from "../gpu-runner/random.ts";
import { makeByteLevelTokenizerFiles } from "../gpu-runner/tokenizer/byte-level.ts";
import { TextTokenizer } from "../gpu-runner/tokenizer/tokenizer.ts";
import { AdamW, clipGradientNorm, learningRateAt } from "../gpu-runner/training/optimizer.ts";
import { TrainingSession, type TrainingBatch } from "../gpu-runner/training/training-session.ts";

/** The shipped model's config.json. */
export const BASE_MODEL_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  vocab_size: 259,
  hidden_size: 256,
  intermediate_size: 704,
  num_hidden_layers: 6,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 128, // the window it is trained on: positions beyond it were never seen
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  hidden_act: "silu",
  tie_word_embeddings: true,
  bos_token_id: 256,
  eos_token_id: 258,
  torch_dtype: "float32",
};

const { values: args } = parseArgs({
  options: {
    steps: { type: "string", default: "4000" },
    out: { type: "string", default: SHIPPED_MODEL_DIRECTORY },
    seed: { type: "string", default: "20261127" },
  },
});

const ROWS = 16;
const LENGTH = 128;
const CORPUS_BYTES = 12_000_000;
const EVAL_BYTES = 200_000;
const PEAK_LR = 2e-3;
const WARMUP = 100;

function windowBatch(tokens: Uint16Array, rng: Rng): TrainingBatch {
  const inputIds: number[] = [];
  const labels: number[] = [];
  for (let row = 0; row < ROWS; row++) {
    const start = Math.floor(rng.uniform() * (tokens.length - LENGTH - 1));
    for (let t = 0; t < LENGTH; t++) {
      inputIds.push(tokens[start + t]);
      labels.push(tokens[start + t + 1]);
    }
  }
  return { rows: ROWS, length: LENGTH, inputIds, labels, lossWeights: new Float32Array(ROWS * LENGTH).fill(1), lengths: new Array(ROWS).fill(LENGTH) };
}

function bar(fraction: number, width = 28): string {
  const filled = Math.round(fraction * width);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
}

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

async function main(): Promise<void> {
  const steps = Number(args.steps);
  const seed = Number(args.seed);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got ${args.steps}`);
  const config = parseModelConfig(BASE_MODEL_CONFIG);
  const files = makeByteLevelTokenizerFiles();
  const tokenizer = TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfig);

  process.stderr.write(`generating ${(CORPUS_BYTES / 1e6).toFixed(0)} MB of corpus (seed ${seed})…\n`);
  const tokens = Uint16Array.from(tokenizer.encode(generateCorpus(seed, CORPUS_BYTES), { addSpecialTokens: false }));
  const evalTokens = Uint16Array.from(tokenizer.encode(generateCorpus(seed + 1, EVAL_BYTES), { addSpecialTokens: false }));
  const session = await TrainingSession.create(config, pretrainingWeights(config, seed), { kind: "full" });
  const values = new Map(session.parameters.map((p) => [p.name, Float32Array.from(p.initial)]));
  const parameterCount = [...values.values()].reduce((s, v) => s + v.length, 0);
  process.stderr.write(
    `model: ${config.numLayers} layers, hidden ${config.hiddenSize}, ${(parameterCount / 1e6).toFixed(2)}M parameters; ${steps} steps of ${ROWS}×${LENGTH} tokens\n`,
  );
  const optimizer = new AdamW(values, { weightDecay: 0.01 });
  const schedule = { peak: PEAK_LR, totalSteps: steps, warmupSteps: Math.min(WARMUP, steps), minRatio: 0.1 };
  const rng = new Rng(seed);
  const evalRng = new Rng(seed + 2);
  const evalBatches = Array.from({ length: 8 }, () => windowBatch(evalTokens, evalRng));
  const evaluate = async () => {
    let total = 0;
    for (const batch of evalBatches) total += (await session.evaluate(batch, values)).loss;
    return total / evalBatches.length;
  };

  const started = performance.now();
  let smoothed = Number.NaN;
  let lastLoss = Number.NaN;
  const evalHistory: { step: number; loss: number }[] = [];
  for (let step = 0; step < steps; step++) {
    const { loss, gradients } = await session.step(windowBatch(tokens, rng), values);
    const norm = clipGradientNorm(gradients as Map<string, Float32Array>, 1);
    if (Number.isFinite(norm)) optimizer.step(gradients as Map<string, Float32Array>, learningRateAt(step, schedule));
    lastLoss = loss;
    smoothed = Number.isNaN(smoothed) ? loss : 0.98 * smoothed + 0.02 * loss;
    const seconds = (performance.now() - started) / 1000;
    const done = step + 1;
    if (done % 10 === 0 || done === steps) {
      const rate = (done * ROWS * LENGTH) / seconds;
      process.stderr.write(
        `\r${bar(done / steps)} ${done}/${steps} loss ${smoothed.toFixed(3)} ${rate.toFixed(0)} tok/s elapsed ${clock(seconds)} ETA ${clock((seconds / done) * (steps - done))}   `,
      );
    }
    if (done % 500 === 0 || done === steps) {
      const loss = await evaluate();
      evalHistory.push({ step: done, loss });
      process.stderr.write(`\n  step ${done}: held-out loss ${loss.toFixed(3)} (${(loss / Math.LN2).toFixed(2)} bits/byte)\n`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  await session.dispose();

  const weights = weightsFromParameters(config, values);
  const out = args.out!;
  await mkdir(out, { recursive: true });
  await writeFile(join(out, "config.json"), `${JSON.stringify(BASE_MODEL_CONFIG, null, 2)}\n`);
  await writeSafetensorsFile(join(out, "model.safetensors"), weights, { format: "pt" });
  await writeFile(join(out, "tokenizer.json"), JSON.stringify(files.tokenizerJson));
  await writeFile(join(out, "tokenizer_config.json"), `${JSON.stringify(files.tokenizerConfig, null, 2)}\n`);

  const engine = await LlamaEngine.create(config, weights);
  const samples: string[] = [];
  for (const [i, prompt] of ["Ada had a", "<|im_start|>user\nWhat is 12 plus 7?<|im_end|>\n<|im_start|>assistant\n", "The word fox"].entries()) {
    const { text } = await generateText(engine, tokenizer, prompt, { maxNewTokens: 80, temperature: 0.7, seed: i, stop: ["<|endoftext|>"] });
    samples.push(`${prompt}${text}`);
  }
  await engine.dispose();
  const finalEval = evalHistory.at(-1)!.loss;
  await writeFile(join(out, "README.md"), modelCard({ parameterCount, steps, seed, seconds, lastLoss: smoothed, finalEval, evalHistory, samples }));
  process.stderr.write(`wrote ${out} in ${clock(seconds)}; final train loss ${lastLoss.toFixed(3)}, held-out ${finalEval.toFixed(3)}\n`);
}

function modelCard(facts: {
  parameterCount: number;
  steps: number;
  seed: number;
  seconds: number;
  lastLoss: number;
  finalEval: number;
  evalHistory: { step: number; loss: number }[];
  samples: string[];
}): string {
  const tokens = facts.steps * ROWS * LENGTH;
  return `# pica-base-4m

A small Llama-architecture base model (${(facts.parameterCount / 1e6).toFixed(2)}M parameters: 6 layers,
hidden 256, 4 query heads over 2 KV heads, SwiGLU 704, tied embeddings, context 128) with a
byte-level vocabulary (256 bytes + \`<|endoftext|>\`, \`<|im_start|>\`, \`<|im_end|>\`, ChatML chat
template). It is the platform's embedded default for \`npm start\`, demos, tests and benchmarks.

## Data

A corpus generated by \`gpu-runner/pretrain/corpus.ts\` from seed ${facts.seed}: short stories from
a small English grammar, true statements about numbers and words, key-value records and ChatML
conversations in which an assistant answers small requests (sums, reversing or capitalising a
word, counting letters, sorting words, parity, short stories). All text is produced by this
project's code, so the corpus carries no third-party copyright; it is released under the
project's license, like the weights.

## Training

- Full-parameter training with the project's own ONNX training graphs and autodiff on
  onnxruntime-node (CPU), AdamW (β 0.9/0.999, weight decay 0.01), peak learning rate ${PEAK_LR},
  ${WARMUP} warmup steps then cosine to 10%, gradient clipping at 1.0.
- ${facts.steps} steps × ${ROWS} windows × ${LENGTH} tokens = ${(tokens / 1e6).toFixed(2)}M tokens,
  ${(facts.seconds / 60).toFixed(1)} minutes on 2 CPU cores.
- Final training loss ${facts.lastLoss.toFixed(3)} nats/byte (smoothed); held-out loss
  ${facts.finalEval.toFixed(3)} nats/byte (${(facts.finalEval / Math.LN2).toFixed(2)} bits/byte) on a
  corpus generated from another seed.

| step | held-out loss |
| --- | --- |
${facts.evalHistory.map((e) => `| ${e.step} | ${e.loss.toFixed(3)} |`).join("\n")}

Reproduce with \`npm run pretrain\` (same seed, same steps; results are identical on the same
machine and CPU type).

## Samples (temperature 0.7)

${facts.samples.map((s) => `\`\`\`\n${s}\n\`\`\``).join("\n\n")}

## Limits

It knows only its corpus: simple sentences, small arithmetic and word games. It is a base for
fine-tuning tests and benchmarks, not a general assistant.
`;
}

main().catch((error: unknown) => {
  process.stderr.write(`\nerror: ${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
