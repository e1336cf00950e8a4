/**
 * Training jobs on a runner: accepted over the internal API, kept on local disk, run one at a time
 * beside serving (every forward/backward goes through the compute gate, after inference), reported
 * to the job's callback, cancellable, and resumed from the last checkpoint after a restart.
 *
 * On disk, per job: `job.json` (the request without inline data, and the state), the data files
 * (`training.jsonl`, `validation.jsonl`), `state.safetensors` (the trainer checkpoint) and, once
 * done, `adapter.safetensors`.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { LINEAR_MODULES, rankCeiling, rankRefusal, type LinearModule, type RankLimits } from "../../src/protocol/adapter-rank.ts";
import { CALLBACK_PATHS, requestedRank, TERMINAL_JOB_STATUSES, type JobEvent, type RunnerJob, type TrainingJobRequest } from "../../src/protocol/runner.ts";
import { writeFileAtomic } from "../checkpoint/atomic-write.ts";
import { serializeAdapter } from "../pica/adapter-format.ts";
import { parseCheckpoint, serializeCheckpoint, type TrainerCheckpoint } from "../training/checkpoint.ts";
import { HyperparameterError } from "../training/optimizer.ts";
import { fineTune, toAdapter, TrainingDataError, type TrainerEvent, type TrainerModel } from "../training/trainer.ts";
import type { CallbackClient, CallbackRoute } from "./callbacks.ts";
import { DataSourceError, downloadBytes, readDataSource, type DataFetchOptions } from "./data-source.ts";
import { TrainingRateMeter } from "./training-rate.ts";
import type { WeightPrecision } from "../quantize/block-format.ts";
import type { TrainingRate } from "../../src/protocol/training-figures.ts";

export interface JobManagerOptions {
  model: TrainerModel | (() => Promise<TrainerModel>); // a function: the model is ready later (its basis is being computed)
  directory: string; // where jobs live on disk
  /** What bounds the ranks this runner trains: its model's linear shapes and its basis's rows (adapter-rank.ts). */
  rankLimits?: RankLimits;
  /** The modules the basis covers: a job's target modules must be among them; default all seven. */
  basisModules?: readonly LinearModule[];
  callbacks: CallbackClient;
  data: Omit<DataFetchOptions, "signal">;
  compute?: <T>(work: () => Promise<T>) => Promise<T>; // shares the device with inference
  microBatchTokens?: number;
  publishAdapter?: (adapterId: string, bytes: Uint8Array) => Promise<void>; // makes a finished adapter servable here
  log?: (message: string) => void;
}

/** A job id that exists with a different request. */
export class JobConflictError extends Error {
  override readonly name = "JobConflictError";
}

/** A request this runner cannot train (e.g. a rank above what its model and basis allow); `param` names the field. */
export class JobRequestError extends Error {
  override readonly name = "JobRequestError";
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(message);
  }
}

interface StoredJob {
  request: TrainingJobRequest; // inline data replaced by the file it was saved to
  job: RunnerJob;
  eventCount: number;
  tokensAtCheckpoint: number; // trained_tokens when state.safetensors was written
}

interface Running {
  id: string;
  controller: AbortController;
  done: Promise<void>; // settles when the run has saved its outcome
}

const SHUTDOWN = "shutdown";
const MOVED = "moved";
const MOVED_ERROR = { code: "job_moved", message: "The control plane moved this job to another runner." };

/** The trainer state a moved job should resume from could not be read. */
class ResumeStateError extends Error {
  override readonly name = "ResumeStateError";
}
const now = () => Math.floor(Date.now() / 1000);

export class JobManager {
  private readonly jobs = new Map<string, StoredJob>();
  private readonly queue: string[] = [];
  private running: Running | null = null;
  private worker: Promise<void> | null = null;
  private stopping = false;
  private trainedTokens = 0;
  private readonly rate = new TrainingRateMeter();

  constructor(private readonly options: JobManagerOptions) {}

