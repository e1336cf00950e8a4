/**
 * `pica`: the platform from a terminal, on the typed client in src/client. Settings come from
 * `pica configure` (a file under ~/.config/pica, or $PICA_CONFIG) and PICA_URL / PICA_API_KEY,
 * which win. Every API error prints its message (with the lines a training file got wrong) and
 * exits 1.
 *
 *   pica configure --url URL --key KEY
 *   pica files upload FILE.jsonl | files list
 *   pica jobs create --file ID [--validation-file ID] [--suffix S] [--epochs N] [--batch-size N]
 *                    [--rank R] [--target-modules q_proj,v_proj,...] [--seed S] [--model M]
 *   pica jobs list | jobs checkpoints ID | jobs watch ID | jobs cancel ID
 *   pica models list
 *   pica chat --model M [--max-tokens N] [--temperature T] PROMPT
 *   pica complete --model M [--max-tokens N] [--temperature T] PROMPT
 *   pica adapters list | adapters export ID --out DIR | adapters import --name NAME DIR
 *
 * Every `list` (and `jobs checkpoints`) prints all items, page by page; `--limit N` prints at
 * most N and `--after ID` starts after an item, and when items remain stderr says how to go on.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { BASE_MODEL_ID } from "../src/constants.ts";
import type { LinearModule } from "../src/protocol/adapter-rank.ts";
import { PicaApiError, PicaClient, type FineTuningJob } from "../src/client/pica-client.ts";
import { PAGE_LIMITS, type ListName } from "../src/protocol/list-page.ts";
import { printList } from "./list-output.ts";
import { progressLine } from "./progress.ts";

const configPath = () => process.env.PICA_CONFIG || join(homedir(), ".config", "pica", "config.json");

async function settings(): Promise<{ url: string; key: string }> {
  const saved = (await readFile(configPath(), "utf8").then(
    (text) => JSON.parse(text) as { url?: string; key?: string },
    () => ({}),
  )) as { url?: string; key?: string };
  // An empty variable counts as unset.
  const url = process.env.PICA_URL || saved.url || "http://127.0.0.1:8787";
  const key = process.env.PICA_API_KEY || saved.key;
  if (!key) throw new UsageError("no API key: run `pica configure --url URL --key KEY` or set PICA_API_KEY");
  return { url, key };
}

class UsageError extends Error {}

// parseArgs names what it refuses (an unknown option, a value that looks like one); that is the user's to fix.
function usageOf<Result>(parse: () => Result): Result {
  try {
    return parse();
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

const out = (line: string) => process.stdout.write(`${line}\n`);

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = usageOf(() =>
    parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        url: { type: "string" },
        key: { type: "string" },
        file: { type: "string" },
        "validation-file": { type: "string" },
        suffix: { type: "string" },
        epochs: { type: "string" },
        "batch-size": { type: "string" },
        rank: { type: "string" },
        "target-modules": { type: "string" },
        seed: { type: "string" },
        model: { type: "string" },
        "max-tokens": { type: "string" },
        temperature: { type: "string" },
        out: { type: "string" },
        name: { type: "string" },
        limit: { type: "string" },
        after: { type: "string" },
      },
    }),
  );
  const [command, sub, ...rest] = positionals;
  const number = (name: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    const parsed = Number(value);
    if (!Number.isFinite(parsed)) throw new UsageError(`--${name} must be a number, got ${value}`);
    return parsed;
  };

  if (command === "configure") {
    if (values.url === undefined || values.key === undefined) throw new UsageError("pica configure --url URL --key KEY");
    await mkdir(dirname(configPath()), { recursive: true });
    await writeFile(configPath(), `${JSON.stringify({ url: values.url, key: values.key }, null, 2)}\n`, { mode: 0o600 });
    out(`saved to ${configPath()}`);
    return 0;
  }
  const limit = number("limit", values.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1))
    throw new UsageError(`--limit must be a whole number of at least 1, got ${values.limit}`);
  const { url, key } = await settings();
  const client = new PicaClient({ baseUrl: url, apiKey: key });
  const listing = (name: ListName, command: string) => ({ limit, after: values.after, pageSize: PAGE_LIMITS[name].max, command });
  const note = (line: string) => process.stderr.write(`${line}\n`);
  const sampling = { max_tokens: number("max-tokens", values["max-tokens"]), temperature: number("temperature", values.temperature) };

  // chat and complete take the prompt where other commands take a subcommand.
  switch (command === "chat" || command === "complete" ? command : `${command} ${sub ?? ""}`.trim()) {
    case "files upload": {
      if (rest[0] === undefined) throw new UsageError("pica files upload FILE.jsonl");
      const file = await client.uploadFile(basename(rest[0]), await readFile(rest[0]));
      out(`${file.id}  ${file.filename}  ${file.bytes} bytes`);
      return 0;
    }
    case "files list":
      await printList(
        client,
        (page) => client.listFiles(page),
        (file) => `${file.id}  ${file.filename}  ${file.bytes} bytes`,
        listing("files", "pica files list"),
        out,
        note,
      );
      return 0;
    case "jobs create": {
      if (values.file === undefined) throw new UsageError("pica jobs create --file FILE_ID [...]");
      const job = await client.createJob({
        model: values.model ?? BASE_MODEL_ID,
        training_file: values.file,
        validation_file: values["validation-file"],
        suffix: values.suffix,
        seed: number("seed", values.seed),
        hyperparameters: {
          n_epochs: number("epochs", values.epochs),
          batch_size: number("batch-size", values["batch-size"]),
          rank: number("rank", values.rank),
          // Checked by the edge, which names a module it does not know.
          target_modules: values["target-modules"]?.split(",").map((module) => module.trim()) as LinearModule[] | undefined,
        },
      });
      // The fine-tuned model's id exists only once the job succeeds; until then the job id is what to follow.
      out(`${job.id}  ${job.status}`);
      note(`follow it with: pica jobs watch ${job.id}`);
      return 0;
    }
    case "jobs list":
      await printList(
        client,
        (page) => client.listJobs(page),
        (job) => `${job.id}  ${job.status.padEnd(16)}  ${job.fine_tuned_model ?? ""}`,
        listing("jobs", "pica jobs list"),
        out,
        note,
      );
      return 0;
    case "jobs checkpoints": {
      const jobId = rest[0];
      if (jobId === undefined) throw new UsageError("pica jobs checkpoints JOB_ID [--limit N] [--after CHECKPOINT_ID]");
      await printList(
        client,
        (page) => client.listCheckpoints(jobId, page),
        (checkpoint) =>
          `${checkpoint.id}  step ${checkpoint.step_number}  loss ${checkpoint.metrics.train_loss?.toFixed(4) ?? "-"}  ${checkpoint.fine_tuned_model_checkpoint}`,
        listing("checkpoints", `pica jobs checkpoints ${jobId}`),
        out,
        note,
      );
      return 0;
    }
    case "models list":
      await printList(
        client,
        (page) => client.listModels(page),
        (model) => `${model.id}  ${model.owned_by}`,
        listing("models", "pica models list"),
        out,
        note,
      );
      return 0;
    case "jobs watch":
      if (sub === undefined || rest[0] === undefined) throw new UsageError("pica jobs watch JOB_ID");
      return watch(client, rest[0]);
    case "jobs cancel": {
      if (rest[0] === undefined) throw new UsageError("pica jobs cancel JOB_ID");
      const job = await client.cancelJob(rest[0]);
      out(`${job.id}  ${job.status}`);
      return 0;
    }
    case "chat":
    case "complete": {
      const prompt = [sub, ...rest].filter((part) => part !== undefined).join(" ");
      if (values.model === undefined || prompt === "") throw new UsageError(`pica ${command} --model MODEL PROMPT`);
      const pieces =
        command === "chat" ? client.chat(values.model, [{ role: "user", content: prompt }], sampling) : client.complete(values.model, prompt, sampling);
      for await (const piece of pieces) process.stdout.write(piece);
      process.stdout.write("\n");
      return 0;
    }
    case "adapters list":
      await printList(
        client,
        (page) => client.listAdapters(page),
        (adapter) => `${adapter.id}  ${adapter.source}`,
        listing("adapters", "pica adapters list"),
        out,
        note,
      );
      return 0;
    case "adapters export": {
      if (rest[0] === undefined || values.out === undefined) throw new UsageError("pica adapters export ADAPTER_ID --out DIR");
      const files = await client.exportAdapter(rest[0]);
      await mkdir(values.out, { recursive: true });
      await writeFile(join(values.out, "adapter_config.json"), files.adapterConfig);
      await writeFile(join(values.out, "adapter_model.safetensors"), files.adapterModel);
      out(`wrote ${join(values.out, "adapter_config.json")} and adapter_model.safetensors`);
      return 0;
    }
    case "adapters import": {
      if (rest[0] === undefined || values.name === undefined) throw new UsageError("pica adapters import --name NAME DIR");
      const adapter = await client.importAdapter(
        values.name,
        await readFile(join(rest[0], "adapter_config.json"), "utf8"),
        await readFile(join(rest[0], "adapter_model.safetensors")),
      );
      out(`${adapter.id}  ${JSON.stringify(adapter.import_report ?? null)}`);
      return 0;
    }
    default:
      throw new UsageError(`unknown command: ${positionals.join(" ") || "(none)"}; see the top of cli/main.ts or the README`);
  }
}

/** Follows a job to its end with a progress line (step, loss, ETA); exit 0 only for `succeeded`. */
async function watch(client: PicaClient, id: string): Promise<number> {
  const live = process.stdout.isTTY === true;
  let last = "";
  for (;;) {
    const job: FineTuningJob = await client.retrieveJob(id);
    const metrics = (await client.jobEvents(id, 20)).data.find((event) => event.type === "metrics" && event.data?.step !== undefined)?.data ?? null;
    const line = progressLine(job, metrics);
    if (line !== last) {
      process.stdout.write(live ? `\r\x1b[2K${line}` : `${line}\n`);
      last = line;
    }
    if (["succeeded", "failed", "cancelled"].includes(job.status)) {
      if (live) process.stdout.write("\n");
      if (job.status === "succeeded") out(`fine-tuned model: ${job.fine_tuned_model}`);
      else if (job.error) out(`error: ${job.error.message}`);
      return job.status === "succeeded" ? 0 : 1;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof PicaApiError) process.stderr.write(`error (${error.status}): ${error.message}${error.body?.param ? ` [${error.body.param}]` : ""}\n`);
    else process.stderr.write(`error: ${(error as Error).message}\n`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
