/**
 * The Llama-family decoder as one ONNX graph, for prefill and decode alike.
 *
 * One session serves every batch size, prompt length and cache length (the dims are symbolic),
 * so the weights live in memory once. Each run takes `tokens` new tokens per row and the rows'
 * cached keys/values from earlier runs (`past` slots, possibly 0), and returns the new tokens'
 * keys/values for the host to append. The past cache is only read, never concatenated, so a
 * decode step does not copy the cache: attention scores against past and new keys are computed
 * separately and joined before the softmax.
 *
 * Linear layers that share an input run as one MatMul on their stacked, transposed weights
 * (q/k/v, gate/up). With PiCa adapters, each group's stack also holds the projections P of its
 * targeted modules, so the shrink x Pᵀ costs no extra pass over x and is computed once for all
 * rows; only the small expand by each row's own M differs per row (see adapter-layout.ts).
 */
import { GraphBuilder, type DataType, type Value } from "../graph/builder.ts";
import {
  binary,
  concat,
  gather,
  gemmTransB,
  matMul,
  reduceMean,
  reshape,
  shapeOf,
  slice,
  softmax,
  split,
  splitHalves,
  sum,
  transpose,
  unary,
  unsqueeze,
  cast,
} from "../graph/ops.ts";
import { adapterInputName, groupLayouts, type AdapterGraphSpec, type GroupLayout } from "./adapter-layout.ts";
import type { ModelConfig } from "./config.ts";
import { inverseFrequencies } from "./rope.ts";
import { hasBias, lmHeadName, linearName, linearShape, validateWeights, weight, type LinearGroup, type LinearModule, type WeightMap } from "./weights.ts";

/** Names of the graph's inputs and outputs: the contract with the session wrapper. */
export const LLAMA_IO = {
  inputIds: "input_ids", // int64 [batch, tokens]
  positionIds: "position_ids", // int64 [batch, tokens]
  attentionBias: "attention_bias", // float [batch, tokens, context]: 0 where allowed, MASK_VALUE elsewhere
  logitsRows: "logits_rows", // int64 [rows]: flat indices into batch·tokens whose logits are wanted
  pastKey: (layer: number) => `past.${layer}.key_t`, // float [batch, kv_heads, head_dim, past]
  pastValue: (layer: number) => `past.${layer}.value`, // float [batch, kv_heads, past, head_dim]
  logits: "logits", // float [rows, vocab]
  presentKey: (layer: number) => `present.${layer}.key_t`, // float [batch, kv_heads, head_dim, tokens]
  presentValue: (layer: number) => `present.${layer}.value`, // float [batch, kv_heads, tokens, head_dim]
} as const;

/** Additive bias for a masked attention position: finite, so a fully masked row gives no NaN. */
export const MASK_VALUE = -1e30;

export interface LlamaGraphOptions {
  dtype?: "float32" | "float64";
  adapters?: AdapterGraphSpec; // absent: a base-only graph without adapter inputs
}

interface DecoderContext {
  g: GraphBuilder;
  config: ModelConfig;
  weights: WeightMap;
  dtype: DataType;
  pastLength: Value; // runtime [past]
  adapters: AdapterGraphSpec | null;
  layouts: GroupLayout[];
  cosQ: Value; // [batch, tokens, 1, head_dim], pre-multiplied by head_dim^-0.5
  sinQ: Value; // same, with the rotate_half sign folded in
  cosK: Value;
  sinK: Value;
  bias: Value; // [batch, 1, 1, tokens, context]
}