  /** Reads the jobs on disk; unfinished ones are queued to resume. */
  async start(): Promise<void> {
    let names: string[] = [];
    try {
      names = await readdir(this.options.directory);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    for (const name of names.sort()) {
      let stored: StoredJob;
      try {
        stored = JSON.parse(await readFile(join(this.options.directory, name, "job.json"), "utf8")) as StoredJob;
      } catch {
        continue; // not a job directory, or one whose first write never completed
      }
      this.jobs.set(stored.job.id, stored);
      if (!TERMINAL_JOB_STATUSES.includes(stored.job.status)) {
        stored.job.status = "queued";
        this.queue.push(stored.job.id);
      }
    }
    this.kick();
  }

  /** Accepts a job (idempotent for the same id and request); returns its state. */
  async submit(request: TrainingJobRequest): Promise<RunnerJob> {
    if (this.stopping) throw new Error("the runner is shutting down");
    const existing = this.jobs.get(request.id);
    const fingerprint = requestFingerprint(request);
    if (existing !== undefined && existing.job.error?.code === MOVED_ERROR.code && request.resume_state !== undefined) {
      // Moved away from here earlier and now given back: start over from the control plane's state.
      this.jobs.delete(request.id);
      this.options.callbacks.reopen(request.id);
      await rm(join(this.directoryOf(request.id), "state.safetensors"), { force: true });
    } else if (existing !== undefined) {
      if (existing.job.hyperparameters?.request_sha256 !== fingerprint) {
        throw new JobConflictError(`job ${request.id} already exists with a different request`);
      }
      return existing.job;
    }
    this.checkAdapterShape(request);
    await mkdir(this.directoryOf(request.id), { recursive: true });
    const stored: StoredJob = {
      request: { ...request, training_file: await this.saveInline(request, "training"), validation_file: await this.saveInline(request, "validation") },
      job: {
        id: request.id,
        object: "runner.job",
        status: "queued",
        created_at: now(),
        started_at: null,
        finished_at: null,
        step: 0,
        total_steps: null,
        epoch: null,
        train_loss: null,
        validation_loss: null,
        validation_token_accuracy: null,
        trained_tokens: 0,
        eta_seconds: null,
        resumed_from_step: null,
        hyperparameters: { request_sha256: fingerprint },
        adapter_id: request.adapter_id ?? null,
        adapter_sha256: null,
        error: null,
      },
      eventCount: 0,
      tokensAtCheckpoint: 0,
    };
    this.jobs.set(request.id, stored);
    await this.persist(stored);
    this.queue.push(request.id);
    this.kick();
    return stored.job;
  }

  /** Refuses, before anything is stored, a rank or target modules this runner cannot train (the edge's own rule, adapter-rank.ts). */
  private checkAdapterShape(request: TrainingJobRequest): void {
    const basisModules = this.options.basisModules ?? LINEAR_MODULES;
    const requested = request.hyperparameters.target_modules;
    const missing = requested?.find((module) => !basisModules.includes(module));
    if (missing !== undefined) {
      throw new JobRequestError(
        "hyperparameters.target_modules",
        `hyperparameters.target_modules names ${missing}, which this runner's basis does not cover (it covers ${basisModules.join(", ")})`,
      );
    }
    const ceiling = rankCeiling(this.options.rankLimits ?? null, requested ?? basisModules);
    const rank = requestedRank(request.hyperparameters.rank, ceiling.rank);
    const refusal = rankRefusal(rank, ceiling, "this runner");
    if (refusal !== null) throw new JobRequestError("hyperparameters.rank", `hyperparameters.${refusal}`);
  }

  get(id: string): RunnerJob | null {
    return this.jobs.get(id)?.job ?? null;
  }

  list(): RunnerJob[] {
    return [...this.jobs.values()].map((stored) => stored.job).sort((a, b) => b.created_at - a.created_at || a.id.localeCompare(b.id));
  }

  /** Cancels a queued or running job; a finished job is returned unchanged. */
  async cancel(id: string): Promise<RunnerJob | null> {
    const stored = this.jobs.get(id);
    if (stored === undefined) return null;
    if (this.running?.id === id) {
      this.running.controller.abort("cancel");
      await this.running.done;
    } else if (stored.job.status === "queued") {
      const at = this.queue.indexOf(id);
      if (at >= 0) this.queue.splice(at, 1);
      await this.finish(stored, "cancelled", null);
    }
    return stored.job;
  }

  /** The finished adapter of a succeeded job. */
  async adapterBytes(id: string): Promise<Uint8Array | null> {
    if (this.jobs.get(id)?.job.status !== "succeeded") return null;
    return new Uint8Array(await readFile(join(this.directoryOf(id), "adapter.safetensors")));
  }

  /** Stops between steps: the running job checkpoints and stays queued to resume at the next start. */
  async shutdown(): Promise<void> {
    this.stopping = true;
    this.running?.controller.abort(SHUTDOWN);
    await this.worker;
  }

  /** Tokens per second and overhead measured on the jobs finished here, or null before one has. */
  get trainingRate(): TrainingRate | null {
    return this.rate.rate;
  }

  /** Jobs by status, the running job's progress, and tokens trained since start. */
  stats(): { byStatus: Record<string, number>; running: RunnerJob | null; trainedTokens: number } {
    const byStatus: Record<string, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const { job } of this.jobs.values()) byStatus[job.status]++;
    return { byStatus, running: this.running ? this.jobs.get(this.running.id)!.job : null, trainedTokens: this.trainedTokens };
  }

