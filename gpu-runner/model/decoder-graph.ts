/**
 * The body of the Llama-family decoder, shared by the inference graph (with a KV cache) and the
 * training graphs (without): embeddings, rotary tables, decoder layers and the final norm. It
 * reads like the maths; where weights and adapters come from is the linear context's business.
 */
import { MICROSOFT_DOMAIN, type GraphBuilder, type Value } from "../graph/builder.ts";
import {
  binary,
  cast,
  concat,
  gather,
  matMul,
  reduceMean,
  reshape,
  shapeOf,
  slice,
  softmax,
  splitHalves,
  sum,
  transpose,
  unary,
  unsqueeze,
} from "../graph/ops.ts";
import { gatherQuantizedRows, quantizedMatMul, type QuantizedValue } from "../quantize/quantized-graph.ts";
import { linearGroup, quantizedWeight, toDtype, type LinearContext } from "./linear-graph.ts";
import { inverseFrequencies } from "./rope.ts";
import { headNormName, lmHeadName, weight } from "./weights.ts";

/**
 * How a layer's queries meet keys and values. Every kind takes q [batch, tokens, heads, head_dim]
 * (normed, rotated and already scaled by head_dim^-0.5), k [batch, tokens, kv_heads, head_dim]
 * (normed and rotated) and v [batch, tokens, kv_heads·head_dim], and returns the mixed values
 * [batch, tokens, heads·head_dim]:
 *   - "sequence": the whole sequence at once from primitive ops, with additive masks
 *     [batch, tokens, tokens] (the training graphs; the autodiff differentiates it);
 *   - "hostCache": primitive ops against a KV cache the host owns and feeds as it lies (a CPU
 *     provider reads the host's buffers without copying them), with masks [batch, tokens,
 *     capacity + tokens]; only the new tokens' keys and values come back, for the host to
 *     write into its cache;
 *   - "deviceCache": onnxruntime's GroupQueryAttention over a cache that stays on the device
 *     (WebGPU): the present outputs are the whole updated cache, kept on the device and fed
 *     back as the next step's past, so nothing crosses to the host.
 */
export type AttentionInputs =
  | { kind: "sequence"; bias: Value; windowBias: Value | null } // windowBias: the mask of sliding-window layers
  | {
      kind: "hostCache";
      bias: Value; // [batch, tokens, capacity + tokens]: 0 where allowed, MASK_VALUE elsewhere
      windowBias: Value | null; // the same within each sliding window
      past(layer: number): { keyT: Value; valueT: Value }; // both [batch, kv_heads, head_dim, capacity]
      onNew(layer: number, keyT: Value, valueT: Value): void; // the new tokens': both [batch, kv_heads, head_dim, tokens]
    }
  | {
      kind: "deviceCache";
      seqlensK: Value; // int32 [batch]: each row's cached plus new tokens, minus one
      totalSequenceLength: Value; // int32 []: the longest row's cached plus new tokens
      past(layer: number): { key: Value; value: Value }; // [batch, kv_heads, capacity, head_dim]
      onPresent(layer: number, key: Value, value: Value): void; // the updated cache, same shape
    };

interface DecoderContext extends LinearContext {
  attention: AttentionInputs;
  fused: { cosCache: Value; sinCache: Value; positionIds: Value } | null; // device graphs: onnxruntime's fused RMSNorm and rotary kernels
  cacheCapacity: Value | null; // int64 [1]: the host cache's slots per row, when there is one
  cosQ: Value; // [batch, tokens, 1, head_dim], pre-multiplied by head_dim^-0.5
  sinQ: Value; // same, with the rotate_half sign folded in
  cosK: Value;
  sinK: Value;
}

/** Embeds `inputIds`, runs every decoder layer and the final norm: [batch, tokens, hidden]. */
export function buildDecoder(linear: LinearContext, inputIds: Value, positionIds: Value, attention: AttentionInputs): Value {
  const { g, config } = linear;
  const ctx = buildContext(linear, positionIds, attention);
  let hidden =
    linear.quantization === null
      ? gather(g, "/model/embed_tokens/Gather", weightTensor(ctx, "model.embed_tokens.weight"), inputIds)
      : gatherQuantizedRows(g, "/model/embed_tokens", quantizedCheckpointWeight(linear, "model.embed_tokens.weight"), inputIds, linear.dtype); // [batch, tokens, hidden]
  for (let layer = 0; layer < config.numLayers; layer++) {
    const prefix = `/model/layers.${layer}`;
    const normed = rmsNorm(ctx, `${prefix}/input_layernorm`, hidden, `model.layers.${layer}.input_layernorm.weight`);
    const attention = buildAttention(ctx, layer, normed);
    hidden = residual(ctx, `${prefix}/attn/residual`, hidden, attention);
    const normed2 = rmsNorm(ctx, `${prefix}/post_attention_layernorm`, hidden, `model.layers.${layer}.post_attention_layernorm.weight`);
    hidden = residual(ctx, `${prefix}/mlp/residual`, hidden, buildMlp(ctx, layer, normed2));
  }
  return rmsNorm(ctx, "/model/norm", hidden, "model.norm.weight");
}

