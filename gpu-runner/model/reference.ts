/**
 * The reference forward pass in plain TypeScript, float64 throughout: slow, obviously correct,
 * and the oracle for every graph test. It follows transformers' modeling code line by line.
 */
import type { ModelConfig } from "./config.ts";
import { inverseFrequencies } from "./rope.ts";
import { hasBias, headNormName, lmHeadName, linearName, validateWeights, weight, type LinearModule, type WeightMap } from "./weights.ts";

/** Logits [tokens, vocab] for one sequence starting at position 0. */
export function referenceForward(config: ModelConfig, weights: WeightMap, tokenIds: number[]): Float64Array[] {
  validateWeights(config, weights);
  const { hiddenSize, numLayers, vocabSize } = config;
  const embed = weight(weights, "model.embed_tokens.weight").data;
  // hidden[t]: [hidden]
  let hidden: Float64Array[] = tokenIds.map((id) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`token id ${id} outside vocabulary of ${vocabSize}`);
    return Float64Array.from(embed.subarray(id * hiddenSize, (id + 1) * hiddenSize));
  });
  for (let layer = 0; layer < numLayers; layer++) {
    const normed = hidden.map((h) => rmsNorm(config, h, weight(weights, `model.layers.${layer}.input_layernorm.weight`).data));
    const attention = attend(config, weights, layer, normed);
    hidden = hidden.map((h, t) => add(h, attention[t]));
    const normed2 = hidden.map((h) => rmsNorm(config, h, weight(weights, `model.layers.${layer}.post_attention_layernorm.weight`).data));
    hidden = hidden.map((h, t) => add(h, mlp(config, weights, layer, normed2[t])));
  }
  const head = weight(weights, lmHeadName(config)).data;
  return hidden.map((h) => matVec(head, rmsNorm(config, h, weight(weights, "model.norm.weight").data), vocabSize, hiddenSize));
}

/** Causal grouped-query attention over the whole sequence, within the layer's window if it has one. */
function attend(config: ModelConfig, weights: WeightMap, layer: number, x: Float64Array[]): Float64Array[] {
  const { numHeads, numKvHeads, headDim } = config;
  const invFreq = inverseFrequencies(config);
  // Qwen3 normalises each head of q and k over head_dim before the rotation.
  const headNorm = (v: Float64Array, heads: number, norm: "q_norm" | "k_norm") =>
    config.qkNorm ? perHeadRmsNorm(config, v, heads, weight(weights, headNormName(layer, norm)).data) : v;
  const q = x.map((h, t) => rope(headNorm(linear(config, weights, layer, "q_proj", h), numHeads, "q_norm"), numHeads, headDim, t, invFreq));
  const k = x.map((h, t) => rope(headNorm(linear(config, weights, layer, "k_proj", h), numKvHeads, "k_norm"), numKvHeads, headDim, t, invFreq));
  const window = config.attentionWindows[layer];
  const v = x.map((h) => linear(config, weights, layer, "v_proj", h));
  const groups = numHeads / numKvHeads;
  const scale = 1 / Math.sqrt(headDim);
  const out = x.map(() => new Float64Array(numHeads * headDim));
  for (let t = 0; t < x.length; t++) {
    for (let head = 0; head < numHeads; head++) {
      const kvHead = Math.floor(head / groups); // query head h reads KV head h // (heads / kv_heads)
      // Keys j with 0 ≤ t − j < window (transformers' sliding-window mask), else every j ≤ t.
      const first = window === null ? 0 : Math.max(0, t - window + 1);
      const scores = new Float64Array(t + 1 - first);
      for (let s = first; s <= t; s++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[t][head * headDim + d] * k[s][kvHead * headDim + d];
        scores[s - first] = dot * scale;
      }
      const probs = softmaxInPlace(scores);
      for (let s = first; s <= t; s++) {
        for (let d = 0; d < headDim; d++) out[t][head * headDim + d] += probs[s - first] * v[s][kvHead * headDim + d];
      }
    }
  }
  return out.map((o) => linear(config, weights, layer, "o_proj", o));
}

function mlp(config: ModelConfig, weights: WeightMap, layer: number, x: Float64Array): Float64Array {
  const gate = linear(config, weights, layer, "gate_proj", x);
  const up = linear(config, weights, layer, "up_proj", x);
  const product = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
  return linear(config, weights, layer, "down_proj", product);
}

/** Rotates each head's vector by position `t`, pairing dimension i with i + head_dim/2. */
function rope(x: Float64Array, heads: number, headDim: number, t: number, invFreq: Float64Array): Float64Array {
  const half = headDim / 2;
  const out = new Float64Array(x.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = t * invFreq[i];
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const a = x[h * headDim + i];
      const b = x[h * headDim + half + i];
      out[h * headDim + i] = a * c - b * s;
      out[h * headDim + half + i] = b * c + a * s;
    }
  }
  return out;
}

/** RMSNorm of each head's slice of x [heads · head_dim] with the shared weight [head_dim]. */
function perHeadRmsNorm(config: ModelConfig, x: Float64Array, heads: number, w: Float32Array): Float64Array {
  const { headDim } = config;
  const out = new Float64Array(x.length);
  for (let h = 0; h < heads; h++) out.set(rmsNorm(config, x.subarray(h * headDim, (h + 1) * headDim), w), h * headDim);
  return out;
}

function rmsNorm(config: ModelConfig, x: Float64Array, w: Float32Array): Float64Array {
  let sum = 0;
  for (const v of x) sum += v * v;
  const inv = 1 / Math.sqrt(sum / x.length + config.rmsNormEps);
  return x.map((v, i) => v * inv * w[i]);
}

function linear(config: ModelConfig, weights: WeightMap, layer: number, module: LinearModule, x: Float64Array): Float64Array {
  const w = weight(weights, linearName(layer, module));
  const [out, inp] = w.shape;
  const y = matVec(w.data, x, out, inp);
  if (hasBias(config, module)) {
    const b = weight(weights, linearName(layer, module, "bias")).data;
    for (let i = 0; i < out; i++) y[i] += b[i];
  }
  return y;
}

/** y = W x for W stored [rows, cols]. */
function matVec(w: Float32Array, x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    const offset = r * cols;
    for (let c = 0; c < cols; c++) sum += w[offset + c] * x[c];
    y[r] = sum;
  }
  return y;
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((v, i) => v + b[i]);
}

function softmaxInPlace(x: Float64Array): Float64Array {
  let max = -Infinity;
  for (const v of x) max = Math.max(max, v);
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    x[i] = Math.exp(x[i] - max);
    sum += x[i];
  }
  for (let i = 0; i < x.length; i++) x[i] /= sum;
  return x;
}
