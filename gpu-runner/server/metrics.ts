/**
 * The runner's Prometheus metrics (`GET /metrics`): requests, tokens, batch sizes and step times,
 * time to first token, queue depth, resident and loaded adapters with load latency, training jobs
 * and their progress, plus the process's own (memory, CPU, event loop). One registry per runner,
 * so several runners in one process (tests) never share counters.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { AdapterCacheStats } from "../adapters/adapter-cache.ts";
import type { SchedulerObserver } from "./scheduler.ts";

/** Where the gauges read their values at scrape time. */
export interface MetricSources {
  scheduler: () => { running: number; waiting: number };
  adapters?: () => AdapterCacheStats;
  jobs?: () => { byStatus: Record<string, number>; running: { id: string; step: number; total_steps: number | null } | null; trainedTokens: number };
  training?: () => { trainingSlices: number; starvedSlices: number };
}

export class RunnerMetrics {
  readonly registry = new Registry();
  readonly observer: SchedulerObserver;
  private readonly requests: Counter<"route" | "status">;
  private readonly adapterLoad: Histogram;

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({ name: "runner_requests_total", help: "HTTP requests by route and status", labelNames: ["route", "status"], registers });
    const promptTokens = new Counter({ name: "runner_prompt_tokens_total", help: "Prompt tokens of finished completions", registers });
    const completionTokens = new Counter({ name: "runner_completion_tokens_total", help: "Generated tokens of finished completions", registers });
    const batchRows = new Histogram({ name: "runner_batch_rows", help: "Rows decoded together per step", buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers });
    const stepSeconds = new Histogram({
      name: "runner_step_seconds",
      help: "Duration of one batch step",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    const ttft = new Histogram({
      name: "runner_time_to_first_token_seconds",
      help: "Time from a request's submission to its first token",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.adapterLoad = new Histogram({
      name: "runner_adapter_load_seconds",
      help: "Time to load an adapter into the resident set",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1],
      registers,
    });
    this.observer = {
      step: (rows, seconds) => {
        batchRows.observe(rows);
        stepSeconds.observe(seconds);
      },
      firstToken: (seconds) => ttft.observe(seconds),
      finished: (prompt, completion) => {
        promptTokens.inc(prompt);
        completionTokens.inc(completion);
      },
    };

    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    // Counters whose source of truth is a running total elsewhere (the cache, the gate, the jobs).
    const counter = (name: string, help: string, read: () => number) => {
      let seen = 0;
      return new Counter({
        name,
        help,
        registers,
        collect() {
          const now = read();
          this.inc(Math.max(0, now - seen));
          seen = now;
        },
      });
    };
    gauge("runner_running_rows", "Requests decoding in the batch", () => sources.scheduler().running);
    gauge("runner_queue_depth", "Requests waiting for a batch row", () => sources.scheduler().waiting);
    if (sources.adapters) {
      const adapters = sources.adapters;
      gauge("runner_adapters_resident", "Adapters resident in the engine", () => adapters().resident);
      gauge("runner_adapter_resident_bytes", "Bytes of resident adapter tensors", () => adapters().bytes);
      counter("runner_adapter_loads_total", "Adapter loads started", () => adapters().loads);
      counter("runner_adapter_evictions_total", "Adapters evicted", () => adapters().evictions);
      counter("runner_adapter_cache_hits_total", "Requests that found their adapter resident", () => adapters().hits);
      counter("runner_adapter_cache_misses_total", "Requests that had to wait for their adapter to load", () => adapters().misses);
    }
    if (sources.jobs) {
      const jobs = sources.jobs;
      new Gauge({
        name: "runner_training_jobs",
        help: "Training jobs known to this runner by status",
        labelNames: ["status"],
        registers,
        collect() {
          for (const [status, count] of Object.entries(jobs().byStatus)) this.set({ status }, count);
        },
      });
      new Gauge({
        name: "runner_training_progress_ratio",
        help: "Steps done over total steps of the running job",
        labelNames: ["job"],
        registers,
        collect() {
          this.reset();
          const running = jobs().running;
          if (running?.total_steps) this.set({ job: running.id }, running.step / running.total_steps);
        },
      });
      counter("runner_training_tokens_total", "Tokens trained", () => jobs().trainedTokens);
    }
    if (sources.training) {
      const training = sources.training;
      counter("runner_training_slices_total", "Training forward/backward slices run", () => training().trainingSlices);
      counter("runner_training_starved_slices_total", "Training slices run while requests were waiting (starvation guard)", () => training().starvedSlices);
    }
  }

  /** Counts one answered HTTP request. */
  request(route: string, status: number): void {
    this.requests.inc({ route, status: String(status) });
  }

  /** Observes one adapter load. */
  adapterLoaded(seconds: number): void {
    this.adapterLoad.observe(seconds);
  }

  /** The Prometheus text exposition. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