/** A checkpoint tensor (embedding, norm, lm_head) under its Hugging Face name, from the weight source. */
export function weightTensor(linear: LinearContext, name: string): Value {
  const tensor = weight(linear.weights, name);
  return linear.source.tensor(linear.g, name, tensor.shape, () => tensor.data);
}

/**
 * A [rows, cols] checkpoint tensor (the embedding, lm_head) held quantized at the embedding's bits:
 * its rows are gathered for the token embedding, and it is the LM head's MatMulNBits weight.
 */
export function quantizedCheckpointWeight(linear: LinearContext, name: string): QuantizedValue {
  const tensor = weight(linear.weights, name);
  const [rows, cols] = tensor.shape;
  return quantizedWeight(linear, name, rows, cols, linear.quantization!.embeddingBits, () => [tensor.data]);
}

/** The LM head's logits [rows, vocab] from normed hidden states [rows, hidden] with quantized weights. */
export function quantizedLogits(linear: LinearContext, x: Value): Value {
  return quantizedMatMul(linear.g, "/lm_head/MatMulNBits", x, quantizedCheckpointWeight(linear, lmHeadName(linear.config)), linear.products);
}

/**
 * Rotary tables, computed once and shared by every layer.
 *
 *   position_ids ─Cast─Unsqueeze─Mul(inv_freq)─┬─Cos─Concat(c, c)──────────── cos [b, t, 1, d]
 *                                              └─Sin─Concat(−s, s)─────────── sin [b, t, 1, d]
 */
function buildContext(linear: LinearContext, positionIds: Value, attention: AttentionInputs): DecoderContext {
  const { g, config, dtype } = linear;
  const { headDim } = config;
  const float = dtype as "float32" | "float64";
  if (attention.kind === "deviceCache") {
    // The fused RotaryEmbedding kernel reads position ids and cos/sin caches; no tables per step.
    const none = positionIds;
    return { ...linear, attention, fused: { ...rotaryCaches(g, config), positionIds }, cacheCapacity: null, cosQ: none, sinQ: none, cosK: none, sinK: none };
  }
  const invFreq = g.initializer("/model/rotary/inv_freq", dtype, [headDim / 2], toDtype(Float32Array.from(inverseFrequencies(config)), dtype));
  const positions = unsqueeze(g, "/model/rotary/Unsqueeze", cast(g, "/model/rotary/Cast", positionIds, dtype), [-1]);
  const angles = binary(g, "Mul", "/model/rotary/Mul", positions, invFreq); // [batch, tokens, head_dim/2]
  const cosHalf = unary(g, "Cos", "/model/rotary/Cos", angles);
  const sinHalf = unary(g, "Sin", "/model/rotary/Sin", angles);
  const cos = unsqueeze(g, "/model/rotary/cos/Unsqueeze", concat(g, "/model/rotary/cos/Concat", [cosHalf, cosHalf], -1), [2]);
  const negSin = unary(g, "Neg", "/model/rotary/sin/Neg", sinHalf);
  // rotate_half(x) = concat(−x₂, x₁); we rotate by swapping halves, so the sign moves onto sin.
  const sin = unsqueeze(g, "/model/rotary/sin/Unsqueeze", concat(g, "/model/rotary/sin/Concat", [negSin, sinHalf], -1), [2]);
  // head_dim^-0.5 folded into the query's tables saves a multiply per layer.
  const scale = g.constFloat(1 / Math.sqrt(headDim), float);
  const cosQ = binary(g, "Mul", "/model/rotary/cos_q/Mul", cos, scale);
  const sinQ = binary(g, "Mul", "/model/rotary/sin_q/Mul", sin, scale);
  let cacheCapacity: Value | null = null;
  if (attention.kind === "hostCache") {
    const pastShape = shapeOf(g, "/model/shapes/past/Shape", attention.past(0).keyT);
    cacheCapacity = slice(g, "/model/shapes/past/Slice", pastShape, 0, 3, 4);
  }
  return { ...linear, attention, fused: null, cacheCapacity, cosQ, sinQ, cosK: cos, sinK: sin };
}

