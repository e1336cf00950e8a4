import { describe, expect, it } from "vitest";
import { LLAMA_3_2_1B_INSTRUCT_CONFIG as LLAMA32_1B } from "../testing/realsize-checkpoints.ts";
import { ModelConfigError, parseModelConfig } from "./config.ts";

// config.json files as the Hugging Face hub serves them (fields the engine ignores kept in, as
// real files have them), so the parser is tested against what it will actually read.
const SMOLLM2_135M = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 0,
  eos_token_id: 0,
  hidden_act: "silu",
  hidden_size: 576,
  initializer_range: 0.041666666666666664,
  intermediate_size: 1536,
  is_llama_config: true,
  max_position_embeddings: 8192,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 9,
  num_hidden_layers: 30,
  num_key_value_heads: 3,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_interleaved: false,
  rope_scaling: null,
  rope_theta: 100000,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.42.3",
  use_cache: true,
  vocab_size: 49152,
};

const QWEN25_05B = {
  architectures: ["Qwen2ForCausalLM"],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: "silu",
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.40.1",
  use_cache: true,
  use_mrope: false,
  use_sliding_window: false,
  vocab_size: 151936,
};

// Mistral-Nemo: head_dim 128 although hidden_size / heads = 160.
const MISTRAL_NEMO = {
  architectures: ["MistralForCausalLM"],
  attention_dropout: 0.0,
  bos_token_id: 1,
  eos_token_id: 2,
  head_dim: 128,
  hidden_act: "silu",
  hidden_size: 5120,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 128000,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 40,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 1000000.0,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  transformers_version: "4.43.3",
  use_cache: true,
  vocab_size: 131072,
};

/** A small Llama config to vary one field at a time. */
const SMALL_LLAMA = {
  architectures: ["LlamaForCausalLM"],
  vocab_size: 300,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 512,
};

function without<T extends Record<string, unknown>>(object: T, ...keys: string[]): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...object };
  for (const key of keys) delete copy[key];
  return copy;
}

const QWEN3_06B = {
  architectures: ["Qwen3ForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: "silu",
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: "qwen3",
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.51.0",
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const MISTRAL_7B_V01 = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  transformers_version: "4.34.0.dev0",
  use_cache: true,
  vocab_size: 32000,
};

describe("Qwen3 and sliding windows", () => {
  it("reads Qwen3-0.6B: q/k norms over an explicit head_dim of 128 (not 1024 / 16), no biases, no window", () => {
    const config = parseModelConfig(QWEN3_06B);
    expect(config.architecture).toBe("Qwen3ForCausalLM");
    expect(config.qkNorm).toBe(true);
    expect(config.headDim).toBe(128);
    expect([config.qkvBias, config.oBias, config.mlpBias]).toEqual([false, false, false]);
    expect(config.numKvHeads).toBe(8);
    expect(config.attentionWindows).toEqual(new Array(28).fill(null));
  });

  it("Qwen3: an absent head_dim is the class default 128, attention_bias covers q/k/v and o", () => {
    const config = parseModelConfig({ ...without(QWEN3_06B, "head_dim"), attention_bias: true });
    expect(config.headDim).toBe(128);
    expect([config.qkvBias, config.oBias]).toEqual([true, true]);
  });

  it("Mistral-7B-v0.1 slides every layer over its 4096-token window", () => {
    expect(parseModelConfig(MISTRAL_7B_V01).attentionWindows).toEqual(new Array(32).fill(4096));
  });

  it("an absent Mistral sliding_window is transformers' default 4096, an explicit null none", () => {
    expect(parseModelConfig(without(MISTRAL_7B_V01, "sliding_window")).attentionWindows[0]).toBe(4096);
    expect(parseModelConfig({ ...MISTRAL_7B_V01, sliding_window: null }).attentionWindows[0]).toBeNull();
  });

  it("Qwen2/Qwen3 slide only with use_sliding_window, and then the layers from max_window_layers on", () => {
    expect(parseModelConfig(QWEN25_05B).attentionWindows).toEqual(new Array(24).fill(null));
    const on = parseModelConfig({ ...QWEN25_05B, use_sliding_window: true, sliding_window: 4096, max_window_layers: 20 });
    expect(on.attentionWindows).toEqual([...new Array(20).fill(null), ...new Array(4).fill(4096)]);
    const qwen3 = parseModelConfig({ ...QWEN3_06B, use_sliding_window: true, sliding_window: 2048, max_window_layers: 26 });
    expect(qwen3.attentionWindows.filter((w) => w === 2048)).toHaveLength(2);
  });

  it("explicit layer_types decide which layers slide", () => {
    const layerTypes = Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? "sliding_attention" : "full_attention"));
    const config = parseModelConfig({ ...QWEN25_05B, use_sliding_window: true, sliding_window: 1024, layer_types: layerTypes });
    expect(config.attentionWindows.slice(0, 4)).toEqual([1024, null, 1024, null]);
  });

  it("Llama never slides", () => {
    expect(parseModelConfig({ ...LLAMA32_1B, sliding_window: 16 }).attentionWindows.every((w) => w === null)).toBe(true);
  });
});

