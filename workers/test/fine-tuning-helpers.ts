/** Test helpers for files and fine-tuning jobs: training data, uploads, a fake training runner. */
import { call } from "./helpers.ts";

export const RUNNER_AUTH = { authorization: "Bearer test-runner-secret" };

/** A chat example line. */
export function chatLine(question: string, answer: string): string {
  return JSON.stringify({
    messages: [
      { role: "user", content: question },
      { role: "assistant", content: answer },
    ],
  });
}

/** A valid training file of `count` chat examples. */
export function trainingJsonl(count = 12): string {
  return `${Array.from({ length: count }, (_, i) => chatLine(`What is ${i} + 1?`, `${i + 1}`)).join("\n")}\n`;
}

/** Uploads `content` as a fine-tune file; the raw response. */
export async function upload(key: string, content: string | Uint8Array, options: { purpose?: string | null; filename?: string } = {}): Promise<Response> {
  const form = new FormData();
  if (options.purpose !== null) form.set("purpose", options.purpose ?? "fine-tune");
  form.set("file", new File([content], options.filename ?? "train.jsonl"));
  return call("POST", "/v1/files", { key, body: form });
}

/** Uploads a valid training file; its id. */
export async function uploadedFile(key: string, count = 12): Promise<string> {
  const response = await upload(key, trainingJsonl(count));
  if (response.status !== 200) throw new Error(`upload failed: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { id: string }).id;
}

/** Creates a job on a new file; the job object. */
export async function createdJob(key: string, extra: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const file = await uploadedFile(key);
  const response = await call("POST", "/v1/fine_tuning/jobs", { key, json: { model: "pica-base-4m", training_file: file, ...extra } });
  if (response.status !== 200) throw new Error(`job creation failed: ${response.status} ${await response.text()}`);
  return (await response.json()) as Record<string, any>;
}

/** Hex SHA-256 of bytes. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The runner's checkpoint callback for `step` of a job (bytes default to a few derived from the step); the raw response. */
export async function putCheckpoint(jobId: string, step: number, bytes = new Uint8Array([step % 251, 1, 2])): Promise<Response> {
  return call("PUT", `/internal/jobs/${jobId}/checkpoints/${step}`, { headers: { ...RUNNER_AUTH, "x-content-sha256": await sha256(bytes) }, body: bytes });
}

/** The runner's finished-adapter callback of a job (the job succeeds); the raw response. */
export async function putFinishedAdapter(jobId: string, bytes = new Uint8Array([7, 7, 7])): Promise<Response> {
  return call("PUT", `/internal/jobs/${jobId}/adapter`, { headers: { ...RUNNER_AUTH, "x-content-sha256": await sha256(bytes) }, body: bytes });
}
