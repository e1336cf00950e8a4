/** Fine-tuning jobs, newest first: status, model, size; each opens its own page. */
import { formatCount, PagedTable, StatusBadge, Time, usePages } from "../components.tsx";
import { href } from "../router.ts";
import { api } from "../session.ts";

export function JobsPage() {
  const jobs = usePages((page) => api.listJobs(page));
  return (
    <section aria-labelledby="jobs-title">
      <div class="title-row">
        <h1 id="jobs-title">Fine-tuning jobs</h1>
        <a class="button" href={href("fine-tune")}>
          New fine-tune
        </a>
      </div>
      <PagedTable
        list={jobs}
        what="jobs"
        empty={
          <>
            No jobs yet. Upload a training file under <a href={href("files")}>Files</a>, then start a <a href={href("fine-tune")}>fine-tune</a>.
          </>
        }
        columns={["Job", "Status", "Suffix", "Trained tokens", "Created"]}
        row={(job) => (
          <tr key={job.id}>
            <td>
              <a class="mono" href={href(`jobs/${encodeURIComponent(job.id)}`)}>
                {job.id}
              </a>
            </td>
            <td>
              <StatusBadge status={job.status} />
            </td>
            <td>{job.user_provided_suffix ?? "–"}</td>
            <td>{formatCount(job.trained_tokens)}</td>
            <td>
              <Time seconds={job.created_at} />
            </td>
          </tr>
        )}
      />
    </section>
  );
}