/** Builds the whole decoder graph from a config and validated weights. */
export function buildLlamaGraph(config: ModelConfig, weights: WeightMap, options: LlamaGraphOptions = {}): GraphBuilder {
  validateWeights(config, weights);
  const dtype: DataType = options.dtype ?? "float32";
  const g = new GraphBuilder(`llama-${config.numLayers}x${config.hiddenSize}`);
  const { numKvHeads, headDim } = config;

  const inputIds = g.input(LLAMA_IO.inputIds, "int64", ["batch", "tokens"]);
  const positionIds = g.input(LLAMA_IO.positionIds, "int64", ["batch", "tokens"]);
  const attentionBias = g.input(LLAMA_IO.attentionBias, dtype, ["batch", "tokens", "context"]);
  const logitsRows = g.input(LLAMA_IO.logitsRows, "int64", ["rows"]);
  const pastKeys: Value[] = [];
  const pastValues: Value[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    pastKeys.push(g.input(LLAMA_IO.pastKey(layer), dtype, ["batch", numKvHeads, headDim, "past"]));
    pastValues.push(g.input(LLAMA_IO.pastValue(layer), dtype, ["batch", numKvHeads, "past", headDim]));
  }

  const ctx = buildContext(g, config, weights, dtype, positionIds, attentionBias, pastValues[0], options.adapters ?? null);
  const adapterInputs = declareAdapterInputs(ctx);

  let hidden = gather(g, "/model/embed_tokens/Gather", initializer(ctx, "model.embed_tokens.weight"), inputIds); // [batch, tokens, hidden]

  for (let layer = 0; layer < config.numLayers; layer++) {
    const prefix = `/model/layers.${layer}`;
    const normed = rmsNorm(ctx, `${prefix}/input_layernorm`, hidden, `model.layers.${layer}.input_layernorm.weight`);
    const attention = buildAttention(ctx, layer, normed, pastKeys[layer], pastValues[layer], adapterInputs[layer]);
    hidden = residual(g, `${prefix}/attn/residual`, hidden, attention);
    const normed2 = rmsNorm(ctx, `${prefix}/post_attention_layernorm`, hidden, `model.layers.${layer}.post_attention_layernorm.weight`);
    hidden = residual(g, `${prefix}/mlp/residual`, hidden, buildMlp(ctx, layer, normed2, adapterInputs[layer]));
  }

  const finalNorm = rmsNorm(ctx, "/model/norm", hidden, "model.norm.weight");
  const flat = reshape(g, "/model/norm/Reshape", finalNorm, [-1, config.hiddenSize], { outShape: ["batch_tokens", config.hiddenSize] });
  // Only the requested rows reach the vocabulary projection: [rows, hidden] → [rows, vocab]
  const selected = gather(g, "/model/logits_rows/Gather", flat, logitsRows);
  const logits = gemmTransB(g, "/lm_head/Gemm", selected, initializer(ctx, lmHeadName(config)));
  g.output(logits, LLAMA_IO.logits);
  return g;
}

/**
 * Shapes, rotary tables and the attention bias, computed once and shared by every layer.
 *
 *   position_ids ─Cast─Unsqueeze─Mul(inv_freq)─┬─Cos─Concat(c, c)──────────── cos [b, t, 1, d]
 *                                              └─Sin─Concat(−s, s)─────────── sin [b, t, 1, d]
 */
function buildContext(
  g: GraphBuilder,
  config: ModelConfig,
  weights: WeightMap,
  dtype: DataType,
  positionIds: Value,
  attentionBias: Value,
  firstPastValue: Value,
  adapters: AdapterGraphSpec | null,
): DecoderContext {
  const { headDim } = config;
  const pastShape = shapeOf(g, "/model/shapes/past/Shape", firstPastValue);
  const pastLength = slice(g, "/model/shapes/past/Slice", pastShape, 0, 2, 3);

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
  const scale = g.constFloat(1 / Math.sqrt(headDim), dtype as "float32" | "float64");
  const cosQ = binary(g, "Mul", "/model/rotary/cos_q/Mul", cos, scale);
  const sinQ = binary(g, "Mul", "/model/rotary/sin_q/Mul", sin, scale);

  const bias = unsqueeze(g, "/model/attention_bias/Unsqueeze", attentionBias, [1, 2]); // [batch, 1, 1, tokens, context]
  const layouts = groupLayouts(config, adapters?.targetModules ?? []);
  return { g, config, weights, dtype, pastLength, adapters, layouts, cosQ, sinQ, cosK: cos, sinK: sin, bias };
}

/**
 * Grouped-query attention for one layer, against the cached past and the new tokens.
 *
 *   x ─qkv_proj─Split─┬─Reshape─rope─Transpose─Reshape ───── q [b, kv, g, t, d]
 *                     ├─Reshape─rope─Transpose(0,2,3,1) ──── kᵀ [b, kv, d, t] ──▶ present key
 *                     └─Reshape─Transpose ────────────────── v [b, kv, t, d]  ──▶ present value
 *   scores = Concat(q·pastKᵀ, q·kᵀ) + bias ─Softmax─┬─Slice[:past]─MatMul(pastV)─┐
 *                                                   └─Slice[past:]─MatMul(v)─────Add─Reshape─Transpose─o_proj
 *
 * Keys and values get a group axis of size 1 (Unsqueeze, no copy) that broadcasts over the
 * query heads sharing them, so each product is a matrix-vector run per query head in decode.
 */
