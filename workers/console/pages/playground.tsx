/**
 * Playground: one conversation sent to an adapter and to the base model side by side, each
 * answer streamed as it is generated, with temperature and a token limit. Each side keeps its
 * own replies as its history.
 */
import { useEffect, useRef, useState } from "hono/jsx/dom";
import { ErrorNote, useLoad } from "../components.tsx";
import { api, errorMessage } from "../session.ts";

interface Turn {
  role: "user" | "assistant";
  content: string;
}

interface Side {
  model: string;
  turns: Turn[];
  error: string | null;
}

function Transcript(props: { title: string; side: Side; testId: string }) {
  return (
    <section class="transcript" aria-label={`${props.title}: conversation`} data-side={props.testId}>
      <h2>
        {props.title} <span class="mono model-name">{props.side.model}</span>
      </h2>
      <ol aria-live="polite">
        {props.side.turns.map((turn) => (
          <li class={`turn ${turn.role}`}>
            <span class="visually-hidden">{turn.role === "user" ? "You:" : "Model:"}</span>
            {turn.content}
          </li>
        ))}
      </ol>
      <ErrorNote error={props.side.error} />
    </section>
  );
}

export function PlaygroundPage(props: { model: string | null }) {
  const models = useLoad(() => api.listModels({ limit: 1000 }), []);
  const [chosen, setChosen] = useState<string | null>(props.model);
  const [temperature, setTemperature] = useState("0.7");
  const [maxTokens, setMaxTokens] = useState("64");
  const [message, setMessage] = useState("");
  const [sides, setSides] = useState<{ adapter: Turn[]; base: Turn[] }>({ adapter: [], base: [] });
  const [errors, setErrors] = useState<{ adapter: string | null; base: string | null }>({ adapter: null, base: null });
  const [streaming, setStreaming] = useState(false);
  const abort = useRef<AbortController | null>(null);
  const conversation = useRef(0); // bumped when the conversation is cleared: a late piece of an old answer is dropped
  // Leaving the page stops the answers (and frees the tenant's concurrent streams).
  useEffect(() => () => abort.current?.abort(), []);

  if (models.data === null) return models.error ? <ErrorNote error={models.error} /> : <p>Loading…</p>;
  const base = models.data.data.find((m) => !m.id.includes(":"))?.id ?? "";
  const adapters = models.data.data.filter((m) => m.id !== base).map((m) => m.id);
  if (chosen !== null && !adapters.includes(chosen)) adapters.unshift(chosen); // a checkpoint, listed under its job
  const adapter = chosen ?? adapters[0] ?? "";

  const clear = () => {
    conversation.current++;
    setSides({ adapter: [], base: [] });
    setErrors({ adapter: null, base: null });
  };

  const send = async (event: Event) => {
    event.preventDefault();
    const text = message.trim();
    if (text === "" || adapter === "") return;
    const controller = new AbortController();
    abort.current = controller;
    setMessage("");
    setStreaming(true);
    setErrors({ adapter: null, base: null });
    const options = { temperature: Number(temperature), max_tokens: Number(maxTokens) };
    const mine = conversation.current;
    const run = async (which: "adapter" | "base", model: string) => {
      const history = [...sides[which], { role: "user" as const, content: text }];
      let reply = "";
      setSides((s) => ({ ...s, [which]: [...history, { role: "assistant", content: "" }] }));
      try {
        for await (const piece of api.chat(model, history, options, controller.signal)) {
          if (mine !== conversation.current) return;
          reply += piece;
          const content = reply;
          setSides((s) => ({ ...s, [which]: [...history, { role: "assistant", content }] }));
        }
      } catch (failure) {
        if (!controller.signal.aborted) setErrors((e) => ({ ...e, [which]: errorMessage(failure) }));
      }
    };
    await Promise.all([run("adapter", adapter), run("base", base)]);
    setStreaming(false);
  };

  return (
    <section aria-labelledby="playground-title">
      <h1 id="playground-title">Playground</h1>
      <form class="playground-settings" onSubmit={send}>
        <label for="playground-model">Adapter</label>
        <select
          id="playground-model"
          value={adapter}
          disabled={streaming}
          onChange={(event: Event) => {
            setChosen((event.target as HTMLSelectElement).value);
            clear();
          }}
        >
          {adapters.map((id) => (
            <option value={id}>{id}</option>
          ))}
        </select>
        <label for="playground-temperature">Temperature</label>
        <input
          id="playground-temperature"
          type="number"
          min="0"
          max="2"
          step="0.1"
          value={temperature}
          onInput={(event: Event) => setTemperature((event.target as HTMLInputElement).value)}
        />
        <label for="playground-max-tokens">Max tokens</label>
        <input
          id="playground-max-tokens"
          type="number"
          min="1"
          max="4096"
          value={maxTokens}
          onInput={(event: Event) => setMaxTokens((event.target as HTMLInputElement).value)}
        />
        <label for="playground-message">Message</label>
        <textarea
          id="playground-message"
          rows={3}
          value={message}
          onInput={(event: Event) => setMessage((event.target as HTMLTextAreaElement).value)}
          onKeyDown={(event: KeyboardEvent) => {
            if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) (event.target as HTMLTextAreaElement).form?.requestSubmit();
          }}
        />
        <div class="buttons">
          <button type="submit" disabled={streaming || adapter === ""}>
            Send
          </button>
          <button type="button" class="secondary" disabled={!streaming} onClick={() => abort.current?.abort()}>
            Stop
          </button>
          <button type="button" class="secondary" disabled={streaming} onClick={clear}>
            Clear
          </button>
        </div>
        {adapter === "" ? <p class="empty">No adapters yet: the playground compares one with the base model.</p> : null}
      </form>
      <div class="side-by-side">
        <Transcript title="Adapter" side={{ model: adapter, turns: sides.adapter, error: errors.adapter }} testId="adapter" />
        <Transcript title="Base model" side={{ model: base, turns: sides.base, error: errors.base }} testId="base" />
      </div>
    </section>
  );
}
