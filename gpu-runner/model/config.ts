/**
 * A Hugging Face `config.json` for a Llama-family decoder, read into one typed config.
 *
 * The families differ in a handful of switches (biases, tied embeddings, defaults); everything
 * else about the maths is shared, so one `ModelConfig` describes them all. Anything we cannot
 * run exactly (an unknown architecture, an unsupported rope scaling) is refused here, with the
 * offending field, rather than producing wrong numbers later.
 */
import { z } from "zod";

/** The decoder families this engine runs, as named by `config.json`'s `architectures`. */
export const SUPPORTED_ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** Rope frequency scaling of Llama 3 (`rope_type: "llama3"`), which changes every frequency. */
export interface Llama3RopeScaling {
  type: "llama3";
  factor: number;
  lowFrequencyFactor: number;
  highFrequencyFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** Everything the graph, the reference forward and the trainer need to know about a model. */
export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number; // width of the residual stream
  intermediateSize: number; // width of the SwiGLU hidden layer
  numLayers: number;
  numHeads: number; // query heads
  numKvHeads: number; // key/value heads (grouped-query attention when fewer than numHeads)
  headDim: number; // may differ from hiddenSize / numHeads when config.json says so
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: Llama3RopeScaling | null;
  maxPositionEmbeddings: number; // the context limit a prompt plus its completion must fit
  tieWordEmbeddings: boolean; // lm_head reuses embed_tokens (a stored lm_head is ignored)
  qkvBias: boolean; // q/k/v projections carry a bias (Qwen2; Llama and Qwen3 with attention_bias)
  oBias: boolean; // o_proj carries a bias (Llama and Qwen3 with attention_bias)
  qkNorm: boolean; // RMSNorm over head_dim on every query and key head before RoPE (Qwen3)
  attentionWindows: (number | null)[]; // per layer: null attends to every earlier token, w to the last w (0 ≤ i − j < w)
  mlpBias: boolean; // gate/up/down carry a bias (Llama with mlp_bias)
  bosTokenId: number | null;
  eosTokenIds: number[];
}

const positiveInt = z.number().int().positive();
const tokenIds = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]);

const ropeScalingSchema = z
  .object({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    factor: z.number().positive().optional(),
    low_freq_factor: z.number().positive().optional(),
    high_freq_factor: z.number().positive().optional(),
    original_max_position_embeddings: positiveInt.optional(),
    rope_theta: z.number().positive().optional(),
  })
  .passthrough();

const rawConfigSchema = z
  .object({
    architectures: z.array(z.string()).min(1).optional(),
    model_type: z.string().optional(),
    vocab_size: positiveInt,
    hidden_size: positiveInt,
    intermediate_size: positiveInt,
    num_hidden_layers: positiveInt,
    num_attention_heads: positiveInt,
    num_key_value_heads: positiveInt.nullable().optional(),
    head_dim: positiveInt.nullable().optional(),
    rms_norm_eps: z.number().positive().optional(),
    rope_theta: z.number().positive().optional(),
    rope_scaling: ropeScalingSchema.nullable().optional(),
    rope_parameters: ropeScalingSchema.nullable().optional(),
    max_position_embeddings: positiveInt.optional(),
    tie_word_embeddings: z.boolean().optional(),
    attention_bias: z.boolean().optional(),
    mlp_bias: z.boolean().optional(),
    hidden_act: z.string().optional(),
    bos_token_id: z.number().int().nonnegative().nullable().optional(),
    eos_token_id: tokenIds.nullable().optional(),
    use_sliding_window: z.boolean().optional(),
    sliding_window: z.number().int().positive().nullable().optional(),
    max_window_layers: z.number().int().nonnegative().optional(),
    layer_types: z.array(z.string()).optional(),
  })
  .passthrough();

const MODEL_TYPE_TO_ARCHITECTURE: Record<string, Architecture> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
};

const ABSENT_KV_HEADS_DEFAULT: Partial<Record<Architecture, number>> = {
  MistralForCausalLM: 8,
  Qwen2ForCausalLM: 32,
  Qwen3ForCausalLM: 32,
};

// transformers' config class defaults for keys a hand-written config.json may leave out.
const ABSENT_MAX_POSITIONS_DEFAULT: Record<Architecture, number> = {
  LlamaForCausalLM: 2048,
  MistralForCausalLM: 4096 * 32,
  Qwen2ForCausalLM: 32768,
  Qwen3ForCausalLM: 32768,
};
const ABSENT_SLIDING_WINDOW_DEFAULT = 4096; // MistralConfig, Qwen2Config and Qwen3Config
const ABSENT_MAX_WINDOW_LAYERS_DEFAULT = 28; // Qwen2Config and Qwen3Config
const ABSENT_QWEN3_HEAD_DIM = 128; // Qwen3Config's head_dim is its own field, not hidden / heads

/** Raised for a config.json we cannot run exactly; names the field and the value. */
export class ModelConfigError extends Error {
  constructor(message: string) {
    super(`config.json: ${message}`);
    this.name = "ModelConfigError";
  }
}