function buildAttention(ctx: DecoderContext, layer: number, x: Value, pastKey: Value, pastValue: Value, adapterInputs: AdapterInputs): Value[] {
  const { g, config } = ctx;
  const { numHeads, numKvHeads, headDim } = config;
  const p = `/model/layers.${layer}/attn`;
  const groups = numHeads / numKvHeads;

  const [q3, k3, v3] = linearGroup(ctx, layer, "qkv_proj", x, `${p}/qkv_proj`, adapterInputs); // [batch, tokens, ·]
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
  g.output(keyT, LLAMA_IO.presentKey(layer));
  g.output(value, LLAMA_IO.presentValue(layer));

  // A group axis of 1 on keys and values broadcasts each KV head over its query heads unread twice.
  const pastKey5 = unsqueeze(g, `${p}/past_key/Unsqueeze`, pastKey, [2]); // [batch, kv, 1, head_dim, past]
  const pastValue5 = unsqueeze(g, `${p}/past_value/Unsqueeze`, pastValue, [2]); // [batch, kv, 1, past, head_dim]
  const pastScores = matMul(g, `${p}/scores_past/MatMul`, q, pastKey5); // [batch, kv, groups, tokens, past]
  const newScores = matMul(g, `${p}/scores_new/MatMul`, q, unsqueeze(g, `${p}/key/Unsqueeze`, keyT, [2])); // [.., tokens, tokens]
  const scores = concat(g, `${p}/scores/Concat`, [pastScores, newScores], -1, "context");
  const probs = softmax(g, `${p}/Softmax`, binary(g, "Add", `${p}/bias/Add`, scores, ctx.bias), -1);
  const pastProbs = slice(g, `${p}/probs_past/Slice`, probs, 4, 0, ctx.pastLength, "past");
  const newProbs = slice(g, `${p}/probs_new/Slice`, probs, 4, ctx.pastLength, Number.MAX_SAFE_INTEGER, "tokens");
  const mixed = binary(
    g,
    "Add",
    `${p}/context/Add`,
    matMul(g, `${p}/context_past/MatMul`, pastProbs, pastValue5),
    matMul(g, `${p}/context_new/MatMul`, newProbs, unsqueeze(g, `${p}/value/Unsqueeze`, value, [2])),
  ); // [batch, kv_heads, groups, tokens, head_dim]
  const heads = reshape(g, `${p}/context/Reshape`, mixed, [0, numHeads, -1, headDim], {
    outShape: ["batch", numHeads, "tokens", headDim],
  });
  const tokensFirst = transpose(g, `${p}/context/Transpose`, heads, [0, 2, 1, 3]); // [batch, tokens, heads, head_dim]
  const merged = reshape(g, `${p}/context/merge/Reshape`, tokensFirst, [0, 0, numHeads * headDim]); // [batch, tokens, heads·head_dim]
  return linearGroup(ctx, layer, "o_proj", merged, `${p}/o_proj`, adapterInputs, true);
}

/** SwiGLU: down(silu(gate(x)) · up(x)). */
function buildMlp(ctx: DecoderContext, layer: number, x: Value, adapterInputs: AdapterInputs): Value[] {
  const { g } = ctx;
  const p = `/model/layers.${layer}/mlp`;
  const [gate, up] = linearGroup(ctx, layer, "gate_up_proj", x, `${p}/gate_up_proj`, adapterInputs);
  const silu = binary(g, "Mul", `${p}/act_fn/Mul`, gate, unary(g, "Sigmoid", `${p}/act_fn/Sigmoid`, gate));
  const product = binary(g, "Mul", `${p}/Mul`, silu, up);
  return linearGroup(ctx, layer, "down_proj", product, `${p}/down_proj`, adapterInputs, true);
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
  return binary(g, "Mul", `${name}/weight/Mul`, initializer(ctx, weightName), normalised);
}

type AdapterInputs = Map<LinearModule, Value>;

/** Declares each layer's adapter inputs ([batch, rank, out] per adapted module). */
function declareAdapterInputs(ctx: DecoderContext): AdapterInputs[] {
  const rank = ctx.adapters?.rank ?? 0;
  return Array.from({ length: ctx.config.numLayers }, (_, layer) => {
    const inputs: AdapterInputs = new Map();
    for (const layout of ctx.layouts) {
      for (const module of layout.adapted) {
        inputs.set(module, ctx.g.input(adapterInputName(layer, module), ctx.dtype, ["batch", rank, linearShape(ctx.config, module)[0]]));
      }
    }
    return inputs;
  });
}

