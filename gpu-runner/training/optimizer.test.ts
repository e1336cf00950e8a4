import { describe, expect, it } from "vitest";
import { Rng } from "../random.ts";
import { AdamW, BASE_LEARNING_RATE, HyperparameterError, clipGradientNorm, learningRateAt, resolveHyperparameters, type TensorMap } from "./optimizer.ts";

const tensors = (entries: Record<string, number[]>): TensorMap => new Map(Object.entries(entries).map(([name, values]) => [name, Float32Array.from(values)]));

describe("AdamW", () => {
  // Two parameters, two steps, learning rates 0.1 then 0.05, default betas and eps.
  const start = { a: [1, -2], b: [0.3] };
  const gradients = [tensors({ a: [0.5, -1], b: [0] }), tensors({ a: [0.1, 0.2], b: [-0.3] })];
  const rates = [0.1, 0.05];

  it("matches a hand-computed two-step reference", () => {
    const parameters = tensors(start);
    const optimizer = new AdamW(parameters);
    // Step 1: m̂ = g and v̂ = g², so every moved entry moves by lr · sign(g): a = [0.9, -1.9];
    // b's gradient is 0, so m = 0 and b stays 0.3.
    optimizer.step(gradients[0]!, rates[0]!);
    expect([...parameters.get("a")!]).toEqual([expect.closeTo(0.9, 6), expect.closeTo(-1.9, 6)]);
    expect(parameters.get("b")![0]).toBeCloseTo(0.3, 7);
    // Step 2, a[0]: m = 0.9·0.05 + 0.1·0.1 = 0.055, v = 0.999·0.00025 + 0.001·0.01 = 0.00025975,
    // m̂ = 0.055 / 0.19 = 0.2894737, v̂ = 0.00025975 / 0.001999 = 0.1299400, √v̂ = 0.3604719,
    // a[0] = 0.9 − 0.05 · 0.2894737 / 0.3604719 = 0.8598480. a[1] and b likewise.
    optimizer.step(gradients[1]!, rates[1]!);
    expect(parameters.get("a")![0]).toBeCloseTo(0.859848, 6);
    expect(parameters.get("a")![1]).toBeCloseTo(-1.8744487, 6);
    expect(parameters.get("b")![0]).toBeCloseTo(0.3372068, 6);
    expect(optimizer.stepCount).toBe(2);
  });

  it("applies decoupled weight decay as PyTorch's AdamW does", () => {
    // Reference values from PyTorch's single-tensor AdamW update replayed in float32 (numpy):
    // p *= 1 − lr·wd; m.lerp_(g, 1 − β1); v = β2·v + (1 − β2)·g²; p −= lr/bc1 · m / (√v/√bc2 + eps).
    const parameters = tensors(start);
    const optimizer = new AdamW(parameters, { weightDecay: 0.1 });
    optimizer.step(gradients[0]!, rates[0]!);
    optimizer.step(gradients[1]!, rates[1]!);
    const expected = [0.84539794921875, -1.8450486660003662, 0.33272185921669006];
    [...parameters.get("a")!, ...parameters.get("b")!].forEach((value, i) => expect(value).toBeCloseTo(expected[i]!, 6));
    // The decay is decoupled: with zero gradients a parameter only shrinks by lr · wd.
    const lone = tensors({ w: [2] });
    new AdamW(lone, { weightDecay: 0.5 }).step(tensors({ w: [0] }), 0.1);
    expect(lone.get("w")![0]).toBeCloseTo(2 * (1 - 0.1 * 0.5), 7);
  });

  it("resumes bit-identically from a saved state", () => {
    const rng = new Rng(11);
    const randomGradients = () => tensors({ a: [rng.normal(), rng.normal()], b: [rng.normal()] });
    const steps = Array.from({ length: 6 }, randomGradients);
    const parameters = tensors(start);
    const optimizer = new AdamW(parameters, { weightDecay: 0.01 });
    steps.slice(0, 3).forEach((gradient, i) => optimizer.step(gradient, 0.01 * (i + 1)));

    const saved = optimizer.state();
    const savedParameters = new Map([...parameters].map(([name, value]) => [name, Float32Array.from(value)]));
    steps.slice(3).forEach((gradient) => optimizer.step(gradient, 0.02));
    expect(saved.step).toBe(3); // the saved state is a copy, not a view of the live one

    // Restore twice from the same saved state: loading must copy it, so both runs agree.
    for (let attempt = 0; attempt < 2; attempt++) {
      const resumedParameters = new Map([...savedParameters].map(([name, value]) => [name, Float32Array.from(value)]));
      const resumed = AdamW.restore(resumedParameters, { weightDecay: 0.01 }, saved);
      steps.slice(3).forEach((gradient) => resumed.step(gradient, 0.02));
      expect(resumedParameters).toEqual(parameters);
      expect(resumed.state()).toEqual(optimizer.state());
    }
  });

  it("refuses gradients or states that do not fit the parameters", () => {
    const optimizer = new AdamW(tensors(start));
    expect(() => optimizer.step(tensors({ a: [1, 1] }), 0.1)).toThrow(/no gradient for parameter "b"/);
    expect(() => optimizer.step(tensors({ a: [1], b: [1] }), 0.1)).toThrow(/"a" has 1 elements, the parameter 2/);
    expect(() => optimizer.step(tensors({ a: [1, 1], b: [1], c: [1] }), 0.1)).toThrow(/unknown parameter "c"/);
    expect(() => optimizer.step(tensors({ a: [1, 1], b: [1] }), Number.NaN)).toThrow(/learning rate/);
    expect(() => optimizer.loadState({ step: 1, m: tensors({ a: [0, 0] }), v: tensors(start) })).toThrow(/first moment for parameter "b"/);
    expect(() => new AdamW(tensors(start), { beta2: 1 })).toThrow(/beta2/);
  });
});

