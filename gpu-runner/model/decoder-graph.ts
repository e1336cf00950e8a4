/**
 * The body of the Llama-family decoder, shared by the inference graph (with a KV cache) and the
 * training graphs (without): embeddings, rotary tables, decoder layers and the final norm. It
 * reads like the maths; where weights and adapters come from is the linear context's business.
 */
import type { GraphBuilder, Value } from "../graph/builder.ts";
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
import { linearGroup, toDtype, type LinearContext } from "./linear-graph.ts";
import { inverseFrequencies } from "./rope.ts";
import { weight } from "./weights.ts";

/** A layer's cached keys and values (inference), or null when attending only to the new tokens. */
export interface LayerCache {
  pastKey: Value; // [batch, kv_heads, head_dim, past]
  pastValue: Value; // [batch, kv_heads, past, head_dim]
  onPresent(keyT: Value, value: Value): void; // receives the new tokens' keys and values
}

interface DecoderContext extends LinearContext {
  pastLength: Value | null; // runtime [past] when there is a cache
  cosQ: Value; // [batch, tokens, 1, head_dim], pre-multiplied by head_dim^-0.5
  sinQ: Value; // same, with the rotate_half sign folded in
  cosK: Value;
  sinK: Value;
  bias: Value; // [batch, 1, 1, tokens, context]
}

/**
 * Embeds `inputIds`, runs every decoder layer and the final norm: [batch, tokens, hidden].
 * `attentionBias` is [batch, tokens, context] (context = past + tokens with a cache).
 */
export function buildDecoder(
  linear: LinearContext,
  inputIds: Value,
  positionIds: Value,
  attentionBias: Value,
  caches: LayerCache[] | null,
): Value {
  const { g, config } = linear;
  const ctx = buildContext(linear, positionIds, attentionBias, caches?.[0]?.pastValue ?? null);
  const embedding = weightTensor(ctx, "model.embed_tokens.weight");
  let hidden = gather(g, "/model/embed_tokens/Gather", embedding, inputIds); // [batch, tokens, hidden]
  for (let layer = 0; layer < config.numLayers; layer++) {
    const prefix = `/model/layers.${layer}`;
    const normed = rmsNorm(ctx, `${prefix}/input_layernorm`, hidden, `model.layers.${layer}.input_layernorm.weight`);
    const attention = buildAttention(ctx, layer, normed, caches?.[layer] ?? null);
    hidden = residual(g, `${prefix}/attn/residual`, hidden, attention);
    const normed2 = rmsNorm(ctx, `${prefix}/post_attention_layernorm`, hidden, `model.layers.${layer}.post_attention_layernorm.weight`);
    hidden = residual(g, `${prefix}/mlp/residual`, hidden, buildMlp(ctx, layer, normed2));
  }
  return rmsNorm(ctx, "/model/norm", hidden, "model.norm.weight");
}

/** A checkpoint tensor (embedding, norm, lm_head) under its Hugging Face name, from the weight source. */
export function weightTensor(linear: LinearContext, name: string): Value {
  const tensor = weight(linear.weights, name);
  return linear.source.tensor(linear.g, name, tensor.shape, () => tensor.data);
}

/**
 * Rotary tables and the attention bias, computed once and shared by every layer.
 *
 *   position_ids ─Cast─Unsqueeze─Mul(inv_freq)─┬─Cos─Concat(c, c)──────────── cos [b, t, 1, d]
 *                                              └─Sin─Concat(−s, s)─────────── sin [b, t, 1, d]
 */
function buildContext(linear: LinearContext, positionIds: Value, attentionBias: Value, firstPastValue: Value | null): DecoderContext {
  const { g, config, dtype } = linear;
  const { headDim } = config;
  let pastLength: Value | null = null;
  if (firstPastValue !== null) {
    const pastShape = shapeOf(g, "/model/shapes/past/Shape", firstPastValue);
    pastLength = slice(g, "/model/shapes/past/Slice", pastShape, 0, 2, 3);
  }
  const float = dtype as "float32" | "float64";
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
  const bias = unsqueeze(g, "/model/attention_bias/Unsqueeze", attentionBias, [1, 2]); // [batch, 1, 1, tokens, context]
  return { ...linear, pastLength, cosQ, sinQ, cosK: cos, sinK: sin, bias };
}

