/**
 * `npm run demo`: loads a checkpoint directory — by default the shipped base model in models/ —
 * and streams a chat completion to the terminal through the ONNX engine, no server involved.
 *
 *   npm run demo -- [--model DIR] [--prompt TEXT] [--max-tokens N] [--temperature T] [--seed S]
 */
import { access } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { LlamaEngine } from "./engine/llama-engine.ts";
import { generate } from "./generate/generate.ts";
import { loadCheckpoint } from "./model/checkpoint.ts";
import { SHIPPED_MODEL_DIRECTORY } from "./model/shipped-model.ts";
import { writeTinyCheckpoint } from "./testing/tiny-checkpoints.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    prompt: { type: "string", default: "Tell me a short story." },
    "max-tokens": { type: "string", default: "120" },
    temperature: { type: "string", default: "0.8" },
    seed: { type: "string", default: "1" },
  },
});

async function main(): Promise<void> {
  let directory = values.model ?? SHIPPED_MODEL_DIRECTORY;
  const exists = await access(join(directory, "config.json")).then(
    () => true,
    () => false,
  );
  if (values.model === undefined && !exists) {
    // A checkout without the shipped weights still runs: on a deterministic random model.
    directory = join(process.cwd(), ".cache", "models", "tiny-llama");
    if (
      !(await access(join(directory, "config.json")).then(
        () => true,
        () => false,
      ))
    ) {
      console.error(`the shipped model is missing; generating a tiny random model in ${directory}…`);
      await writeTinyCheckpoint(directory, "llama-gqa");
    }
  }
  const started = performance.now();
  const checkpoint = await loadCheckpoint(directory);
  const engine = await LlamaEngine.create(checkpoint.config, checkpoint.weights);
  const { config, tokenizer } = checkpoint;
  console.error(
    `loaded ${config.architecture} (${config.numLayers} layers, hidden ${config.hiddenSize}, vocab ${config.vocabSize}) from ${directory} in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  const prompt =
    tokenizer.chatTemplate !== null ? tokenizer.applyChatTemplate([{ role: "user", content: values.prompt! }], { addGenerationPrompt: true }) : values.prompt!;
  const promptIds = tokenizer.encode(prompt, { addSpecialTokens: tokenizer.chatTemplate === null });
  console.error(`prompt (${promptIds.length} tokens): ${JSON.stringify(prompt)}`);
  const decodeStarted = performance.now();
  for await (const event of generate(engine, tokenizer, promptIds, {
    maxNewTokens: Number(values["max-tokens"]),
    temperature: Number(values.temperature),
    seed: Number(values.seed),
  })) {
    if (event.type === "token") process.stdout.write(event.text);
    else {
      process.stdout.write(`${event.tail}\n`);
      const seconds = (performance.now() - decodeStarted) / 1000;
      console.error(`finish: ${event.reason}, ${event.completionTokens} tokens, ${(event.completionTokens / seconds).toFixed(1)} tokens/s`);
    }
  }
  await engine.dispose();
}

main().catch((error: unknown) => {
  console.error(`error: ${(error as Error).message}`);
  process.exit(1);
});
