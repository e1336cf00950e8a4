/**
 * Files: drop (or pick) a JSONL training file to upload; a refused file's bad lines are shown
 * beside their text, as the edge's validation names them. The list, newest first, with delete.
 */
import { useState } from "hono/jsx/dom";
import type { FileObject } from "../../../src/client/pica-client.ts";
import type { LineError } from "../../../src/training-data.ts";
import { DeleteButton, ErrorNote, formatBytes, PagedTable, Time, usePages } from "../components.tsx";
import { api, errorMessage, PicaApiError } from "../session.ts";

interface Refusal {
  filename: string;
  message: string;
  lines: (LineError & { text: string })[];
}

/** The longest stretch of a bad line shown beside its reason. */
const SHOWN_LINE_CHARACTERS = 160;

export function FilesPage() {
  const files = usePages((page) => api.listFiles(page));
  const [busy, setBusy] = useState(false);
  const [dragging, setDragging] = useState(false);
  const [uploaded, setUploaded] = useState<FileObject | null>(null);
  const [refusal, setRefusal] = useState<Refusal | null>(null);
  const [error, setError] = useState<string | null>(null);

  const upload = async (file: File | undefined) => {
    if (file === undefined) return;
    setBusy(true);
    setUploaded(null);
    setRefusal(null);
    setError(null);
    try {
      setUploaded(await api.uploadFile(file.name, file));
      files.reload();
    } catch (failure) {
      const lines = failure instanceof PicaApiError ? failure.body?.lines : undefined;
      if (lines === undefined) setError(errorMessage(failure));
      else {
        const text = (await file.text()).split("\n");
        setRefusal({
          filename: file.name,
          message: errorMessage(failure),
          lines: lines.map((line) => ({ ...line, text: (text[line.line - 1] ?? "").slice(0, SHOWN_LINE_CHARACTERS) })),
        });
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="files-title">
      <h1 id="files-title">Files</h1>
      <section
        aria-label="Upload a training file"
        class={`drop-zone${dragging ? " dragging" : ""}`}
        onDragOver={(event: DragEvent) => {
          event.preventDefault();
          setDragging(true);
        }}
        onDragLeave={() => setDragging(false)}
        onDrop={(event: DragEvent) => {
          event.preventDefault();
          setDragging(false);
          void upload(event.dataTransfer?.files[0]);
        }}
      >
        <label for="file-upload">Drop a JSONL training file here, or choose one</label>
        <input
          id="file-upload"
          type="file"
          accept=".jsonl,application/jsonl,application/x-ndjson,text/plain"
          disabled={busy}
          onChange={(event: Event) => {
            const input = event.target as HTMLInputElement;
            void upload(input.files?.[0]).finally(() => {
              input.value = "";
            });
          }}
        />
        <p class="hint">
          One example per line: chat <code>messages</code> or <code>prompt</code>/<code>completion</code>; at least 10 examples.
        </p>
        {busy ? <p role="status">Uploading and checking…</p> : null}
      </section>
      {uploaded ? (
        <p class="notice" role="status">
          Uploaded <span class="mono">{uploaded.filename}</span> as <span class="mono">{uploaded.id}</span>.
        </p>
      ) : null}
      <ErrorNote error={error} />
      {refusal ? (
        <div class="refusal" role="alert">
          <p class="error">
            <span class="mono">{refusal.filename}</span> was refused: {refusal.message}
          </p>
          <table class="line-errors">
            <caption>Bad lines</caption>
            <thead>
              <tr>
                <th scope="col">Line</th>
                <th scope="col">Content</th>
                <th scope="col">Problem</th>
              </tr>
            </thead>
            <tbody>
              {refusal.lines.map((line) => (
                <tr>
                  <td class="number">{line.line}</td>
                  <td>
                    <code>{line.text}</code>
                  </td>
                  <td>{line.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}

      <h2>Your files</h2>
      <PagedTable
        list={files}
        what="files"
        empty="No files yet."
        columns={["Name", "Id", "Size", "Uploaded", ""]}
        row={(file) => (
          <tr key={file.id}>
            <td class="file-name">{file.filename}</td>
            <td class="mono">{file.id}</td>
            <td>{formatBytes(file.bytes)}</td>
            <td>
              <Time seconds={file.created_at} />
            </td>
            <td>
              <DeleteButton
                what={file.filename}
                onDelete={async () => {
                  await api.deleteFile(file.id).catch((failure) => setError(errorMessage(failure)));
                  files.reload();
                }}
              />
            </td>
          </tr>
        )}
      />
    </section>
  );
}
