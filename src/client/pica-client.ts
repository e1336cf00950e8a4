// A typed client for the platform's public API (the edge), on fetch alone so that it runs in
// Node, browsers and Workers. The CLI is built on it; the OpenAI-shaped routes work with the
// `openai` package too, this client adds the PiCa-specific ones and one error type. Its types are
// the protocol's (src/protocol), the contract the edge answers by; lists come in cursor pages,
// walked with `pages`.
import type { OpenAIErrorBody } from "../errors.ts";
import type { ListPage, PageParams } from "../protocol/list-page.ts";
import type { ModelObject } from "../protocol/openai.ts";
import type { PeftImportReport } from "../protocol/runner.ts";
import type { LinearModule } from "../protocol/adapter-rank.ts";
import type {
  AdapterObject,
  FileObject,
  FineTuningCheckpoint,
  FineTuningJob,
  FineTuningJobEvent,
  JobEstimate,
  UsageReport,
} from "../protocol/platform-objects.ts";
import { readSseJson } from "../protocol/sse.ts";

export type { AdapterObject, FileObject, FineTuningCheckpoint, FineTuningJob, JobEstimate, ListPage, ModelObject, PageParams, UsageReport };
/** One event of a fine-tuning job. */
export type JobEvent = FineTuningJobEvent;

export interface PicaClientOptions {
  baseUrl: string; // e.g. "http://127.0.0.1:8787"; "" for the page's own origin
  apiKey: string | null; // null: the browser's console session (its cookie) authenticates instead
  headers?: Record<string, string>; // sent on every request (the console's CSRF token)
  fetch?: typeof fetch;
}

/** An OpenAI-shaped error answered by the API. */
export class PicaApiError extends Error {
  override readonly name = "PicaApiError";
  constructor(
    readonly status: number,
    readonly body: OpenAIErrorBody["error"] | null,
  ) {
    super(body?.message ?? `the API answered ${status}`);
  }
}

export interface CreateJobParams {
  model: string;
  training_file: string;
  validation_file?: string;
  suffix?: string;
  seed?: number;
  hyperparameters?: {
    n_epochs?: number | "auto";
    batch_size?: number | "auto";
    learning_rate_multiplier?: number | "auto";
    rank?: number | "auto";
    weight_sharing?: boolean;
    target_modules?: LinearModule[]; // default: all seven linear modules
  };
}

export class PicaClient {
  private readonly baseUrl: string;
  private readonly fetch: typeof fetch;

  constructor(private readonly options: PicaClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.fetch = options.fetch ?? ((input, init) => fetch(input, init));
  }

  /** Uploads a JSONL training file (validated by the server, which names bad lines). */
  uploadFile(name: string, content: string | Uint8Array | Blob): Promise<FileObject> {
    const form = new FormData();
    form.set("purpose", "fine-tune");
    const blob = content instanceof Blob ? content : new Blob([content as Uint8Array<ArrayBuffer>], { type: "application/jsonl" });
    form.set("file", blob, name);
    return this.json("POST", "/v1/files", { body: form });
  }

  deleteFile(id: string): Promise<{ id: string; deleted: true }> {
    return this.json("DELETE", `/v1/files/${encodeURIComponent(id)}`);
  }

  /** A page of the tenant's files, newest first. */
  listFiles(params: PageParams = {}): Promise<ListPage<FileObject>> {
    return this.json("GET", `/v1/files${pageQuery(params)}`);
  }

  createJob(params: CreateJobParams): Promise<FineTuningJob> {
    return this.json("POST", "/v1/fine_tuning/jobs", { json: jobBody(params) });
  }

  /** What a job would train and take (epochs, tokens, seconds), validated as `createJob` would, without creating it. */
  estimateJob(params: CreateJobParams): Promise<JobEstimate> {
    return this.json("POST", "/v1/fine_tuning/jobs/estimate", { json: jobBody(params) });
  }

  /** A page of the tenant's fine-tuning jobs, newest first. */
  listJobs(params: PageParams = {}): Promise<ListPage<FineTuningJob>> {
    return this.json("GET", `/v1/fine_tuning/jobs${pageQuery(params)}`);
  }

  retrieveJob(id: string): Promise<FineTuningJob> {
    return this.json("GET", `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`);
  }

  cancelJob(id: string): Promise<FineTuningJob> {
    return this.json("POST", `/v1/fine_tuning/jobs/${encodeURIComponent(id)}/cancel`);
  }

  /** A page of a job's events, newest first (as OpenAI lists them); `after`: the last id of the previous page. */
  jobEvents(id: string, limit = 100, after?: string): Promise<ListPage<JobEvent>> {
    return this.json("GET", `/v1/fine_tuning/jobs/${encodeURIComponent(id)}/events${pageQuery({ limit, after })}`);
  }

  /** A page of the checkpoints a job keeps, newest step first; each `fine_tuned_model_checkpoint` is usable as a model. */
  listCheckpoints(jobId: string, params: PageParams = {}): Promise<ListPage<FineTuningCheckpoint>> {
    return this.json("GET", `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/checkpoints${pageQuery(params)}`);
  }

  /** A page of the models the tenant may use: the base model first, then fine-tuned and imported ones (checkpoints are under their job). */
  listModels(params: PageParams = {}): Promise<ListPage<ModelObject>> {
    return this.json("GET", `/v1/models${pageQuery(params)}`);
  }

  /** A page of the tenant's adapters (fine-tuned models, the checkpoints jobs keep, imports), newest first. */
  listAdapters(params: PageParams = {}): Promise<ListPage<AdapterObject>> {
    return this.json("GET", `/v1/adapters${pageQuery(params)}`);
  }

