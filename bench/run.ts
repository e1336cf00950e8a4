/**
 * `npm run bench -- <name>`: runs one benchmark. Each prints progress and, as its last line,
 * one JSON object `{"bench": "<name>", ...figures}`.
 */
const BENCHES: Record<string, () => Promise<Record<string, unknown>>> = {
  engine: async () => (await import("./engine.ts")).runEngineBench(),
  adapters: async () => (await import("./adapters.ts")).runAdaptersBench(),
  train: async () => (await import("./train.ts")).runTrainBench(),
  quality: async () => (await import("./quality.ts")).runQualityBench(),
  serve: async () => (await import("./serve.ts")).runServeBench(),
  e2e: async () => (await import("./e2e.ts")).runEndToEndBench(),
  edge: async () => (await import("./edge.ts")).runEdgeBench(),
  load: async () => (await import("./stack-load.ts")).runStackLoadBench(),
  chaos: async () => (await import("./chaos.ts")).runChaosBench(),
  gpu: async () => (await import("./gpu.ts")).runGpuBench(),
  realsize: async () => (await import("./realsize.ts")).runRealSizeBench(),
  structured: async () => (await import("./structured.ts")).runStructuredBench(),
  sweep: async () => (await import("./sweep.ts")).runSweepBench(),
  quantized: async () => (await import("./quantized.ts")).runQuantizedBench(),
};

const name = process.argv[2];
if (name === undefined || !(name in BENCHES)) {
  console.error(`usage: npm run bench -- <${Object.keys(BENCHES).join("|")}>`);
  process.exit(2);
}
const figures = await BENCHES[name]();
console.log(JSON.stringify({ bench: name, ...figures }));
