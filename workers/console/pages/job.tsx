/**
 * One job: its status timeline, training and validation loss and validation token accuracy as
 * they arrive (the events are polled while the job runs), the checkpoints it keeps (each a model
 * of its own), its events, cancel, and once it has succeeded the adapter id with code to call it.
 */
import { useEffect, useState } from "hono/jsx/dom";
import type { FineTuningCheckpoint, FineTuningJob, JobEvent } from "../../../src/client/pica-client.ts";
import { LineChart } from "../chart.tsx";
import { CopyButton, ErrorNote, formatCount, StatusBadge, TableHead, Time } from "../components.tsx";
import { href } from "../router.ts";
import { curves } from "../figures.ts";
import { api, errorMessage, PicaApiError } from "../session.ts";
import { Snippets } from "./snippets.tsx";

/** How often a running job is polled. */
const POLL_MILLISECONDS = 1_500;
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

interface Progress {
  job: FineTuningJob;
  events: JobEvent[]; // oldest first
  checkpoints: FineTuningCheckpoint[];
}

/** Every event of a job, oldest first (the API pages them newest first). */
async function allEvents(jobId: string, known: JobEvent[]): Promise<JobEvent[]> {
  const seen = new Set(known.map((e) => e.id));
  const fresh: JobEvent[] = [];
  for await (const page of api.pages((p) => api.jobEvents(jobId, p.limit ?? 100, p.after), { limit: 100 })) {
    const unseen = page.data.filter((e) => !seen.has(e.id));
    fresh.push(...unseen);
    if (unseen.length < page.data.length) break; // reached what we already have
  }
  return [...known, ...fresh.reverse()];
}

export function JobPage(props: { id: string }) {
  const [progress, setProgress] = useState<Progress | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [cancelling, setCancelling] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null); // what cancelling said; polling does not clear it
  const [generation, setGeneration] = useState(0); // bumped to read everything again at once

  useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let events: JobEvent[] = [];
    const poll = async () => {
      try {
        const [job, checkpoints] = await Promise.all([api.retrieveJob(props.id), api.listCheckpoints(props.id, { limit: 100 })]);
        events = await allEvents(props.id, events);
        if (!live) return;
        setProgress({ job, events, checkpoints: checkpoints.data });
        setError(null);
        if (!TERMINAL.has(job.status)) timer = setTimeout(poll, POLL_MILLISECONDS);
      } catch (failure) {
        if (!live) return;
        setError(errorMessage(failure));
        // A 4xx (no such job, a key without the scope) will not change by asking again; the rest may.
        const lasting = failure instanceof PicaApiError && failure.status >= 400 && failure.status < 500 && failure.status !== 429;
        if (!lasting) timer = setTimeout(poll, POLL_MILLISECONDS * 4);
      }
    };
    void poll();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [props.id, generation]);

  if (progress === null) return error ? <ErrorNote error={error} /> : <p>Loading…</p>;
  const { job, events, checkpoints } = progress;
  const { loss, accuracy } = curves(events);
  const statusEvents = events.filter((e, i) => i === 0 || e.type === "status"); // the first one says the job was created
  const cancel = async () => {
    setCancelling(true);
    setActionError(null);
    try {
      setProgress({ ...progress, job: await api.cancelJob(job.id) });
      setGeneration((g) => g + 1); // the cancellation's event, and the runner's last ones
    } catch (failure) {
      setActionError(errorMessage(failure));
    } finally {
      setCancelling(false);
    }
  };

  return (
    <section aria-labelledby="job-title">
      <div class="title-row">
        <h1 id="job-title">
          Job <span class="mono">{job.id}</span>
        </h1>
        <StatusBadge status={job.status} />
        {TERMINAL.has(job.status) ? null : (
          <button type="button" class="danger" onClick={cancel} disabled={cancelling}>
            {cancelling ? "Cancelling…" : "Cancel job"}
          </button>
        )}
      </div>
      <ErrorNote error={actionError} />
      <ErrorNote error={error} />
      {job.error ? (
        <p class="error" role="alert">
          {job.error.message} {job.error.code ? <span class="mono">({job.error.code})</span> : null}
        </p>
      ) : null}

      <dl class="facts">
        <dt>Model</dt>
        <dd class="mono">{job.model}</dd>
        <dt>Training file</dt>
        <dd class="mono">{job.training_file}</dd>
        <dt>Validation file</dt>
        <dd class="mono">{job.validation_file ?? "–"}</dd>
        <dt>Hyper-parameters</dt>
        <dd>
          epochs {String(job.method.supervised.hyperparameters.n_epochs)}, batch size {String(job.method.supervised.hyperparameters.batch_size)}, rank{" "}
          {job.method.supervised.hyperparameters.rank}, modules {(job.method.supervised.hyperparameters.target_modules ?? ["all"]).join(", ")}, weight sharing{" "}
          {job.method.supervised.hyperparameters.weight_sharing ? "on" : "off"}, learning-rate multiplier{" "}
          {String(job.method.supervised.hyperparameters.learning_rate_multiplier)}
        </dd>
        <dt>Trained tokens</dt>
        <dd>
          {formatCount(job.trained_tokens)} of about {formatCount(job.estimated_tokens)}
        </dd>
      </dl>

      {job.status === "succeeded" && job.fine_tuned_model ? (
        <div class="result">
          <h2>Fine-tuned model</h2>
          <p class="copy-row">
            <code id="fine-tuned-model">{job.fine_tuned_model}</code>
            <CopyButton text={job.fine_tuned_model} label="Copy the fine-tuned model id" />
            <a class="button" href={href("playground", { model: job.fine_tuned_model })}>
              Try it in the playground
            </a>
          </p>
          <Snippets model={job.fine_tuned_model} />
        </div>
      ) : null}

      <h2>Status</h2>
      <ol class="timeline">
        {statusEvents.map((event) => (
          <li>
            <Time seconds={event.created_at} /> <span>{event.message}</span>
          </li>
        ))}
      </ol>

      <h2>Loss</h2>
      <LineChart series={loss} xLabel="step" label={`Training${loss.length > 1 ? " and validation" : ""} loss per step`} />
      {accuracy[0].points.length > 0 ? (
        <>
          <h2>Validation token accuracy</h2>
          <LineChart series={accuracy} xLabel="step" label="Validation token accuracy per epoch" />
        </>
      ) : null}

      <h2>Checkpoints</h2>
      {checkpoints.length === 0 ? (
        <p class="empty">No checkpoints yet.</p>
      ) : (
        <table>
          <TableHead columns={["Step", "Model", "Training loss", ""]} />
          <tbody>
            {checkpoints.map((checkpoint) => (
              <tr key={checkpoint.id}>
                <td class="number">{checkpoint.step_number}</td>
                <td class="mono">{checkpoint.fine_tuned_model_checkpoint}</td>
                <td class="number">{checkpoint.metrics.train_loss?.toFixed(4) ?? "–"}</td>
                <td class="actions">
                  <CopyButton text={checkpoint.fine_tuned_model_checkpoint} label={`Copy checkpoint ${checkpoint.step_number}'s model id`} />
                  <a class="button secondary" href={href("playground", { model: checkpoint.fine_tuned_model_checkpoint })}>
                    Try
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2>Events</h2>
      <ol class="events" reversed>
        {[...events].reverse().map((event) => (
          <li class={`level-${event.level}`}>
            <Time seconds={event.created_at} /> <span>{event.message}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}