  private kick(): void {
    this.worker ??= (async () => {
      while (this.queue.length > 0 && !this.stopping) {
        const stored = this.jobs.get(this.queue.shift()!)!;
        const controller = new AbortController();
        const done = this.run(stored, controller);
        this.running = { id: stored.job.id, controller, done };
        await done;
        this.running = null;
      }
    })().finally(() => {
      this.worker = null;
      if (this.queue.length > 0 && !this.stopping) this.kick();
    });
  }

  private async run(stored: StoredJob, controller: AbortController): Promise<void> {
    const { job, request } = stored;
    const directory = this.directoryOf(job.id);
    try {
      const statePath = join(directory, "state.safetensors");
      const resume =
        (await readFile(statePath).then(
          (bytes) => parseCheckpoint(bytes, statePath),
          () => undefined,
        )) ?? (await this.movedInState(stored, statePath, controller.signal));
      job.status = "running";
      job.started_at ??= now();
      job.resumed_from_step = resume?.step ?? null;
      job.trained_tokens = resume ? stored.tokensAtCheckpoint : 0;
      await this.persist(stored);
      // Keyed by what happened, not by a counter: a job moved to another runner starts counting
      // anew there, and must not overwrite the first runner's events.
      const key = resume ? `status:resumed:${resume.step}` : "status:started";
      this.emit(
        stored,
        "status",
        `Job ${resume ? `resumed from step ${resume.step}` : "started"}`,
        { status: "running", resumed_from_step: resume?.step ?? null },
        key,
      );

      const jobStarted = performance.now();
      let loopStarted = Number.NaN;
      const training = await this.readData(request, "training", controller.signal);
      const validation = request.validation_file ? await this.readData(request, "validation", controller.signal) : undefined;
      const model = await this.model();
      const result = await fineTune(model, {
        training,
        validation,
        method: request.method,
        hyperparameters: request.hyperparameters,
        seed: request.seed,
        checkpointEvery: request.checkpoint_every,
        resume,
        signal: controller.signal,
        compute: this.options.compute,
        microBatchTokens: this.options.microBatchTokens,
        provenance: { job_id: job.id, weights: weightPrecision(model) },
        onEvent: (event) => {
          if (event.type === "started") loopStarted = performance.now();
          return this.onTrainerEvent(stored, event);
        },
      });
      const loopSeconds = (performance.now() - loopStarted) / 1000;
      if (result.status === "cancelled") {
        if (controller.signal.reason === MOVED) {
          await this.finish(stored, "cancelled", MOVED_ERROR, { quiet: true });
          return;
        }
        if (controller.signal.reason === SHUTDOWN) {
          await writeFileAtomic(statePath, serializeCheckpoint(result.checkpoint));
          stored.tokensAtCheckpoint = job.trained_tokens;
          await this.persist(stored, "queued");
          this.options.log?.(`job ${job.id} paused at step ${result.steps} for shutdown; it resumes at the next start`);
          return;
        }
        await this.finish(stored, "cancelled", null);
        return;
      }
      const bytes = serializeAdapter(result.adapter!);
      await writeFileAtomic(join(directory, "adapter.safetensors"), bytes);
      job.adapter_sha256 = createHash("sha256").update(bytes).digest("hex");
      job.step = result.steps;
      job.validation_loss = result.validationLoss;
      job.validation_token_accuracy = result.validationTokenAccuracy;
      if (request.adapter_id !== undefined) await this.options.publishAdapter?.(request.adapter_id, bytes);
      if (request.callback_url !== undefined) this.options.callbacks.blob(job.id, request.callback_url, CALLBACK_PATHS.adapter, bytes, this.route(stored));
      await rm(statePath, { force: true });
      // A resumed job trained only part of its tokens here: only whole runs are timed.
      if (resume === undefined) this.rate.record({ trainedTokens: job.trained_tokens, loopSeconds, totalSeconds: (performance.now() - jobStarted) / 1000 });
      await this.finish(stored, "succeeded", null);
    } catch (error) {
      // Stopped while reading its data: a shutdown leaves it queued; a cancel ends it.
      const reason = controller.signal.reason;
      const outcome = !controller.signal.aborted
        ? this.finish(stored, "failed", describeFailure(error))
        : reason === SHUTDOWN
          ? this.persist(stored, "queued")
          : reason === MOVED
            ? this.finish(stored, "cancelled", MOVED_ERROR, { quiet: true })
            : this.finish(stored, "cancelled", null);
      await outcome.catch((failure: Error) => this.options.log?.(`job ${job.id}: ${failure.message}`));
    }
  }