/**
 * cos and sin of every position's angles, [max_positions, head_dim/2], as onnxruntime's
 * RotaryEmbedding kernel reads them (computed in float64, from the same frequencies).
 */
function rotaryCaches(g: GraphBuilder, config: DecoderContext["config"]): { cosCache: Value; sinCache: Value } {
  const invFreq = inverseFrequencies(config);
  const half = config.headDim / 2;
  const positions = config.maxPositionEmbeddings;
  const cos = new Float32Array(positions * half);
  const sin = new Float32Array(positions * half);
  for (let p = 0; p < positions; p++) {
    for (let i = 0; i < half; i++) {
      cos[p * half + i] = Math.cos(p * invFreq[i]);
      sin[p * half + i] = Math.sin(p * invFreq[i]);
    }
  }
  return {
    cosCache: g.initializer("/model/rotary/cos_cache", "float32", [positions, half], cos),
    sinCache: g.initializer("/model/rotary/sin_cache", "float32", [positions, half], sin),
  };
}

/**
 * Grouped-query attention for one layer.
 *
 *   x ─qkv_proj─Split─┬─Reshape─(q_norm)─rope ─── q [b, t, heads, d] ──┐
 *                     ├─Reshape─(k_norm)─rope ─── k [b, t, kv, d] ─────┼─ attend ─ [b, t, heads·d] ─ o_proj
 *                     └────────────────────────── v [b, t, kv·d] ──────┘
 */
function buildAttention(ctx: DecoderContext, layer: number, x: Value): Value[] {
  const { g, config } = ctx;
  const { numHeads, numKvHeads, headDim } = config;
  const p = `/model/layers.${layer}/attn`;
  const [q3, k3, v3] = linearGroup(ctx, layer, "qkv_proj", x, `${p}/qkv_proj`); // [batch, tokens, ·]
  if (ctx.attention.kind === "deviceCache") {
    const q = fusedRotary(ctx, `${p}/q`, q3, numHeads, layer, "q_norm");
    const k = fusedRotary(ctx, `${p}/k`, k3, numKvHeads, layer, "k_norm");
    return linearGroup(ctx, layer, "o_proj", attendOnDevice(ctx, ctx.attention, layer, q, k, v3), `${p}/o_proj`, true);
  }
  let q4 = reshape(g, `${p}/q/Reshape`, q3, [0, 0, numHeads, headDim]); // [batch, tokens, heads, head_dim]
  let k4 = reshape(g, `${p}/k/Reshape`, k3, [0, 0, numKvHeads, headDim]);
  if (config.qkNorm) {
    q4 = rmsNorm(ctx, `${p}/q_norm`, q4, headNormName(layer, "q_norm"));
    k4 = rmsNorm(ctx, `${p}/k_norm`, k4, headNormName(layer, "k_norm"));
  }
  const q = rotate(ctx, `${p}/q_rotary`, q4, ctx.cosQ, ctx.sinQ);
  const k = rotate(ctx, `${p}/k_rotary`, k4, ctx.cosK, ctx.sinK);
  const attention = ctx.attention;
  const mixed =
    attention.kind === "hostCache"
      ? attendHostCache(ctx, attention, layer, q, k, v3)
      : attendSequence(ctx, attention as Extract<AttentionInputs, { kind: "sequence" }>, layer, q, k, v3);
  return linearGroup(ctx, layer, "o_proj", mixed, `${p}/o_proj`, true);
}

/**
 * The whole sequence at once from primitive ops (the training graphs; the autodiff differentiates
 * it):
 *
 *   q ─Transpose─Reshape ─ [b, kv, groups, t, d] ─MatMul(kᵀ [b, kv, 1, d, t])─Add(mask)─Softmax─MatMul(v [b, kv, 1, t, d])
 *
 * Keys and values get a group axis of size 1 (Unsqueeze, no copy) that broadcasts over the
 * query heads sharing them.
 */