  retrieveAdapter(id: string): Promise<AdapterObject> {
    return this.json("GET", `/v1/adapters/${encodeURIComponent(id)}`);
  }

  deleteAdapter(id: string): Promise<{ id: string; deleted: true }> {
    return this.json("DELETE", `/v1/adapters/${encodeURIComponent(id)}`);
  }

  /** Tokens and requests per day and model over the last `days` days (one page of up to 31 days). */
  usage(days = 30): Promise<UsageReport> {
    const now = Math.floor(Date.now() / 1000);
    return this.json("GET", `/v1/usage?start_time=${now - days * 86_400}&limit=31`);
  }

  /**
   * Walks a list page by page, from `params.after` on, each request asking for `params.limit`
   * items (the list's default when unset), following `last_id` while `has_more`:
   * `for await (const page of client.pages((p) => client.listAdapters(p))) …`.
   */
  async *pages<Item>(list: (params: PageParams) => Promise<ListPage<Item>>, params: PageParams = {}): AsyncGenerator<ListPage<Item>, void, undefined> {
    let after = params.after;
    for (;;) {
      const page = await list({ ...params, after });
      yield page;
      if (!page.has_more) return;
      if (page.last_id === null || page.last_id === after)
        throw new Error(`the list says more items follow ${JSON.stringify(after ?? null)} but names no new last item`);
      after = page.last_id;
    }
  }

  /** The adapter as PEFT files (multipart: adapter_config, adapter_model). */
  async exportAdapter(id: string): Promise<{ adapterConfig: string; adapterModel: Uint8Array }> {
    const response = await this.send("GET", `/v1/adapters/${encodeURIComponent(id)}/export`);
    const form = await response.formData();
    const config = form.get("adapter_config");
    const model = form.get("adapter_model");
    if (config === null || model === null || typeof model === "string") throw new PicaApiError(response.status, null);
    return { adapterConfig: typeof config === "string" ? config : await config.text(), adapterModel: new Uint8Array(await model.arrayBuffer()) };
  }

  /** Imports a PEFT LoRA adapter (projected onto the basis by a runner). */
  importAdapter(
    name: string,
    adapterConfig: string,
    adapterModel: Uint8Array,
  ): Promise<{ id: string; import_report: PeftImportReport; [field: string]: unknown }> {
    const form = new FormData();
    form.set("name", name);
    form.set("adapter_config", new Blob([adapterConfig], { type: "application/json" }), "adapter_config.json");
    form.set("adapter_model", new Blob([adapterModel as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }), "adapter_model.safetensors");
    return this.json("POST", "/v1/adapters/import", { body: form });
  }

  /** Streams a chat completion's text. */
  chat(
    model: string,
    messages: { role: string; content: string }[],
    options: { max_tokens?: number; temperature?: number } = {},
    signal?: AbortSignal,
  ): AsyncIterable<string> {
    return this.stream("/v1/chat/completions", { model, messages, ...options, stream: true }, (chunk) => chunk.choices?.[0]?.delta?.content ?? "", signal);
  }

  /** Streams a text completion. */
  complete(model: string, prompt: string, options: { max_tokens?: number; temperature?: number } = {}): AsyncIterable<string> {
    return this.stream("/v1/completions", { model, prompt, ...options, stream: true }, (chunk) => chunk.choices?.[0]?.text ?? "");
  }

  private async *stream(path: string, body: unknown, text: (chunk: StreamChunk) => string, signal?: AbortSignal): AsyncIterable<string> {
    const response = await this.send("POST", path, { json: body, signal });
    if (response.body === null) return;
    for await (const event of readSseJson(response.body)) {
      const chunk = event as StreamChunk;
      if (chunk.error) throw new PicaApiError(500, chunk.error);
      const piece = text(chunk);
      if (piece) yield piece;
    }
  }

  private async json<T>(method: string, path: string, body: { json?: unknown; body?: FormData } = {}): Promise<T> {
    return (await (await this.send(method, path, body)).json()) as T;
  }

  private async send(method: string, path: string, body: { json?: unknown; body?: FormData; signal?: AbortSignal } = {}): Promise<Response> {
    const headers: Record<string, string> = { ...this.options.headers };
    if (this.options.apiKey !== null) headers.authorization = `Bearer ${this.options.apiKey}`;
    let payload: string | FormData | undefined = body.body;
    if (body.json !== undefined) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body.json);
    }
    let response: Response;
    try {
      response = await this.fetch(`${this.baseUrl}${path}`, { method, headers, body: payload, signal: body.signal });
    } catch (error) {
      throw new Error(`cannot reach ${this.baseUrl}: ${(error as Error).message}`, { cause: error });
    }
    if (!response.ok) {
      const error = (await response.json().catch(() => null)) as OpenAIErrorBody | null;
      throw new PicaApiError(response.status, error?.error ?? null);
    }
    return response;
  }
}

/** A job request's body: hyper-parameters go under the supervised method. */
function jobBody(params: CreateJobParams): Record<string, unknown> {
  const { hyperparameters, ...rest } = params;
  return { ...rest, ...(hyperparameters ? { method: { type: "supervised", supervised: { hyperparameters } } } : {}) };
}

/** `?limit=…&after=…` for the parameters given (nothing for none). */
function pageQuery(params: PageParams): string {
  const query = new URLSearchParams();
  if (params.limit !== undefined) query.set("limit", String(params.limit));
  if (params.after !== undefined) query.set("after", params.after);
  const text = query.toString();
  return text === "" ? "" : `?${text}`;
}

interface StreamChunk {
  choices?: { delta?: { content?: string }; text?: string }[];
  error?: OpenAIErrorBody["error"];
}