/**
 * Grouped-query attention for one layer, against the cached past (if any) and the new tokens.
 *
 *   x ─qkv_proj─Split─┬─Reshape─rope─Transpose─Reshape ───── q [b, kv, g, t, d]
 *                     ├─Reshape─rope─Transpose(0,2,3,1) ──── kᵀ [b, kv, d, t] ──▶ present key
 *                     └─Reshape─Transpose ────────────────── v [b, kv, t, d]  ──▶ present value
 *   scores = Concat(q·pastKᵀ, q·kᵀ) + bias ─Softmax─┬─Slice[:past]─MatMul(pastV)─┐
 *                                                   └─Slice[past:]─MatMul(v)─────Add─Reshape─Transpose─o_proj
 *
 * Keys and values get a group axis of size 1 (Unsqueeze, no copy) that broadcasts over the
 * query heads sharing them, so each product is a matrix-vector run per query head in decode.
 * Without a cache, scores are q·kᵀ alone.
 */
function buildAttention(ctx: DecoderContext, layer: number, x: Value, cache: LayerCache | null): Value[] {
  const { g, config } = ctx;
  const { numHeads, numKvHeads, headDim } = config;
  const p = `/model/layers.${layer}/attn`;
  const groups = numHeads / numKvHeads;

  const [q3, k3, v3] = linearGroup(ctx, layer, "qkv_proj", x, `${p}/qkv_proj`); // [batch, tokens, ·]
  const q4 = reshape(g, `${p}/q/Reshape`, q3, [0, 0, numHeads, headDim]); // [batch, tokens, heads, head_dim]
  const k4 = reshape(g, `${p}/k/Reshape`, k3, [0, 0, numKvHeads, headDim]);
  const v4 = reshape(g, `${p}/v/Reshape`, v3, [0, 0, numKvHeads, headDim]);

  const qRot = rotate(ctx, `${p}/q_rotary`, q4, ctx.cosQ, ctx.sinQ); // [batch, tokens, heads, head_dim]
  const kRot = rotate(ctx, `${p}/k_rotary`, k4, ctx.cosK, ctx.sinK);
  const qHeads = transpose(g, `${p}/q/Transpose`, qRot, [0, 2, 1, 3]); // [batch, heads, tokens, head_dim]
  const q = reshape(g, `${p}/q/group/Reshape`, qHeads, [0, numKvHeads, groups, -1, headDim], {
    outShape: ["batch", numKvHeads, groups, "tokens", headDim],
  }); // [batch, kv_heads, groups, tokens, head_dim]
  const keyT = transpose(g, `${p}/k/Transpose`, kRot, [0, 2, 3, 1]); // [batch, kv_heads, head_dim, tokens]
  const value = transpose(g, `${p}/v/Transpose`, v4, [0, 2, 1, 3]); // [batch, kv_heads, tokens, head_dim]
  cache?.onPresent(keyT, value);

  // A group axis of 1 on keys and values broadcasts each KV head over its query heads unread twice.
  const newScores = matMul(g, `${p}/scores_new/MatMul`, q, unsqueeze(g, `${p}/key/Unsqueeze`, keyT, [2])); // [.., tokens, tokens]
  const value5 = unsqueeze(g, `${p}/value/Unsqueeze`, value, [2]); // [batch, kv, 1, tokens, head_dim]
  let mixed: Value; // [batch, kv_heads, groups, tokens, head_dim]
  if (cache === null) {
    const probs = softmax(g, `${p}/Softmax`, binary(g, "Add", `${p}/bias/Add`, newScores, ctx.bias), -1);
    mixed = matMul(g, `${p}/context/MatMul`, probs, value5);
  } else {
    const pastKey5 = unsqueeze(g, `${p}/past_key/Unsqueeze`, cache.pastKey, [2]); // [batch, kv, 1, head_dim, past]
    const pastValue5 = unsqueeze(g, `${p}/past_value/Unsqueeze`, cache.pastValue, [2]); // [batch, kv, 1, past, head_dim]
    const pastScores = matMul(g, `${p}/scores_past/MatMul`, q, pastKey5); // [batch, kv, groups, tokens, past]
    const scores = concat(g, `${p}/scores/Concat`, [pastScores, newScores], -1, "context");
    const probs = softmax(g, `${p}/Softmax`, binary(g, "Add", `${p}/bias/Add`, scores, ctx.bias), -1);
    const pastProbs = slice(g, `${p}/probs_past/Slice`, probs, 4, 0, ctx.pastLength!, "past");
    const newProbs = slice(g, `${p}/probs_new/Slice`, probs, 4, ctx.pastLength!, Number.MAX_SAFE_INTEGER, "tokens");
    mixed = binary(
      g,
      "Add",
      `${p}/context/Add`,
      matMul(g, `${p}/context_past/MatMul`, pastProbs, pastValue5),
      matMul(g, `${p}/context_new/MatMul`, newProbs, value5),
    );
  }
  const heads = reshape(g, `${p}/context/Reshape`, mixed, [0, numHeads, -1, headDim], {
    outShape: ["batch", numHeads, "tokens", headDim],
  });
  const tokensFirst = transpose(g, `${p}/context/Transpose`, heads, [0, 2, 1, 3]); // [batch, tokens, heads, head_dim]
  const merged = reshape(g, `${p}/context/merge/Reshape`, tokensFirst, [0, 0, numHeads * headDim]); // [batch, tokens, heads·head_dim]
  return linearGroup(ctx, layer, "o_proj", merged, `${p}/o_proj`, true);
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
function residual(g: GraphBuilder, name: string, hidden: Value, terms: Value[]): Value {
  return terms.length === 1 ? binary(g, "Add", `${name}/Add`, hidden, terms[0]) : sum(g, `${name}/Sum`, [hidden, ...terms]);
}

/** x·(cos) + swap_halves(x)·(sin), the rotate_half form of RoPE. */
function rotate(ctx: DecoderContext, name: string, x: Value, cos: Value, sin: Value): Value {
  const { g } = ctx;
  const [first, second] = splitHalves(g, `${name}/Split`, x, -1);
  const swapped = concat(g, `${name}/Concat`, [second, first], -1);
  return binary(g, "Add", `${name}/Add`, binary(g, "Mul", `${name}/cos/Mul`, x, cos), binary(g, "Mul", `${name}/sin/Mul`, swapped, sin));
}

/**
 * RMSNorm: x / sqrt(mean(x²) + eps) · weight, spelled exactly as onnxruntime's
 * SimplifiedLayerNormalization fusion expects (Pow → ReduceMean → Add → Sqrt → Div → Mul), so an
 * optimised session runs one fused kernel while the graph itself stays primitive ops.
 */
function rmsNorm(ctx: DecoderContext, name: string, x: Value, weightName: string): Value {
  const { g, config } = ctx;
  const float = ctx.dtype as "float32" | "float64";
  const squared = binary(g, "Pow", `${name}/Pow`, x, g.constFloat(2, float));
  const mean = reduceMean(g, `${name}/ReduceMean`, squared, [-1]);
  const rms = unary(g, "Sqrt", `${name}/Sqrt`, binary(g, "Add", `${name}/Add`, mean, g.constFloat(config.rmsNormEps, float)));
  const normalised = binary(g, "Div", `${name}/Div`, x, rms);
  return binary(g, "Mul", `${name}/weight/Mul`, weightTensor(ctx, weightName), normalised);
}