function attendSequence(ctx: DecoderContext, inputs: Extract<AttentionInputs, { kind: "sequence" }>, layer: number, q: Value, k: Value, v3: Value): Value {
  const { g, config } = ctx;
  const { numHeads, numKvHeads, headDim } = config;
  const p = `/model/layers.${layer}/attn`;
  const groups = numHeads / numKvHeads;
  const qHeads = transpose(g, `${p}/q/Transpose`, q, [0, 2, 1, 3]); // [batch, heads, tokens, head_dim]
  const q5 = reshape(g, `${p}/q/group/Reshape`, qHeads, [0, numKvHeads, groups, -1, headDim], {
    outShape: ["batch", numKvHeads, groups, "tokens", headDim],
  }); // [batch, kv_heads, groups, tokens, head_dim]
  const keyT = transpose(g, `${p}/k/Transpose`, k, [0, 2, 3, 1]); // [batch, kv_heads, head_dim, tokens]
  const v4 = reshape(g, `${p}/v/Reshape`, v3, [0, 0, numKvHeads, headDim]);
  const value = transpose(g, `${p}/v/Transpose`, v4, [0, 2, 1, 3]); // [batch, kv_heads, tokens, head_dim]
  const mask = layerMask(config, layer, inputs.bias, inputs.windowBias);
  const bias5 = unsqueeze(g, `${p}/bias/Unsqueeze`, mask, [1, 2]); // [batch, 1, 1, tokens, tokens]
  const scores = matMul(g, `${p}/scores/MatMul`, q5, unsqueeze(g, `${p}/key/Unsqueeze`, keyT, [2])); // [.., tokens, tokens]
  const probs = softmax(g, `${p}/Softmax`, binary(g, "Add", `${p}/bias/Add`, scores, bias5), -1);
  const mixed = matMul(g, `${p}/context/MatMul`, probs, unsqueeze(g, `${p}/value/Unsqueeze`, value, [2])); // [batch, kv, groups, tokens, head_dim]
  const heads = reshape(g, `${p}/context/Reshape`, mixed, [0, numHeads, -1, headDim], {
    outShape: ["batch", numHeads, "tokens", headDim],
  });
  const tokensFirst = transpose(g, `${p}/context/Transpose`, heads, [0, 2, 1, 3]); // [batch, tokens, heads, head_dim]
  return reshape(g, `${p}/context/merge/Reshape`, tokensFirst, [0, 0, numHeads * headDim]); // [batch, tokens, heads·head_dim]
}

/**
 * Attention over the host's cache and the new tokens. The cache (capacity-long) is read where it
 * lies, never concatenated: keys and values are both stored transposed, [b, kv, d, capacity], so
 * the queries of a KV head's group are the left operand of the scores product (a CPU GEMM packs
 * its right operand per call, which here is a cheap stride, not a copy of the cache), and the
 * values the left, streamed operand of the output product; the softmax runs over the last axis.
 *
 *   q ─Reshape─Transpose─Reshape ─ q [b, kv, groups·t, d]
 *   scores = Concat(q · pastKᵀ [b, kv, d, cap], q · kᵀ) ─Reshape [b, kv, groups, t, ctx] ─Add(mask)─Softmax
 *   outᵀ = pastVᵀ · probsᵀ[:cap] + vᵀ · probsᵀ[cap:] ─ [b, kv, d, groups·t] ─Transpose─Reshape ─ [b, t, heads·d]
 *
 * Only the new tokens' keys and values (kᵀ, vᵀ) leave the graph, for the host to write into its cache.
 */
