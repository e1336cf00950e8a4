/**
 * llama.cpp's side of the engine comparison, in a process of its own so its memory is its own:
 *
 *   node --import tsx bench/llamacpp-phase.ts <gguf path> <threads> <decode tokens>
 *
 * Loads a GGUF written by bench/gguf.ts through node-llama-cpp's prebuilt CPU binaries (nothing
 * is built or downloaded), evaluates a fixed 16-token prompt, then decodes greedily one token at a
 * time at batch 1 (a few tokens untimed, then the timed ones). The KV cache is float32, as our engine's is, and flash attention is off (the
 * settings gpu-runner/quantize/gguf.test.ts checks llama.cpp's numbers under). Progress goes to
 * stderr; the last stdout line is one JSON object:
 *
 *   decode_tok_s   decoded tokens per second (decode only)
 *   prefill_tok_s  prompt tokens per second (the prompt's evaluation and its first sampled token)
 *   load_seconds   from loading the bindings to a ready context
 *   rss_mb         resident memory after the decode, MiB (llama.cpp maps the file: its pages count)
 */
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp";
import { COMPARISON_PROMPT, WARM_UP_TOKENS } from "./comparison-prompt.ts";

const PROMPT = COMPARISON_PROMPT as Token[];
const CONTEXT_SIZE = 512;

function parseArguments(argv: string[]): { path: string; threads: number; decodeTokens: number } {
  const [path, threads, decodeTokens] = argv;
  const positive = (text: string | undefined, name: string) => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(text)}`);
    return value;
  };
  if (path === undefined) throw new Error("usage: bench/llamacpp-phase.ts <gguf path> <threads> <decode tokens>");
  return { path, threads: positive(threads, "threads"), decodeTokens: positive(decodeTokens, "decode tokens") };
}

async function main(): Promise<void> {
  const { path, threads, decodeTokens } = parseArguments(process.argv.slice(2));
  const contextSize = Math.max(CONTEXT_SIZE, PROMPT.length + WARM_UP_TOKENS + decodeTokens + 1);
  const loadStarted = performance.now();
  const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, maxThreads: threads, progressLogs: false, logLevel: LlamaLogLevel.warn });
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize,
    batchSize: PROMPT.length,
    sequences: 1,
    threads: { ideal: threads, min: threads },
    flashAttention: false,
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
  });
  const sequence = context.getSequence();
  const loadSeconds = (performance.now() - loadStarted) / 1000;
  process.stderr.write(`llama.cpp: ${path} loaded in ${loadSeconds.toFixed(2)} s, ${threads} threads, context ${context.contextSize}\n`);

  // temperature 0 is greedy; yieldEogToken keeps a random model's end-of-text token from ending the run.
  const tokens = sequence.evaluate(PROMPT, { temperature: 0, yieldEogToken: true });
  const prefillStarted = performance.now();
  const first = await tokens.next();
  const prefillSeconds = (performance.now() - prefillStarted) / 1000;
  if (first.done === true) throw new Error("llama.cpp produced no token after the prompt");

  for (let i = 0; i < WARM_UP_TOKENS; i++) if ((await tokens.next()).done === true) throw new Error("llama.cpp stopped while warming up");
  const decodeStarted = performance.now();
  for (let i = 0; i < decodeTokens; i++) {
    const next = await tokens.next();
    if (next.done === true) throw new Error(`llama.cpp stopped after ${i} decoded tokens`);
  }
  const decodeSeconds = (performance.now() - decodeStarted) / 1000;
  await tokens.return();
  const rssMb = process.memoryUsage().rss / 2 ** 20;
  process.stderr.write(`llama.cpp: ${decodeTokens} tokens decoded in ${decodeSeconds.toFixed(2)} s\n`);

  await context.dispose();
  await model.dispose();
  await llama.dispose();
  const result = {
    decode_tok_s: decodeTokens / decodeSeconds,
    rss_mb: rssMb,
    load_seconds: loadSeconds,
    prefill_tok_s: PROMPT.length / prefillSeconds,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
