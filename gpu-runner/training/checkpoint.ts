/**
 * A trainer checkpoint: the trained tensors, the optimiser's moments and step, and what the run
 * was (method, rank, seed, resolved hyper-parameters, basis), so a resumed run continues exactly
 * where the interrupted one stopped and refuses a checkpoint of another run.
 */
import { parseSafetensors, serializeSafetensors } from "../checkpoint/safetensors.ts";
import type { LinearModule } from "../model/weights.ts";
import type { SharingMode } from "../pica/types.ts";
import type { AdamWState, ResolvedHyperparameters } from "./optimizer.ts";

/** What identifies a run: a checkpoint resumes only the run it came from. */
export interface RunIdentity {
  method: "pica" | "lora";
  rank: number;
  sharing: SharingMode | null;
  seed: number;
  hyperparameters: ResolvedHyperparameters;
  basisId: string;
  trainExamples: number;
  /** The modules trained when a subset of the basis's (absent or null: all of them, as before subsets existed). */
  targetModules?: LinearModule[] | null;
}

export interface TrainerCheckpoint extends RunIdentity {
  step: number; // optimiser steps completed
  parameters: Map<string, Float32Array>;
  optimizer: AdamWState;
}

const FORMAT = "pica-trainer-checkpoint";

/** Refuses to resume `checkpoint` in a run that differs from the one it was taken in. */
export function checkpointMatches(checkpoint: TrainerCheckpoint, run: RunIdentity): void {
  const mine = JSON.stringify(identityOf(checkpoint));
  const theirs = JSON.stringify(identityOf(run));
  if (mine !== theirs) throw new Error(`checkpoint belongs to another run: checkpoint ${mine}, this run ${theirs}`);
}

/** Encodes a checkpoint as one safetensors file. */
export function serializeCheckpoint(checkpoint: TrainerCheckpoint): Uint8Array {
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, data] of checkpoint.parameters) {
    tensors.set(`parameter/${name}`, { shape: [data.length], data });
    tensors.set(`adam_m/${name}`, { shape: [data.length], data: checkpoint.optimizer.m.get(name)! });
    tensors.set(`adam_v/${name}`, { shape: [data.length], data: checkpoint.optimizer.v.get(name)! });
  }
  return serializeSafetensors(tensors, {
    format: FORMAT,
    identity: JSON.stringify(identityOf(checkpoint)),
    step: String(checkpoint.step),
    optimizer_step: String(checkpoint.optimizer.step),
  });
}

/** Decodes a checkpoint file, checking its format and that every tensor has its moments. */
export function parseCheckpoint(bytes: Uint8Array, fileName: string): TrainerCheckpoint {
  const file = parseSafetensors(bytes, fileName);
  if (file.metadata.format !== FORMAT) throw new Error(`${fileName}: not a trainer checkpoint (format ${file.metadata.format ?? "missing"})`);
  const identity = JSON.parse(file.metadata.identity ?? "null") as RunIdentity | null;
  const step = Number(file.metadata.step);
  const optimizerStep = Number(file.metadata.optimizer_step);
  if (identity === null || !Number.isInteger(step) || !Number.isInteger(optimizerStep)) throw new Error(`${fileName}: checkpoint metadata is incomplete`);
  const parameters = new Map<string, Float32Array>();
  const m = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  for (const [name, tensor] of file.tensors) {
    const [kind, ...rest] = name.split("/");
    const target = kind === "parameter" ? parameters : kind === "adam_m" ? m : kind === "adam_v" ? v : null;
    if (target === null || !(tensor.data instanceof Float32Array)) throw new Error(`${fileName}: unexpected tensor ${name}`);
    target.set(rest.join("/"), tensor.data);
  }
  for (const name of parameters.keys()) {
    if (!m.has(name) || !v.has(name)) throw new Error(`${fileName}: parameter ${name} has no optimiser moments`);
  }
  return { ...identity, step, parameters, optimizer: { step: optimizerStep, m, v } };
}

function identityOf(run: RunIdentity): RunIdentity {
  const { method, rank, sharing, seed, hyperparameters, basisId, trainExamples } = run;
  const identity: RunIdentity = { method, rank, sharing, seed, hyperparameters, basisId, trainExamples };
  if (run.targetModules != null) identity.targetModules = run.targetModules;
  return identity;
}
