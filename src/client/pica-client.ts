// A typed client for the platform's public API (the edge), on fetch alone so that it runs in
// Node, browsers and Workers. The CLI is built on it; the OpenAI-shaped routes work with the
// `openai` package too, this client adds the PiCa-specific ones and one error type.
import type { OpenAIErrorBody } from "../errors.ts";
import { readSseJson } from "../protocol/sse.ts";

export interface PicaClientOptions {
  baseUrl: string; // e.g. "http://127.0.0.1:8787"
  apiKey: string;
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

export interface FineTuningJob {
  id: string;
  status: string;
  model: string;
  fine_tuned_model: string | null;
  training_file: string;
  created_at: number;
  finished_at: number | null;
  trained_tokens: number | null;
  estimated_finish?: number | null;
  error: { code: string; message: string; param: string | null } | null;
  [field: string]: unknown;
}

export interface JobEvent {
  id: string;
  created_at: number;
  level: string;
  message: string;
  type: string;
  data: Record<string, unknown> | null;
}

export interface ListPage<Item> {
  data: Item[];
  has_more: boolean;
  last_id?: string | null;
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
    rank?: number;
    weight_sharing?: boolean;
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
  uploadFile(name: string, content: string | Uint8Array): Promise<{ id: string; bytes: number; filename: string }> {
    const form = new FormData();
    form.set("purpose", "fine-tune");
    form.set("file", new Blob([content as Uint8Array<ArrayBuffer>], { type: "application/jsonl" }), name);
    return this.json("POST", "/v1/files", { body: form });
  }

  listFiles(): Promise<ListPage<{ id: string; filename: string; bytes: number; created_at: number }>> {
    return this.json("GET", "/v1/files");
  }

  createJob(params: CreateJobParams): Promise<FineTuningJob> {
    const { hyperparameters, ...rest } = params;
    return this.json("POST", "/v1/fine_tuning/jobs", {
      json: { ...rest, ...(hyperparameters ? { method: { type: "supervised", supervised: { hyperparameters } } } : {}) },
    });
  }

  listJobs(limit = 20): Promise<ListPage<FineTuningJob>> {
    return this.json("GET", `/v1/fine_tuning/jobs?limit=${limit}`);
  }

  retrieveJob(id: string): Promise<FineTuningJob> {
    return this.json("GET", `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`);
  }

  cancelJob(id: string): Promise<FineTuningJob> {
    return this.json("POST", `/v1/fine_tuning/jobs/${encodeURIComponent(id)}/cancel`);
  }

  /** A page of a job's events, newest first (as OpenAI lists them); `after`: the last id of the previous page. */
  jobEvents(id: string, limit = 100, after?: string): Promise<ListPage<JobEvent>> {
    const query = new URLSearchParams({ limit: String(limit), ...(after !== undefined ? { after } : {}) });
    return this.json("GET", `/v1/fine_tuning/jobs/${encodeURIComponent(id)}/events?${query}`);
  }

  listAdapters(): Promise<ListPage<{ id: string; created_at: number; [field: string]: unknown }>> {
    return this.json("GET", "/v1/adapters");
  }

  retrieveAdapter(id: string): Promise<{ id: string; sha256: string; [field: string]: unknown }> {
    return this.json("GET", `/v1/adapters/${encodeURIComponent(id)}`);
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
  importAdapter(name: string, adapterConfig: string, adapterModel: Uint8Array): Promise<{ id: string; [field: string]: unknown }> {
    const form = new FormData();
    form.set("name", name);
    form.set("adapter_config", new Blob([adapterConfig], { type: "application/json" }), "adapter_config.json");
    form.set("adapter_model", new Blob([adapterModel as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" }), "adapter_model.safetensors");
    return this.json("POST", "/v1/adapters/import", { body: form });
  }

  /** Streams a chat completion's text. */
  chat(model: string, messages: { role: string; content: string }[], options: { max_tokens?: number; temperature?: number } = {}): AsyncIterable<string> {
    return this.stream("/v1/chat/completions", { model, messages, ...options, stream: true }, (chunk) => chunk.choices?.[0]?.delta?.content ?? "");
  }

  /** Streams a text completion. */
  complete(model: string, prompt: string, options: { max_tokens?: number; temperature?: number } = {}): AsyncIterable<string> {
    return this.stream("/v1/completions", { model, prompt, ...options, stream: true }, (chunk) => chunk.choices?.[0]?.text ?? "");
  }

  private async *stream(path: string, body: unknown, text: (chunk: StreamChunk) => string): AsyncIterable<string> {
    const response = await this.send("POST", path, { json: body });
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

  private async send(method: string, path: string, body: { json?: unknown; body?: FormData } = {}): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.options.apiKey}` };
    let payload: string | FormData | undefined = body.body;
    if (body.json !== undefined) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(body.json);
    }
    let response: Response;
    try {
      response = await this.fetch(`${this.baseUrl}${path}`, { method, headers, body: payload });
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

interface StreamChunk {
  choices?: { delta?: { content?: string }; text?: string }[];
  error?: OpenAIErrorBody["error"];
}