/** Parses a `config.json` object into a `ModelConfig`, refusing anything we would get wrong. */
export function parseModelConfig(raw: unknown): ModelConfig {
  const parsed = rawConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ModelConfigError(`${issue.path.join(".") || "(root)"}: ${issue.message}`);
  }
  const c = parsed.data;
  const architecture = resolveArchitecture(c.architectures, c.model_type);

  if (c.hidden_act !== undefined && c.hidden_act !== "silu") {
    throw new ModelConfigError(`hidden_act "${c.hidden_act}" is not supported (only "silu")`);
  }
  const numHeads = c.num_attention_heads;
  // transformers' config classes: an absent num_key_value_heads takes the class default
  // (Llama: num_attention_heads, Mistral: 8, Qwen2: 32); an explicit null means multi-head.
  const numKvHeads = c.num_key_value_heads === undefined ? (ABSENT_KV_HEADS_DEFAULT[architecture] ?? numHeads) : (c.num_key_value_heads ?? numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ModelConfigError(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  const headDim = c.head_dim ?? (architecture === "Qwen3ForCausalLM" ? ABSENT_QWEN3_HEAD_DIM : c.hidden_size / numHeads);
  if (!Number.isInteger(headDim)) {
    throw new ModelConfigError(`hidden_size ${c.hidden_size} is not divisible by num_attention_heads ${numHeads} and head_dim is missing`);
  }
  if (headDim % 2 !== 0) throw new ModelConfigError(`head_dim ${headDim} must be even for rotary embeddings`);

  // transformers 5 writes `rope_parameters` (with rope_theta inside); 4 wrote rope_theta/rope_scaling.
  const ropeBlock = c.rope_parameters ?? c.rope_scaling ?? null;
  const ropeTheta = c.rope_parameters?.rope_theta ?? c.rope_theta ?? 10000;
  const ropeScaling = parseRopeScaling(ropeBlock);

  const eos = c.eos_token_id;
  return {
    architecture,
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: c.max_position_embeddings ?? ABSENT_MAX_POSITIONS_DEFAULT[architecture],
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    qkvBias:
      architecture === "Qwen2ForCausalLM" ? true : c.attention_bias === true && (architecture === "LlamaForCausalLM" || architecture === "Qwen3ForCausalLM"),
    oBias: (architecture === "LlamaForCausalLM" || architecture === "Qwen3ForCausalLM") && c.attention_bias === true,
    qkNorm: architecture === "Qwen3ForCausalLM",
    attentionWindows: attentionWindows(architecture, c),
    mlpBias: architecture === "LlamaForCausalLM" && c.mlp_bias === true,
    bosTokenId: c.bos_token_id ?? null,
    eosTokenIds: eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos],
  };
}

/**
 * Each layer's attention window, as transformers decides it: Mistral slides every layer when
 * `sliding_window` is set (an absent key is the class default 4096, an explicit null none);
 * Qwen2/Qwen3 only with `use_sliding_window`, and then only the layers that `layer_types` marks
 * "sliding_attention" (by default those at or above `max_window_layers`); Llama never.
 */
function attentionWindows(architecture: Architecture, c: z.infer<typeof rawConfigSchema>): (number | null)[] {
  const layers = c.num_hidden_layers;
  const none = new Array<number | null>(layers).fill(null);
  if (architecture === "LlamaForCausalLM") return none;
  const window = c.sliding_window === undefined ? ABSENT_SLIDING_WINDOW_DEFAULT : c.sliding_window;
  if (architecture === "MistralForCausalLM") return new Array<number | null>(layers).fill(window);
  if (c.use_sliding_window !== true || window === null) return none;
  let types = c.layer_types;
  if (types === undefined) {
    const first = c.max_window_layers ?? ABSENT_MAX_WINDOW_LAYERS_DEFAULT;
    types = Array.from({ length: layers }, (_, i) => (i >= first ? "sliding_attention" : "full_attention"));
  }
  if (types.length !== layers) throw new ModelConfigError(`layer_types has ${types.length} entries for ${layers} layers`);
  return types.map((type, i) => {
    if (type === "full_attention") return null;
    if (type === "sliding_attention") return window;
    throw new ModelConfigError(`layer_types[${i}] "${type}" is not supported (full_attention, sliding_attention)`);
  });
}

/** The sliding window of a model's windowed layers (they all share one size), or null when none slides. */
export function slidingWindow(config: ModelConfig): number | null {
  const windows = new Set(config.attentionWindows.filter((w): w is number => w !== null));
  if (windows.size > 1) throw new Error(`layers slide over different windows (${[...windows].join(", ")}); one size is supported`);
  return windows.size === 0 ? null : [...windows][0];
}

function resolveArchitecture(architectures: string[] | undefined, modelType: string | undefined): Architecture {
  if (architectures !== undefined) {
    const name = architectures[0];
    if ((SUPPORTED_ARCHITECTURES as readonly string[]).includes(name)) return name as Architecture;
    throw new ModelConfigError(`architectures[0] "${name}" is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`);
  }
  if (modelType !== undefined && modelType in MODEL_TYPE_TO_ARCHITECTURE) return MODEL_TYPE_TO_ARCHITECTURE[modelType];
  throw new ModelConfigError(`model_type "${modelType ?? "(missing)"}" is not supported and architectures is missing`);
}

function parseRopeScaling(block: z.infer<typeof ropeScalingSchema> | null): Llama3RopeScaling | null {
  if (block === null) return null;
  const kind = block.rope_type ?? block.type ?? "default";
  if (kind === "default") return null;
  if (kind !== "llama3") {
    throw new ModelConfigError(`rope scaling type "${kind}" is not supported (supported: default, llama3)`);
  }
  const { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } = block;
  if (factor === undefined || low_freq_factor === undefined || high_freq_factor === undefined || original_max_position_embeddings === undefined) {
    throw new ModelConfigError("rope scaling llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings");
  }
  if (high_freq_factor <= low_freq_factor) {
    throw new ModelConfigError(`rope scaling high_freq_factor ${high_freq_factor} must exceed low_freq_factor ${low_freq_factor}`);
  }
  return {
    type: "llama3",
    factor,
    lowFrequencyFactor: low_freq_factor,
    highFrequencyFactor: high_freq_factor,
    originalMaxPositionEmbeddings: original_max_position_embeddings,
  };
}