  private async onTrainerEvent(stored: StoredJob, event: TrainerEvent): Promise<void> {
    const { job, request } = stored;
    switch (event.type) {
      case "started":
        job.total_steps = event.hyperparameters.totalSteps;
        job.hyperparameters = { ...event.hyperparameters, request_sha256: job.hyperparameters?.request_sha256 };
        this.emit(
          stored,
          "message",
          `Training ${event.trainExamples} examples (${event.trainTokens} tokens), ${event.validationExamples} for validation`,
          {
            hyperparameters: event.hyperparameters,
            skipped_lines: event.skipped.map((s) => s.line),
          },
          "message:data",
        );
        return;
      case "step": {
        job.step = event.step;
        job.epoch = event.epoch;
        job.train_loss = event.loss;
        job.eta_seconds = event.etaSeconds;
        job.trained_tokens += event.batchTokens;
        this.trainedTokens += event.batchTokens;
        this.emit(
          stored,
          "metrics",
          `Step ${event.step}/${event.totalSteps}: training loss=${event.loss.toFixed(4)}`,
          {
            step: event.step,
            total_steps: event.totalSteps,
            train_loss: event.loss,
            learning_rate: event.learningRate,
            gradient_norm: event.gradientNorm,
            eta_seconds: event.etaSeconds,
            trained_tokens: job.trained_tokens,
          },
          `step:${event.step}`,
        );
        return;
      }
      case "epoch":
        job.validation_loss = event.validationLoss;
        job.validation_token_accuracy = event.validationTokenAccuracy;
        this.emit(
          stored,
          "metrics",
          `Epoch ${event.epoch + 1}: validation loss=${event.validationLoss?.toFixed(4) ?? "n/a"}`,
          {
            epoch: event.epoch,
            train_loss: event.trainLoss,
            validation_loss: event.validationLoss,
            validation_token_accuracy: event.validationTokenAccuracy,
          },
          `epoch:${event.epoch}`,
        );
        await this.persist(stored);
        return;
      case "checkpoint": {
        await writeFileAtomic(join(this.directoryOf(job.id), "state.safetensors"), serializeCheckpoint(event.checkpoint));
        stored.tokensAtCheckpoint = job.trained_tokens;
        await this.persist(stored);
        if (request.callback_url !== undefined) {
          const adapter = checkpointAdapter(await this.model(), event.checkpoint, job.id);
          this.options.callbacks.blob(job.id, request.callback_url, CALLBACK_PATHS.checkpoint(event.step), adapter, this.route(stored));
          this.options.callbacks.blob(job.id, request.callback_url, CALLBACK_PATHS.state, serializeCheckpoint(event.checkpoint), this.route(stored));
        }
        this.emit(stored, "checkpoint", `Checkpoint at step ${event.step}`, { step: event.step, train_loss: job.train_loss }, `checkpoint:${event.step}`);
        return;
      }
    }
  }

  private async finish(
    stored: StoredJob,
    status: "succeeded" | "failed" | "cancelled",
    error: RunnerJob["error"],
    options: { quiet?: boolean } = {},
  ): Promise<void> {
    stored.job.status = status;
    stored.job.finished_at = now();
    stored.job.error = error;
    stored.job.eta_seconds = null;
    await this.persist(stored);
    if (options.quiet === true) return;
    const message =
      status === "succeeded" ? "The job has successfully completed" : status === "cancelled" ? "The job was cancelled" : `The job failed: ${error?.message}`;
    this.emit(
      stored,
      "status",
      message,
      { status, adapter_sha256: stored.job.adapter_sha256, trained_tokens: stored.job.trained_tokens, error },
      `status:${status}`,
      status === "failed" ? "error" : "info",
    );
  }

  /** Queues an event for the callback; its id is stable across retries and resumed runs. */
  private emit(
    stored: StoredJob,
    type: JobEvent["type"],
    message: string,
    data: Record<string, unknown> | null,
    key?: string,
    level: JobEvent["level"] = "info",
  ): void {
    const url = stored.request.callback_url;
    const id = `${stored.job.id}:${key ?? `${type}:${stored.eventCount}`}`;
    stored.eventCount++;
    if (url !== undefined)
      this.options.callbacks.events(stored.job.id, url, [{ id, job_id: stored.job.id, created_at: now(), level, type, message, data }], this.route(stored));
  }

  /** Where the job's callbacks go, and what happens when the control plane says it moved the job. */
  private route(stored: StoredJob): CallbackRoute {
    return { placement: stored.request.placement, onMoved: () => void this.moveAway(stored.job.id) };
  }

