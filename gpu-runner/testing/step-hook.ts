import type { LlamaEngine } from "../engine/llama-engine.ts";

/** The engine with `beforeStep` awaited before every batch step (to slow or hold a runner in tests). */
export function withStepHook(engine: LlamaEngine, beforeStep: () => Promise<void>): LlamaEngine {
  // Delegate everything else to the real engine through the prototype chain.
  const hooked = Object.create(engine) as LlamaEngine;
  hooked.step = async (batch, tokens, logits) => {
    await beforeStep();
    return engine.step(batch, tokens, logits);
  };
  return hooked;
}
