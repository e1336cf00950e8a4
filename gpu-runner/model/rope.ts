/**
 * Rotary position embedding frequencies, shared by the ONNX graph and the reference forward so
 * both rotate by exactly the same angles.
 */
import type { ModelConfig } from "./config.ts";

/**
 * `inv_freq[i] = 1 / theta^(2i / head_dim)` for i < head_dim/2, with Llama 3's frequency scaling
 * applied when configured (it changes every frequency, even for short inputs).
 */
export function inverseFrequencies(config: ModelConfig): Float64Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / config.ropeTheta ** ((2 * i) / config.headDim);
  const scaling = config.ropeScaling;
  if (scaling === null) return inv;
  const { factor, lowFrequencyFactor, highFrequencyFactor, originalMaxPositionEmbeddings } = scaling;
  const lowFrequencyWavelength = originalMaxPositionEmbeddings / lowFrequencyFactor;
  const highFrequencyWavelength = originalMaxPositionEmbeddings / highFrequencyFactor;
  for (let i = 0; i < half; i++) {
    const wavelength = (2 * Math.PI) / inv[i];
    if (wavelength < highFrequencyWavelength) continue; // high frequencies stay as they are
    if (wavelength > lowFrequencyWavelength) {
      inv[i] /= factor;
      continue;
    }
    const smooth = (originalMaxPositionEmbeddings / wavelength - lowFrequencyFactor) / (highFrequencyFactor - lowFrequencyFactor);
    inv[i] = (1 - smooth) * (inv[i] / factor) + smooth * inv[i];
  }
  return inv;
}