  /** The control plane gave the job to another runner: stop it here, quietly (its callbacks are refused). */
  private async moveAway(id: string): Promise<void> {
    const stored = this.jobs.get(id);
    if (stored === undefined || TERMINAL_JOB_STATUSES.includes(stored.job.status)) return;
    this.options.log?.(`job ${id} now runs on another runner; stopping it here`);
    if (this.running?.id === id) {
      this.running.controller.abort(MOVED);
      await this.running.done;
      return;
    }
    const at = this.queue.indexOf(id);
    if (at >= 0) this.queue.splice(at, 1);
    await this.finish(stored, "cancelled", MOVED_ERROR, { quiet: true });
  }

  /** A job moved here from another runner resumes from the trainer state that runner last uploaded. */
  private async movedInState(stored: StoredJob, statePath: string, signal: AbortSignal): Promise<TrainerCheckpoint | undefined> {
    const source = stored.request.resume_state;
    if (source === undefined) return undefined;
    let bytes: Uint8Array;
    let checkpoint: TrainerCheckpoint;
    try {
      bytes = await downloadBytes(source.url, "trainer state", { ...this.options.data, signal });
      checkpoint = parseCheckpoint(bytes, "trainer state");
    } catch (error) {
      throw new ResumeStateError(`the trainer state to resume from could not be read: ${(error as Error).message}`);
    }
    await writeFileAtomic(statePath, bytes);
    stored.tokensAtCheckpoint = source.trained_tokens;
    return checkpoint;
  }

  private async saveInline(request: TrainingJobRequest, which: "training" | "validation") {
    const source = which === "training" ? request.training_file : request.validation_file;
    if (source === undefined || !("content" in source)) return source as never;
    await writeFileAtomic(join(this.directoryOf(request.id), `${which}.jsonl`), source.content);
    return { url: `file:${which}.jsonl` } as never;
  }

  /** The job's data: the saved copy, else downloaded once and saved. */
  private async readData(request: TrainingJobRequest, which: "training" | "validation", signal: AbortSignal): Promise<string> {
    const path = join(this.directoryOf(request.id), `${which}.jsonl`);
    const saved = await readFile(path, "utf8").catch(() => null);
    if (saved !== null) return saved;
    const source = which === "training" ? request.training_file : request.validation_file!;
    const text = await readDataSource(source, `${which} file`, { ...this.options.data, signal });
    await writeFileAtomic(path, text);
    return text;
  }

  private directoryOf(id: string): string {
    return join(this.options.directory, id);
  }

  /** The model jobs train against, once it is ready. */
  private model(): Promise<TrainerModel> {
    const { model } = this.options;
    return typeof model === "function" ? model() : Promise.resolve(model);
  }

  private async persist(stored: StoredJob, status?: "queued"): Promise<void> {
    if (status !== undefined) stored.job.status = status;
    await writeFileAtomic(join(this.directoryOf(stored.job.id), "job.json"), JSON.stringify(stored));
  }
}

function requestFingerprint(request: TrainingJobRequest): string {
  return createHash("sha256").update(JSON.stringify(request)).digest("hex");
}

/**
 * The precision of the base weights a job trains on, recorded in its adapters: the basis and the
 * fingerprint are the float checkpoint's, so an adapter serves on every precision of its base, and
 * its provenance says which one it was trained on.
 */
function weightPrecision(model: TrainerModel): WeightPrecision {
  return model.weightFile?.quantization?.precision ?? "f32";
}

/** A checkpoint as a servable adapter (what the control plane offers as `ft:…:ckpt-step-N`). */
function checkpointAdapter(model: TrainerModel, checkpoint: TrainerCheckpoint, jobId: string): Uint8Array {
  const sharing = checkpoint.sharing ?? "shared";
  const provenance = { job_id: jobId, step: checkpoint.step, weights: weightPrecision(model) };
  return serializeAdapter(
    toAdapter(model.config, model.basis, checkpoint.rank, sharing, checkpoint.parameters, provenance, checkpoint.targetModules ?? model.basis.targetModules),
  );
}

function describeFailure(error: unknown): { code: string; message: string } {
  if (error instanceof TrainingDataError) return { code: "invalid_training_file", message: error.message };
  if (error instanceof HyperparameterError) return { code: "invalid_hyperparameters", message: error.message };
  if (error instanceof DataSourceError) return { code: "training_file_unavailable", message: error.message };
  if (error instanceof ResumeStateError) return { code: "resume_state_unavailable", message: error.message };
  return { code: "training_error", message: (error as Error).message ?? String(error) };
}
