/**
 * New fine-tune: base model, training and validation files, suffix and the hyper-parameters
 * (epochs, batch size, rank, target modules, weight sharing, learning-rate multiplier; blank is
 * the platform's tuned "auto"), with the edge's own estimate of the job's tokens and time shown as
 * the form changes, before anything is launched.
 */
import { useEffect, useState } from "hono/jsx/dom";
import type { CreateJobParams, JobEstimate } from "../../../src/client/pica-client.ts";
import type { LinearModule } from "../../../src/protocol/adapter-rank.ts";
import { ErrorNote, formatCount, useLoad } from "../components.tsx";
import { href, navigate } from "../router.ts";
import { api, errorMessage } from "../session.ts";

interface Form {
  model: string;
  trainingFile: string;
  validationFile: string;
  suffix: string;
  epochs: string;
  batchSize: string;
  rank: string;
  modules: keyof typeof MODULE_CHOICES;
  weightSharing: boolean;
  learningRateMultiplier: string;
}

/** Target module choices: every linear module (the default), the PiCa paper's, attention or MLP only. */
const MODULE_CHOICES = {
  all: { label: "All seven (default)", modules: null },
  paper: { label: "q, k, v, up, down (the PiCa paper's)", modules: ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"] },
  attention: { label: "Attention: q, k, v, o", modules: ["q_proj", "k_proj", "v_proj", "o_proj"] },
  mlp: { label: "MLP: gate, up, down", modules: ["gate_proj", "up_proj", "down_proj"] },
} satisfies Record<string, { label: string; modules: LinearModule[] | null }>;

/** The request a form describes; blank numbers are the server's "auto" or default. */
function request(form: Form): CreateJobParams {
  const hyperparameters: NonNullable<CreateJobParams["hyperparameters"]> = { weight_sharing: form.weightSharing };
  if (form.epochs !== "") hyperparameters.n_epochs = Number(form.epochs);
  if (form.batchSize !== "") hyperparameters.batch_size = Number(form.batchSize);
  if (form.rank !== "") hyperparameters.rank = Number(form.rank);
  const modules = MODULE_CHOICES[form.modules].modules;
  if (modules !== null) hyperparameters.target_modules = [...modules];
  if (form.learningRateMultiplier !== "") hyperparameters.learning_rate_multiplier = Number(form.learningRateMultiplier);
  return {
    model: form.model,
    training_file: form.trainingFile,
    ...(form.validationFile !== "" ? { validation_file: form.validationFile } : {}),
    ...(form.suffix !== "" ? { suffix: form.suffix } : {}),
    hyperparameters,
  };
}

/** Seconds as "about 1 min 20 s". */
function duration(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  return minutes < 60 ? `${minutes} min ${Math.round(seconds % 60)} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function NewJobPage() {
  const choices = useLoad(async () => {
    const [models, files] = await Promise.all([api.listModels({ limit: 1000 }), api.listFiles({ limit: 1000 })]);
    return { bases: models.data.filter((m) => !m.id.includes(":")), files: files.data };
  }, []);
  const [form, setForm] = useState<Form>({
    model: "",
    trainingFile: "",
    validationFile: "",
    suffix: "",
    epochs: "",
    batchSize: "",
    rank: "",
    modules: "all",
    weightSharing: true,
    learningRateMultiplier: "",
  });
  const [estimate, setEstimate] = useState<{ value: JobEstimate | null; error: string | null }>({ value: null, error: null });
  const [launching, setLaunching] = useState(false);
  const [error, setError] = useState<string | null>(null);

  // First choices once they load: the base model and the newest file.
  useEffect(() => {
    if (choices.data === null) return;
    setForm((f) => ({ ...f, model: f.model || (choices.data!.bases[0]?.id ?? ""), trainingFile: f.trainingFile || (choices.data!.files[0]?.id ?? "") }));
  }, [choices.data]);

  // The estimate follows the form, a moment after it stops changing; until then there is none, so
  // what is launched is always what was estimated.
  useEffect(() => {
    setEstimate({ value: null, error: null });
    if (form.model === "" || form.trainingFile === "") return;
    let live = true;
    const timer = setTimeout(() => {
      api.estimateJob(request(form)).then(
        (value) => live && setEstimate({ value, error: null }),
        (failure) => live && setEstimate({ value: null, error: errorMessage(failure) }),
      );
    }, 250);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [form]);

  const set =
    (field: keyof Form) =>
    (event: Event): void => {
      const input = event.target as HTMLInputElement;
      setForm((f) => ({ ...f, [field]: input.type === "checkbox" ? input.checked : input.value }));
    };

  const launch = async (event: Event) => {
    event.preventDefault();
    setLaunching(true);
    setError(null);
    try {
      const job = await api.createJob(request(form));
      navigate(href(`jobs/${encodeURIComponent(job.id)}`));
    } catch (failure) {
      setError(errorMessage(failure));
      setLaunching(false);
    }
  };

  if (choices.data === null) return choices.error ? <ErrorNote error={choices.error} /> : <p>Loading…</p>;
  if (choices.data.files.length === 0)
    return (
      <section>
        <h1>New fine-tune</h1>
        <p class="empty">
          Upload a training file under <a href={href("files")}>Files</a> first.
        </p>
      </section>
    );
  const fileOptions = choices.data.files.map((file) => (
    <option value={file.id}>
      {file.filename} ({file.id})
    </option>
  ));
  return (
    <section aria-labelledby="new-job-title">
      <h1 id="new-job-title">New fine-tune</h1>
      <form class="job-form" onSubmit={launch}>
        <label for="job-model">Base model</label>
        <select id="job-model" value={form.model} onChange={set("model")}>
          {choices.data.bases.map((model) => (
            <option value={model.id}>{model.id}</option>
          ))}
        </select>
        <label for="job-training-file">Training file</label>
        <select id="job-training-file" value={form.trainingFile} onChange={set("trainingFile")}>
          {fileOptions}
        </select>
        <label for="job-validation-file">Validation file</label>
        <select id="job-validation-file" value={form.validationFile} onChange={set("validationFile")}>
          <option value="">None</option>
          {fileOptions}
        </select>
        <label for="job-suffix">Suffix</label>
        <input id="job-suffix" value={form.suffix} onInput={set("suffix")} maxLength={40} placeholder="e.g. support-bot" />
        <label for="job-epochs">Epochs</label>
        <input id="job-epochs" type="number" min="1" max="50" value={form.epochs} onInput={set("epochs")} placeholder="auto" />
        <label for="job-batch-size">Batch size</label>
        <input id="job-batch-size" type="number" min="1" max="256" value={form.batchSize} onInput={set("batchSize")} placeholder="auto" />
        <label for="job-rank">Rank</label>
        <input id="job-rank" type="number" min="1" max="256" value={form.rank} onInput={set("rank")} placeholder="auto" />
        <label for="job-modules">Target modules</label>
        <select id="job-modules" value={form.modules} onChange={set("modules")}>
          {Object.entries(MODULE_CHOICES).map(([value, choice]) => (
            <option value={value}>{choice.label}</option>
          ))}
        </select>
        <label for="job-learning-rate">Learning-rate multiplier</label>
        <input
          id="job-learning-rate"
          type="number"
          min="0"
          step="any"
          value={form.learningRateMultiplier}
          onInput={set("learningRateMultiplier")}
          placeholder="auto"
        />
        <span class="field-label" id="job-sharing-label">
          Weight sharing
        </span>
        <label class="checkbox">
          <input id="job-sharing" type="checkbox" checked={form.weightSharing} onChange={set("weightSharing")} aria-labelledby="job-sharing-label" />
          one adapter matrix per module type, shared by every layer
        </label>
        <div class="estimate" role="status" aria-live="polite">
          {estimate.value ? (
            <p>
              About <strong>{formatCount(estimate.value.estimated_tokens)}</strong> training tokens over {estimate.value.n_epochs} epoch
              {estimate.value.n_epochs === 1 ? "" : "s"} of {estimate.value.training_examples} examples (batch {estimate.value.batch_size}, rank{" "}
              {estimate.value.rank}), about <strong>{duration(estimate.value.estimated_seconds)}</strong>.
            </p>
          ) : null}
          <ErrorNote error={estimate.error} />
        </div>
        <ErrorNote error={error} />
        <button type="submit" disabled={launching || estimate.value === null}>
          {launching ? "Launching…" : "Launch fine-tune"}
        </button>
      </form>
    </section>
  );
}