describe("clipGradientNorm", () => {
  it("scales all tensors together to the max norm and returns the norm before clipping", () => {
    const gradients = tensors({ a: [3, 0], b: [4] });
    expect(clipGradientNorm(gradients, 1)).toBeCloseTo(5, 12);
    expect([...gradients.get("a")!, ...gradients.get("b")!]).toEqual([expect.closeTo(0.6, 6), 0, expect.closeTo(0.8, 6)]);
  });

  it("leaves gradients within the norm, or with a non-finite norm, untouched", () => {
    const small = tensors({ a: [0.3, 0.4] });
    expect(clipGradientNorm(small, 1)).toBeCloseTo(0.5, 7);
    expect([...small.get("a")!]).toEqual([Math.fround(0.3), Math.fround(0.4)]);
    const broken = tensors({ a: [Number.NaN, 1] });
    expect(clipGradientNorm(broken, 1)).toBeNaN();
    expect(broken.get("a")![1]).toBe(1);
    expect(() => clipGradientNorm(small, 0)).toThrow(/maxNorm/);
  });
});

describe("learningRateAt", () => {
  const schedule = { peak: 1e-3, totalSteps: 100, warmupSteps: 10 };

  it("warms up linearly from a small nonzero rate to the peak", () => {
    expect(learningRateAt(0, schedule)).toBeCloseTo(1e-4, 15);
    expect(learningRateAt(4, schedule)).toBeCloseTo(5e-4, 15);
    expect(learningRateAt(9, schedule)).toBe(1e-3);
  });

  it("decays by a cosine to min at the last step, through the midpoint", () => {
    expect(learningRateAt(10, schedule)).toBeLessThan(1e-3);
    expect(learningRateAt(10, schedule)).toBeGreaterThan(0.999e-3);
    expect(learningRateAt(54, schedule)).toBeCloseTo(0.5e-3, 15); // (54 + 1 − 10) / 90 = 1/2
    expect(learningRateAt(99, schedule)).toBe(0);
    expect(learningRateAt(54, { ...schedule, minRatio: 0.1 })).toBeCloseTo(1e-4 + 0.45e-3, 15);
    expect(learningRateAt(99, { ...schedule, minRatio: 0.1 })).toBeCloseTo(1e-4, 15);
    expect(learningRateAt(500, { ...schedule, minRatio: 0.1 })).toBeCloseTo(1e-4, 15);
    const rates = Array.from({ length: 100 }, (_, step) => learningRateAt(step, schedule));
    for (let step = 10; step < 100; step++) expect(rates[step]).toBeLessThan(rates[step - 1]!);
  });

  it("starts the decay at once without warmup, and rejects bad settings", () => {
    expect(learningRateAt(0, { ...schedule, warmupSteps: 0 })).toBeCloseTo((1e-3 * (1 + Math.cos(Math.PI / 100))) / 2, 15);
    expect(() => learningRateAt(0, { ...schedule, warmupSteps: 101 })).toThrow(/warmupSteps/);
    expect(() => learningRateAt(0, { ...schedule, peak: 0 })).toThrow(/peak/);
    expect(() => learningRateAt(-1, schedule)).toThrow(/step/);
  });
});

