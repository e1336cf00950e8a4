/** Code to call a fine-tuned model from curl, `openai` and `@huggingface/inference`, filled in for this deployment. */
import { useState } from "hono/jsx/dom";
import { CopyButton } from "../components.tsx";

const KEY_VARIABLE = "PICA_API_KEY";

/** The snippets, by client. */
export function snippets(origin: string, model: string): { name: string; code: string }[] {
  const json = JSON.stringify;
  const message = "Hello!";
  return [
    {
      name: "curl",
      code: [
        `curl ${origin}/v1/chat/completions \\`,
        `  -H "authorization: Bearer $${KEY_VARIABLE}" -H 'content-type: application/json' \\`,
        `  -d '${json({ model, messages: [{ role: "user", content: message }], max_tokens: 64 })}'`,
      ].join("\n"),
    },
    {
      name: "openai",
      code: [
        `import OpenAI from "openai";`,
        `const openai = new OpenAI({ baseURL: ${json(`${origin}/v1`)}, apiKey: process.env.${KEY_VARIABLE} });`,
        `const completion = await openai.chat.completions.create({`,
        `  model: ${json(model)},`,
        `  messages: [{ role: "user", content: ${json(message)} }],`,
        `});`,
        `console.log(completion.choices[0].message.content);`,
      ].join("\n"),
    },
    {
      name: "@huggingface/inference",
      code: [
        `import { InferenceClient } from "@huggingface/inference";`,
        `const hf = new InferenceClient(process.env.${KEY_VARIABLE}, { endpointUrl: ${json(origin)} });`,
        `const out = await hf.chatCompletion({ model: ${json(model)}, messages: [{ role: "user", content: ${json(message)} }], max_tokens: 64 });`,
        `console.log(out.choices[0].message.content);`,
      ].join("\n"),
    },
  ];
}

export function Snippets(props: { model: string }) {
  const all = snippets(window.location.origin, props.model);
  const [shown, setShown] = useState(0);
  return (
    <div class="snippets">
      <div role="tablist" aria-label="Code to call this model">
        {all.map((snippet, i) => (
          <button type="button" role="tab" aria-selected={i === shown} class={i === shown ? "tab selected" : "tab"} onClick={() => setShown(i)}>
            {snippet.name}
          </button>
        ))}
      </div>
      <div role="tabpanel" class="snippet">
        <pre>
          <code>{all[shown].code}</code>
        </pre>
        <CopyButton text={all[shown].code} label={`Copy the ${all[shown].name} snippet`} />
      </div>
      <p class="hint">Set {KEY_VARIABLE} to an API key with the inference scope.</p>
    </div>
  );
}
