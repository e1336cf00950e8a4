/**
 * Adapters: every fine-tuned model, kept checkpoint and imported PEFT adapter; export one as
 * PEFT LoRA files, import PEFT files (the import reports how far the LoRA update is from its
 * projection onto the base model's PiCa basis), delete.
 */
import { useEffect, useState } from "hono/jsx/dom";
import type { AdapterObject } from "../../../src/client/pica-client.ts";
import { CopyButton, DeleteButton, ErrorNote, formatBytes, PagedTable, Time, usePages } from "../components.tsx";
import { href } from "../router.ts";
import { api, errorMessage } from "../session.ts";

/** Files of an exported adapter, as object URLs to save. */
interface Export {
  adapterId: string;
  config: string;
  model: string;
}

function projectionError(adapter: { import_report: { max_projection_error?: unknown } | null }): string {
  const error = adapter.import_report?.max_projection_error;
  return typeof error === "number" ? error.toExponential(2) : "–";
}

function ImportForm(props: { onImported: () => void }) {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<{ id: string; error: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: Event) => {
    event.preventDefault();
    const form = event.target as HTMLFormElement;
    const fields = new FormData(form);
    const config = fields.get("adapter_config");
    const model = fields.get("adapter_model");
    if (!(config instanceof File) || !(model instanceof File) || config.size === 0 || model.size === 0) {
      setError("Choose both PEFT files: adapter_config.json and adapter_model.safetensors.");
      return;
    }
    setBusy(true);
    setError(null);
    setResult(null);
    try {
      const imported = await api.importAdapter(String(fields.get("name")), await config.text(), new Uint8Array(await model.arrayBuffer()));
      setResult({ id: imported.id, error: projectionError(imported) });
      form.reset();
      props.onImported();
    } catch (failure) {
      setError(errorMessage(failure));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="import-form" onSubmit={submit}>
      <h2>Import a PEFT LoRA adapter</h2>
      <label for="import-name">Name</label>
      <input id="import-name" name="name" required pattern="[A-Za-z0-9_\-]{1,40}" placeholder="letters, digits, _ and -" />
      <label for="import-config">adapter_config.json</label>
      <input id="import-config" name="adapter_config" type="file" accept=".json,application/json" required />
      <label for="import-model">adapter_model.safetensors</label>
      <input id="import-model" name="adapter_model" type="file" accept=".safetensors" required />
      <button type="submit" disabled={busy}>
        {busy ? "Importing…" : "Import"}
      </button>
      <ErrorNote error={error} />
      {result ? (
        <p class="notice" role="status">
          Imported as <span class="mono">{result.id}</span>; largest relative projection error {result.error}.
        </p>
      ) : null}
    </form>
  );
}

export function AdaptersPage() {
  const adapters = usePages((page) => api.listAdapters(page));
  const [exported, setExported] = useState<Export | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(
    () => () => {
      if (exported) for (const url of [exported.config, exported.model]) URL.revokeObjectURL(url);
    },
    [exported],
  );
  const exportAdapter = async (adapter: AdapterObject) => {
    setError(null);
    try {
      const files = await api.exportAdapter(adapter.id);
      setExported({
        adapterId: adapter.id,
        config: URL.createObjectURL(new Blob([files.adapterConfig], { type: "application/json" })),
        model: URL.createObjectURL(new Blob([files.adapterModel as Uint8Array<ArrayBuffer>], { type: "application/octet-stream" })),
      });
    } catch (failure) {
      setError(errorMessage(failure));
    }
  };
  return (
    <section aria-labelledby="adapters-title">
      <h1 id="adapters-title">Adapters</h1>
      <ErrorNote error={error} />
      {exported ? (
        <div class="notice export" role="status">
          <p>
            <span class="mono">{exported.adapterId}</span> as PEFT LoRA:
          </p>
          <a class="button" href={exported.config} download="adapter_config.json">
            adapter_config.json
          </a>
          <a class="button" href={exported.model} download="adapter_model.safetensors">
            adapter_model.safetensors
          </a>
        </div>
      ) : null}
      <PagedTable
        list={adapters}
        what="adapters"
        empty="No adapters yet: a fine-tune that succeeds makes one, or import one below."
        columns={["Adapter", "Source", "Rank", "Size", "Projection error", "Created", ""]}
        row={(adapter) => (
          <tr key={adapter.id}>
            <td class="mono adapter-id">{adapter.id}</td>
            <td>{adapter.source.replace(/_/g, " ")}</td>
            <td class="number">{adapter.rank ?? "–"}</td>
            <td>{formatBytes(adapter.bytes)}</td>
            <td class="number">{projectionError(adapter)}</td>
            <td>
              <Time seconds={adapter.created_at} />
            </td>
            <td class="actions">
              <CopyButton text={adapter.id} label={`Copy the id of ${adapter.id}`} />
              <a class="button secondary" href={href("playground", { model: adapter.id })}>
                Try
              </a>
              <button type="button" class="secondary" aria-label={`Export ${adapter.id} as PEFT`} onClick={() => exportAdapter(adapter)}>
                Export
              </button>
              <DeleteButton
                what={adapter.id}
                onDelete={async () => {
                  await api.deleteAdapter(adapter.id).catch((failure) => setError(errorMessage(failure)));
                  adapters.reload();
                }}
              />
            </td>
          </tr>
        )}
      />
      <ImportForm onImported={adapters.reload} />
    </section>
  );
}