function attendHostCache(ctx: DecoderContext, inputs: Extract<AttentionInputs, { kind: "hostCache" }>, layer: number, q: Value, k: Value, v3: Value): Value {
  const { g, config } = ctx;
  const { numHeads, numKvHeads, headDim } = config;
  const p = `/model/layers.${layer}/attn`;
  const groups = numHeads / numKvHeads;
  const capacity = ctx.cacheCapacity!;
  // q [batch, tokens, heads, d] with heads = kv·groups → [batch, kv, groups, tokens, d]
  const q5 = transpose(g, `${p}/q/Transpose`, reshape(g, `${p}/q/group/Reshape`, q, [0, 0, numKvHeads, groups, headDim]), [0, 2, 3, 1, 4]);
  const keyT = transpose(g, `${p}/k/Transpose`, k, [0, 2, 3, 1]); // [batch, kv, d, tokens]
  const v4 = reshape(g, `${p}/v/Reshape`, v3, [0, 0, numKvHeads, headDim]);
  const valueT = transpose(g, `${p}/v/Transpose`, v4, [0, 2, 3, 1]); // [batch, kv, d, tokens]
  inputs.onNew(layer, keyT, valueT);
  const past = inputs.past(layer);

  // A group axis of 1 on the keys broadcasts each KV head over its query heads: in decode each
  // product is a matrix-vector run streaming the cache as it lies.
  const pastScores = matMul(g, `${p}/scores_past/MatMul`, q5, unsqueeze(g, `${p}/past_key/Unsqueeze`, past.keyT, [2])); // [batch, kv, groups, tokens, capacity]
  const newScores = matMul(g, `${p}/scores_new/MatMul`, q5, unsqueeze(g, `${p}/key/Unsqueeze`, keyT, [2])); // [batch, kv, groups, tokens, tokens]
  const scores = concat(g, `${p}/scores/Concat`, [pastScores, newScores], -1, "context"); // [batch, kv, groups, tokens, context]
  const mask = unsqueeze(g, `${p}/bias/Unsqueeze`, layerMask(config, layer, inputs.bias, inputs.windowBias), [1, 2]); // [batch, 1, 1, tokens, context]
  const probs = softmax(g, `${p}/Softmax`, binary(g, "Add", `${p}/bias/Add`, scores, mask), -1);
  const probsT = reshape(g, `${p}/probs/Reshape`, transpose(g, `${p}/probs/Transpose`, probs, [0, 1, 4, 2, 3]), [0, 0, 0, -1], {
    outShape: ["batch", numKvHeads, "context", "group_tokens"],
  }); // [batch, kv, context, groups·tokens]
  const pastProbs = slice(g, `${p}/probs_past/Slice`, probsT, 2, 0, capacity, "capacity");
  const newProbs = slice(g, `${p}/probs_new/Slice`, probsT, 2, capacity, Number.MAX_SAFE_INTEGER, "tokens");
  const outT = binary(
    g,
    "Add",
    `${p}/context/Add`,
    matMul(g, `${p}/context_past/MatMul`, past.valueT, pastProbs),
    matMul(g, `${p}/context_new/MatMul`, valueT, newProbs),
  ); // [batch, kv, d, groups·tokens]
  const out5 = reshape(g, `${p}/context/Reshape`, outT, [0, 0, 0, groups, -1], { outShape: ["batch", numKvHeads, headDim, groups, "tokens"] });
  const tokensFirst = transpose(g, `${p}/context/Transpose`, out5, [0, 4, 1, 3, 2]); // [batch, tokens, kv, groups, d]
  return reshape(g, `${p}/context/merge/Reshape`, tokensFirst, [0, 0, numHeads * headDim]); // [batch, tokens, heads·head_dim]
}

/** The mask a layer attends under: the sliding-window one for a windowed layer. */
function layerMask(config: DecoderContext["config"], layer: number, bias: Value, windowBias: Value | null): Value {
  const mask = config.attentionWindows[layer] === null ? bias : windowBias;
  if (mask === null) throw new Error(`layer ${layer} has a sliding window but the graph has no window mask`);
  return mask;
}

/**
 * onnxruntime's GroupQueryAttention against a cache on the device: it reads each row's cached
 * keys and values (its length from `seqlens_k`), attends causally and, for a sliding-window layer,
 * to the last `local_window_size` positions only (0 ≤ i − j < window, as transformers masks), and
 * returns the cache with the new tokens written at each row's position (its own scale,
 * head_dim^-0.5, applies).
 */
function attendOnDevice(ctx: DecoderContext, inputs: Extract<AttentionInputs, { kind: "deviceCache" }>, layer: number, q3: Value, k3: Value, v3: Value): Value {
  const { g, config } = ctx;
  const { numHeads, numKvHeads } = config;
  const p = `/model/layers.${layer}/attn`;
  const past = inputs.past(layer);
  const window = config.attentionWindows[layer];
  const [mixed, presentKey, presentValue] = g.addNode(
    "GroupQueryAttention",
    [q3, k3, v3, past.key, past.value, inputs.seqlensK, inputs.totalSequenceLength],
    [
      { dtype: q3.dtype, shape: q3.shape },
      { dtype: past.key.dtype, shape: past.key.shape },
      { dtype: past.value.dtype, shape: past.value.shape },
    ],
    {
      name: `${p}/GroupQueryAttention`,
      domain: MICROSOFT_DOMAIN,
      attributes: { num_heads: numHeads, kv_num_heads: numKvHeads, local_window_size: window ?? -1 },
    },
  );
  inputs.onPresent(layer, presentKey, presentValue);
  return mixed;
}

/**
 * A device graph's queries or keys [batch, tokens, heads·head_dim], normed per head (Qwen3) and
 * rotated by onnxruntime's fused kernels:
 *
 *   x ─(Reshape─SimplifiedLayerNormalization─Reshape)─RotaryEmbedding(position_ids, cos, sin) ─ [b, t, heads·d]
 */
