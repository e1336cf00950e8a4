/** A host-side float32 tensor in row-major order: the currency between loaders, graphs and tests. */
export interface FloatTensor {
  shape: number[];
  data: Float32Array;
}

/** Number of elements of a shape. */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Wraps data in a tensor after checking that its length matches the shape. */
export function floatTensor(shape: number[], data: Float32Array): FloatTensor {
  if (data.length !== sizeOf(shape)) {
    throw new Error(`tensor data has ${data.length} elements but shape [${shape.join(", ")}] needs ${sizeOf(shape)}`);
  }
  return { shape, data };
}