describe("resolveHyperparameters", () => {
  const pica = (trainExamples: number) => ({ trainExamples, method: "pica" as const });

  it("resolves auto epochs to the sweep's 8 up to 32 examples and 16 from 128, at most 25,000 examples seen", () => {
    expect(resolveHyperparameters({}, pica(3)).nEpochs).toBe(8);
    expect(resolveHyperparameters({}, pica(32)).nEpochs).toBe(8);
    expect(resolveHyperparameters({}, pica(64)).nEpochs).toBe(12); // halfway between 32 and 128 in log n
    expect(resolveHyperparameters({ n_epochs: "auto" }, pica(128)).nEpochs).toBe(16);
    expect(resolveHyperparameters({}, pica(1_562)).nEpochs).toBe(16); // floor(25000 / 1562) = 16
    expect(resolveHyperparameters({}, pica(1_563)).nEpochs).toBe(15);
    expect(resolveHyperparameters({}, pica(10_000)).nEpochs).toBe(2); // floor(25000 / 10000)
    expect(resolveHyperparameters({}, pica(100_000)).nEpochs).toBe(1);
  });

  it("resolves auto batch size to 8 steps an epoch up to 16, and the learning rate per method", () => {
    expect(resolveHyperparameters({}, pica(3)).batchSize).toBe(1);
    expect(resolveHyperparameters({}, pica(32)).batchSize).toBe(4);
    expect(resolveHyperparameters({}, pica(100)).batchSize).toBe(12);
    expect(resolveHyperparameters({}, pica(128)).batchSize).toBe(16);
    expect(resolveHyperparameters({}, pica(100_000)).batchSize).toBe(16);
    expect(resolveHyperparameters({}, pica(10)).learningRate).toBe(BASE_LEARNING_RATE.pica);
    expect(BASE_LEARNING_RATE).toEqual({ pica: 1e-2, lora: 1e-2 });
    expect(resolveHyperparameters({ learning_rate_multiplier: 2 }, { trainExamples: 10, method: "lora" }).learningRate).toBeCloseTo(2e-2, 15);
  });

  it("keeps explicit values and derives steps and 10% warmup", () => {
    expect(resolveHyperparameters({ n_epochs: 2, batch_size: 4, learning_rate_multiplier: 0.5 }, pica(10))).toEqual({
      nEpochs: 2,
      batchSize: 4,
      learningRateMultiplier: 0.5,
      learningRate: 5e-3,
      totalSteps: 6,
      warmupSteps: 1,
    });
    // 10 examples: batch 1 (floor(10 / 8)), 8 epochs of 10 steps.
    expect(resolveHyperparameters({}, pica(10))).toMatchObject({ totalSteps: 80, warmupSteps: 8 });
  });

  it("rejects out-of-range values with an error naming the field", () => {
    const cases: [object, string, RegExp][] = [
      [{ n_epochs: 0 }, "n_epochs", /n_epochs must be an integer in \[1, 50\] or "auto", got 0/],
      [{ n_epochs: 51 }, "n_epochs", /got 51/],
      [{ n_epochs: 1.5 }, "n_epochs", /got 1.5/],
      [{ n_epochs: "3" }, "n_epochs", /got "3"/],
      [{ batch_size: 0 }, "batch_size", /batch_size must be an integer in \[1, 256\]/],
      [{ batch_size: 257 }, "batch_size", /got 257/],
      [{ batch_size: 11 }, "batch_size", /larger than the 10 training examples/],
      [{ learning_rate_multiplier: 0 }, "learning_rate_multiplier", /in \(0, 10\]/],
      [{ learning_rate_multiplier: 11 }, "learning_rate_multiplier", /got 11/],
      [{ learning_rate_multiplier: Number.NaN }, "learning_rate_multiplier", /got NaN/],
    ];
    for (const [request, param, message] of cases) {
      let caught: unknown;
      try {
        resolveHyperparameters(request, pica(10));
      } catch (error) {
        caught = error;
      }
      expect(caught, JSON.stringify(request)).toBeInstanceOf(HyperparameterError);
      expect((caught as HyperparameterError).param).toBe(param);
      expect((caught as HyperparameterError).message).toMatch(message);
    }
    expect(() => resolveHyperparameters({}, pica(0))).toThrow(/trainExamples/);
  });
});