function fusedRotary(ctx: DecoderContext, name: string, x: Value, heads: number, layer: number, norm: "q_norm" | "k_norm"): Value {
  const { g, config } = ctx;
  let input = x;
  if (config.qkNorm) {
    const perHead = reshape(g, `${name}/Reshape`, x, [0, 0, heads, config.headDim]);
    input = reshape(g, `${name}/merge/Reshape`, rmsNorm(ctx, `${name}_norm`, perHead, headNormName(layer, norm)), [0, 0, heads * config.headDim]);
  }
  const { cosCache, sinCache, positionIds } = ctx.fused!;
  return g.addNode("RotaryEmbedding", [input, positionIds, cosCache, sinCache], [{ dtype: x.dtype, shape: x.shape }], {
    name: `${name}/RotaryEmbedding`,
    domain: MICROSOFT_DOMAIN,
    attributes: { num_heads: heads, interleaved: 0 },
  })[0];
}

/** SwiGLU: down(silu(gate(x)) · up(x)). */
function buildMlp(ctx: DecoderContext, layer: number, x: Value): Value[] {
  const { g } = ctx;
  const p = `/model/layers.${layer}/mlp`;
  const [gate, up] = linearGroup(ctx, layer, "gate_up_proj", x, `${p}/gate_up_proj`);
  const silu = binary(g, "Mul", `${p}/act_fn/Mul`, gate, unary(g, "Sigmoid", `${p}/act_fn/Sigmoid`, gate));
  const product = binary(g, "Mul", `${p}/Mul`, silu, up);
  return linearGroup(ctx, layer, "down_proj", product, `${p}/down_proj`, true);
}

/** The residual stream plus a block's output terms (its base output, and its adapter delta if any). */
function residual(ctx: DecoderContext, name: string, hidden: Value, terms: Value[]): Value {
  const { g } = ctx;
  if (terms.length === 1) return binary(g, "Add", `${name}/Add`, hidden, terms[0]);
  // WebGPU has no Sum kernel: onnxruntime would run it on the CPU, copying the stream both ways.
  if (ctx.fused !== null) return terms.reduce((acc, term, i) => binary(g, "Add", `${name}/Add_${i}`, acc, term), hidden);
  return sum(g, `${name}/Sum`, [hidden, ...terms]);
}

/** x·(cos) + swap_halves(x)·(sin), the rotate_half form of RoPE. */
function rotate(ctx: DecoderContext, name: string, x: Value, cos: Value, sin: Value): Value {
  const { g } = ctx;
  const [first, second] = splitHalves(g, `${name}/Split`, x, -1);
  const swapped = concat(g, `${name}/Concat`, [second, first], -1);
  return binary(g, "Add", `${name}/Add`, binary(g, "Mul", `${name}/cos/Mul`, x, cos), binary(g, "Mul", `${name}/sin/Mul`, swapped, sin));
}

/**
 * RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · weight, spelled exactly as onnxruntime's
 * SimplifiedLayerNormalization fusion expects (Pow → ReduceMean → Add → Sqrt → Div → Mul), so an
 * optimised session runs one fused kernel while the graph itself stays primitive ops.
 */
function rmsNorm(ctx: DecoderContext, name: string, x: Value, weightName: string): Value {
  const { g, config } = ctx;
  if (ctx.fused !== null) {
    // Device graphs name the fused kernel outright: the WebGPU provider does not fuse the pattern itself.
    return g.addNode("SimplifiedLayerNormalization", [x, weightTensor(ctx, weightName)], [{ dtype: x.dtype, shape: x.shape }], {
      name: `${name}/SimplifiedLayerNormalization`,
      attributes: { axis: -1, epsilon: { float: config.rmsNormEps } },
    })[0];
  }
  const float = ctx.dtype as "float32" | "float64";
  const squared = binary(g, "Pow", `${name}/Pow`, x, g.constFloat(2, float));
  const mean = reduceMean(g, `${name}/ReduceMean`, squared, [-1]);
  const rms = unary(g, "Sqrt", `${name}/Sqrt`, binary(g, "Add", `${name}/Add`, mean, g.constFloat(config.rmsNormEps, float)));
  const normalised = binary(g, "Div", `${name}/Div`, x, rms);
  return binary(g, "Mul", `${name}/weight/Mul`, weightTensor(ctx, weightName), normalised);
}