describe("parseModelConfig on real checkpoints' config.json", () => {
  it("reads SmolLM2-135M: tied embeddings, 9 heads over 3 KV heads, rope_theta 1e5", () => {
    expect(parseModelConfig(SMOLLM2_135M)).toEqual({
      architecture: "LlamaForCausalLM",
      vocabSize: 49152,
      hiddenSize: 576,
      intermediateSize: 1536,
      numLayers: 30,
      numHeads: 9,
      numKvHeads: 3,
      headDim: 64,
      rmsNormEps: 1e-5,
      ropeTheta: 100000,
      ropeScaling: null,
      maxPositionEmbeddings: 8192,
      tieWordEmbeddings: true,
      qkvBias: false,
      oBias: false,
      mlpBias: false,
      qkNorm: false,
      attentionWindows: new Array(30).fill(null),
      bosTokenId: 0,
      eosTokenIds: [0],
    });
  });

  it("reads Qwen2.5-0.5B: q/k/v bias but no o_proj bias, an unused sliding window accepted", () => {
    const config = parseModelConfig(QWEN25_05B);
    expect(config.architecture).toBe("Qwen2ForCausalLM");
    expect(config.qkvBias).toBe(true);
    expect(config.oBias).toBe(false);
    expect(config.mlpBias).toBe(false);
    expect(config.tieWordEmbeddings).toBe(true);
    expect(config.numHeads).toBe(14);
    expect(config.numKvHeads).toBe(2);
    expect(config.headDim).toBe(64);
    expect(config.ropeTheta).toBe(1_000_000);
    expect(config.ropeScaling).toBeNull();
    expect(config.maxPositionEmbeddings).toBe(32768);
    expect(config.rmsNormEps).toBe(1e-6);
    expect(config.eosTokenIds).toEqual([151643]);
  });

  it("Qwen2 has q/k/v bias even when attention_bias says false", () => {
    const config = parseModelConfig({ ...QWEN25_05B, attention_bias: false });
    expect([config.qkvBias, config.oBias]).toEqual([true, false]);
  });

  it("reads Llama-3.2-1B: llama3 rope scaling, explicit head_dim, a list of eos ids", () => {
    const config = parseModelConfig(LLAMA32_1B);
    expect(config.ropeScaling).toEqual({
      type: "llama3",
      factor: 32,
      lowFrequencyFactor: 1,
      highFrequencyFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
    expect(config.ropeTheta).toBe(500000);
    expect(config.headDim).toBe(64);
    expect(config.numKvHeads).toBe(8);
    expect(config.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(config.bosTokenId).toBe(128000);
    expect(config.maxPositionEmbeddings).toBe(131072);
    expect([config.qkvBias, config.oBias, config.mlpBias]).toEqual([false, false, false]);
  });

  it("reads a legacy rope_scaling that names its kind with `type`", () => {
    const { rope_type: _unused, ...scaling } = LLAMA32_1B.rope_scaling;
    const config = parseModelConfig({ ...LLAMA32_1B, rope_scaling: { ...scaling, type: "llama3" } });
    expect(config.ropeScaling?.factor).toBe(32);
  });

  it("reads Mistral-Nemo's head_dim 128 although hidden_size / heads is 160", () => {
    const config = parseModelConfig(MISTRAL_NEMO);
    expect(config.architecture).toBe("MistralForCausalLM");
    expect(config.headDim).toBe(128);
    expect(config.hiddenSize / config.numHeads).toBe(160);
    expect([config.qkvBias, config.oBias, config.mlpBias]).toEqual([false, false, false]);
    expect(config.maxPositionEmbeddings).toBe(128000);
  });
});

describe("parseModelConfig: transformers 5 rope_parameters", () => {
  it("takes rope_theta from rope_parameters of type default, with no scaling", () => {
    const raw = { ...without(SMALL_LLAMA), rope_parameters: { rope_type: "default", rope_theta: 250000 } };
    const config = parseModelConfig(raw);
    expect(config.ropeTheta).toBe(250000);
    expect(config.ropeScaling).toBeNull();
  });

  it("prefers rope_parameters' rope_theta over a stale top-level rope_theta", () => {
    const raw = { ...SMALL_LLAMA, rope_theta: 10000, rope_parameters: { rope_type: "default", rope_theta: 123456 } };
    expect(parseModelConfig(raw).ropeTheta).toBe(123456);
  });

  it("reads llama3 scaling from rope_parameters", () => {
    const raw = {
      ...SMALL_LLAMA,
      rope_parameters: { rope_type: "llama3", rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
    };
    const config = parseModelConfig(raw);
    expect(config.ropeTheta).toBe(500000);
    expect(config.ropeScaling).toEqual({ type: "llama3", factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositionEmbeddings: 64 });
  });

  it("defaults rope_theta to 10000 when neither form gives it", () => {
    expect(parseModelConfig(SMALL_LLAMA).ropeTheta).toBe(10000);
  });
});

describe("parseModelConfig: biases", () => {
  it("Llama's attention_bias puts a bias on q, k, v and o", () => {
    const config = parseModelConfig({ ...SMALL_LLAMA, attention_bias: true });
    expect([config.qkvBias, config.oBias, config.mlpBias]).toEqual([true, true, false]);
  });

  it("Llama's mlp_bias puts a bias on gate, up and down only", () => {
    const config = parseModelConfig({ ...SMALL_LLAMA, mlp_bias: true });
    expect([config.qkvBias, config.oBias, config.mlpBias]).toEqual([false, false, true]);
  });

  it("Mistral has no bias whatever attention_bias and mlp_bias say", () => {
    const config = parseModelConfig({ ...MISTRAL_NEMO, attention_bias: true, mlp_bias: true });
    expect([config.qkvBias, config.oBias, config.mlpBias]).toEqual([false, false, false]);
  });
});

describe("parseModelConfig: defaults of absent fields follow transformers' config classes", () => {
  const heads32 = { ...SMALL_LLAMA, hidden_size: 256, num_attention_heads: 32 };

  it("absent num_key_value_heads: Llama takes num_attention_heads", () => {
    expect(parseModelConfig(without(heads32, "num_key_value_heads")).numKvHeads).toBe(32);
  });

  it("absent num_key_value_heads: Mistral takes 8", () => {
    const raw = { ...without(heads32, "num_key_value_heads", "architectures"), architectures: ["MistralForCausalLM"], sliding_window: null };
    expect(parseModelConfig(raw).numKvHeads).toBe(8);
  });

  it("absent num_key_value_heads: Qwen2 takes 32", () => {
    const raw = { ...without(heads32, "num_key_value_heads", "architectures"), architectures: ["Qwen2ForCausalLM"], num_attention_heads: 64 };
    expect(parseModelConfig(raw).numKvHeads).toBe(32);
  });

  it("explicit null num_key_value_heads means multi-head attention in every family", () => {
    for (const architecture of ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"]) {
      const raw = { ...heads32, architectures: [architecture], num_key_value_heads: null, sliding_window: null };
      expect(parseModelConfig(raw).numKvHeads, architecture).toBe(32);
    }
  });

  it("absent or null head_dim is hidden_size / num_attention_heads", () => {
    expect(parseModelConfig(without(SMALL_LLAMA)).headDim).toBe(16);
    expect(parseModelConfig({ ...SMALL_LLAMA, head_dim: null }).headDim).toBe(16);
  });

  it("absent scalars take Llama's defaults", () => {
    const config = parseModelConfig(without(SMALL_LLAMA, "max_position_embeddings"));
    expect(config.rmsNormEps).toBe(1e-6);
    expect(config.maxPositionEmbeddings).toBe(2048);
    expect(config.tieWordEmbeddings).toBe(false);
    expect(config.bosTokenId).toBeNull();
    expect(config.eosTokenIds).toEqual([]);
  });

  it("absent max_position_embeddings: Qwen2 takes 32768 and Mistral 131072", () => {
    const qwen = parseModelConfig(without(QWEN25_05B, "max_position_embeddings"));
    expect(qwen.maxPositionEmbeddings).toBe(32768);
    const mistral = parseModelConfig(without(MISTRAL_NEMO, "max_position_embeddings"));
    expect(mistral.maxPositionEmbeddings).toBe(131072);
  });

  it("falls back to model_type when architectures is missing", () => {
    expect(parseModelConfig({ ...without(QWEN25_05B, "architectures") }).architecture).toBe("Qwen2ForCausalLM");
    expect(parseModelConfig({ ...without(MISTRAL_NEMO, "architectures") }).architecture).toBe("MistralForCausalLM");
  });
});

describe("parseModelConfig refuses what it cannot run exactly, naming the field and value", () => {
  function errorOf(raw: unknown): ModelConfigError {
    try {
      parseModelConfig(raw);
    } catch (error) {
      expect(error).toBeInstanceOf(ModelConfigError);
      return error as ModelConfigError;
    }
    throw new Error("parseModelConfig accepted the config");
  }

  it("an unknown architecture", () => {
    const error = errorOf({ ...SMALL_LLAMA, architectures: ["GPT2LMHeadModel"] });
    expect(error.message).toMatch(/architectures\[0\] "GPT2LMHeadModel" is not supported/);
    expect(error.message).toContain("LlamaForCausalLM");
  });

  it("an unknown model_type without architectures", () => {
    expect(errorOf({ ...without(SMALL_LLAMA, "architectures"), model_type: "gpt2" }).message).toMatch(/model_type "gpt2"/);
  });

  it.each(["yarn", "linear", "dynamic"])("rope scaling type %s", (kind) => {
    const viaScaling = errorOf({ ...SMALL_LLAMA, rope_scaling: { rope_type: kind, factor: 4 } });
    expect(viaScaling.message).toMatch(new RegExp(`rope scaling type "${kind}" is not supported`));
    const viaLegacyType = errorOf({ ...SMALL_LLAMA, rope_scaling: { type: kind, factor: 4 } });
    expect(viaLegacyType.message).toContain(`"${kind}"`);
    const viaParameters = errorOf({ ...SMALL_LLAMA, rope_parameters: { rope_type: kind, rope_theta: 10000, factor: 4 } });
    expect(viaParameters.message).toContain(`"${kind}"`);
  });

  it("heads not divisible by KV heads", () => {
    const error = errorOf({ ...SMALL_LLAMA, num_attention_heads: 4, num_key_value_heads: 3 });
    expect(error.message).toMatch(/num_attention_heads 4 is not a multiple of num_key_value_heads 3/);
  });

  it("Qwen2's default of 32 KV heads against 14 query heads", () => {
    expect(errorOf(without(QWEN25_05B, "num_key_value_heads")).message).toMatch(/num_attention_heads 14 .* num_key_value_heads 32/);
  });

  it("an odd head_dim", () => {
    expect(errorOf({ ...SMALL_LLAMA, head_dim: 15 }).message).toMatch(/head_dim 15 must be even/);
    // 60 / 4 = 15 derived from hidden_size
    expect(errorOf({ ...SMALL_LLAMA, hidden_size: 60 }).message).toMatch(/head_dim 15 must be even/);
  });

  it("hidden_size not divisible by heads with no head_dim", () => {
    expect(errorOf({ ...SMALL_LLAMA, hidden_size: 66 }).message).toMatch(/hidden_size 66 is not divisible by num_attention_heads 4/);
  });

  it("an activation other than silu", () => {
    expect(errorOf({ ...SMALL_LLAMA, hidden_act: "gelu" }).message).toMatch(/hidden_act "gelu" is not supported/);
  });

  it("layer_types other than full_attention and sliding_attention, or of the wrong length", () => {
    const windowed = { ...QWEN25_05B, use_sliding_window: true, sliding_window: 4096 };
    expect(errorOf({ ...windowed, layer_types: new Array(24).fill("chunked_attention") }).message).toMatch(
      /layer_types\[0\] "chunked_attention" is not supported/,
    );
    expect(errorOf({ ...windowed, layer_types: ["full_attention"] }).message).toMatch(/layer_types has 1 entries for 24 layers/);
  });

  it("vocab_size missing, negative or fractional", () => {
    expect(errorOf(without(SMALL_LLAMA, "vocab_size")).message).toMatch(/^config\.json: vocab_size: /);
    expect(errorOf({ ...SMALL_LLAMA, vocab_size: -5 }).message).toMatch(/^config\.json: vocab_size: /);
    expect(errorOf({ ...SMALL_LLAMA, vocab_size: 300.5 }).message).toMatch(/^config\.json: vocab_size: /);
  });

  it("a field of the wrong type names the field", () => {
    expect(errorOf({ ...SMALL_LLAMA, hidden_size: "64" }).message).toMatch(/hidden_size/);
    expect(errorOf({ ...SMALL_LLAMA, rope_scaling: { rope_type: "llama3", factor: -1 } }).message).toMatch(/rope_scaling\.factor/);
  });

  it("not an object at all", () => {
    expect(errorOf(null).message).toMatch(/\(root\)/);
    expect(errorOf([1, 2]).message).toMatch(/\(root\)/);
  });

  it("llama3 scaling missing factor", () => {
    const { factor: _unused, ...scaling } = LLAMA32_1B.rope_scaling;
    const error = errorOf({ ...LLAMA32_1B, rope_scaling: scaling });
    expect(error.message).toMatch(/llama3 needs factor/);
  });

  it("llama3 scaling whose high_freq_factor does not exceed low_freq_factor", () => {
    const error = errorOf({ ...LLAMA32_1B, rope_scaling: { ...LLAMA32_1B.rope_scaling, high_freq_factor: 1 } });
    expect(error.message).toMatch(/high_freq_factor 1 must exceed low_freq_factor 1/);
  });
});