/**
 * The linear layers of one group as a single product on their stacked, transposed weights
 * (nn.Linear's y = x Wᵀ + b), with the PiCa projections of the adapted modules stacked too:
 *
 *   x [b, t, in] ─MatMul([W₁ ⊕ W₂ ⊕ … ⊕ P₁ ⊕ P₂ …]ᵀ)─(+bias)─Split─┬─ y₁ ───────────────────────────Add─▶ y₁
 *                                                                 ├─ …                              │
 *                                                                 └─ x Pᵀ ─Split─ x P₁ᵀ ─MatMul(M₁ᵀ [b, r, out₁])
 */
function linearGroup(
  ctx: DecoderContext,
  layer: number,
  groupName: LinearGroup["name"],
  x: Value,
  name: string,
  adapterInputs: AdapterInputs,
  deferAdd = false, // single-module groups: return [base, delta] for the caller's Sum
): Value[] {
  const { g, config } = ctx;
  const layout = ctx.layouts.find((l) => l.group.name === groupName)!;
  const { group, outputs, width, adapted } = layout;
  const rank = ctx.adapters?.rank ?? 0;
  const shrunkWidth = rank * adapted.length;
  const inputs = linearShape(config, group.modules[0])[1];
  const rows: Float32Array[] = group.modules.map((m) => weight(ctx.weights, linearName(layer, m)).data);
  for (const m of adapted) rows.push(ctx.adapters!.projection(layer, m));
  const stacked = width + shrunkWidth;
  const w = g.initializer(`${name}/weight_t`, ctx.dtype, [inputs, stacked], toDtype(transposeRows(rows, stacked, inputs), ctx.dtype));
  let y = matMul(g, `${name}/MatMul`, x, w); // [batch, tokens, N (+ R)]
  if (group.modules.some((m) => hasBias(config, m))) {
    const bias = new Float32Array(stacked);
    for (const m of group.modules) {
      if (hasBias(config, m)) bias.set(weight(ctx.weights, linearName(layer, m, "bias")).data, layout.columnOffset.get(m)!);
    }
    y = binary(g, "Add", `${name}/bias/Add`, y, g.initializer(`${name}/bias`, ctx.dtype, [stacked], toDtype(bias, ctx.dtype)));
  }
  if (shrunkWidth === 0) return outputs.length === 1 ? [y] : split(g, `${name}/Split`, y, outputs, -1);

  const parts = split(g, `${name}/Split`, y, [...outputs, shrunkWidth], -1);
  const shrunk = parts.pop()!; // [batch, tokens, rank · adapted]
  const perModule = adapted.length === 1 ? [shrunk] : split(g, `${name}/adapter/Split`, shrunk, adapted.map(() => rank), -1);
  const deltas = adapted.map((module, i) => matMul(g, `${name}/adapter/${module}/MatMul`, perModule[i], adapterInputs.get(module)!)); // [batch, tokens, out]
  if (deferAdd && outputs.length === 1) return [parts[0], deltas[0]];
  adapted.forEach((module, i) => {
    const at = group.modules.indexOf(module);
    parts[at] = binary(g, "Add", `${name}/adapter/${module}/Add`, parts[at], deltas[i]);
  });
  return parts;
}

/** Stacks row-major [rowsᵢ, cols] blocks and transposes the result to [cols, totalRows]. */
function transposeRows(blocks: Float32Array[], totalRows: number, cols: number): Float32Array {
  const out = new Float32Array(cols * totalRows);
  let row = 0;
  for (const block of blocks) {
    const count = block.length / cols;
    for (let r = 0; r < count; r++, row++) {
      const offset = r * cols;
      for (let c = 0; c < cols; c++) out[c * totalRows + row] = block[offset + c];
    }
  }
  return out;
}

/** A checkpoint tensor as an initializer of the graph (once, under its Hugging Face name). */
function initializer(ctx: DecoderContext, name: string): Value {
  const existing = ctx.g.values.get(name);
  if (existing !== undefined) return existing;
  const tensor = weight(ctx.weights, name);
  return ctx.g.initializer(name, ctx.dtype, tensor.shape, toDtype(tensor.data, ctx.dtype));
}

function toDtype(data: Float32Array, dtype: DataType): Float32Array | Float64Array {
  return dtype === "float64" ? Float64Array.from(data) : data;
}
