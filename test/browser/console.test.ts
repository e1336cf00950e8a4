/**
 * The tenant console in a real Chromium against the local stack (`npm start`'s script on the
 * shipped model): sign in, upload a bad file and see its line errors, upload good ones, start a
 * short job and watch its loss curve grow until it succeeds, chat with the adapter beside the
 * base model, export it, read usage, sign out; another tenant sees none of it; tenant strings
 * render as text; the session cookie is HttpOnly and the key is in no browser storage.
 * Screenshots of each page at 1280×800 go to .cache/console-screenshots, or to docs/console with
 * UPDATE_SCREENSHOTS=1 (the ones the README shows).
 */
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { classifyTask, toChatJsonl } from "../../bench/quality-tasks.ts";
import { createTenantWithKey } from "../../stack/admin.ts";
import { stackAdminToken, startStack, type StackProcess } from "../../stack/stack-process.ts";
import { launchChromium } from "./chromium.ts";

const ROOT = join(import.meta.dirname, "..", "..");
const SCREENSHOTS = process.env.UPDATE_SCREENSHOTS === "1" ? join(ROOT, "docs", "console") : join(ROOT, ".cache", "console-screenshots");
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const HOSTILE_NAME = "<img src=x onerror=alert(1)>";

describe("the tenant console in Chromium", () => {
  let directory: string;
  let stack: StackProcess;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let otherKey: string;
  const dialogs: string[] = [];
  const pageProblems: string[] = []; // uncaught exceptions and content-security-policy refusals, on any page

  /** Records what goes wrong on a page that no assertion would otherwise see. */
  function watch(target: Page): Page {
    target.on("pageerror", (error) => pageProblems.push(`exception: ${error.message}`));
    target.on("console", (message) => {
      if (/Content Security Policy/i.test(message.text())) pageProblems.push(`CSP: ${message.text()}`);
    });
    return target;
  }
  const task = classifyTask({ train: 96, eval: 24 });

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "pica-console-"));
    await mkdir(SCREENSHOTS, { recursive: true });
    [stack, browser] = await Promise.all([startStack(directory), launchChromium()]);
    otherKey = (await createTenantWithKey(stack.edgeUrl, await stackAdminToken(directory), { name: "other" })).key;
    context = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true });
    page = watch(await context.newPage());
    page.on("dialog", (dialog) => {
      dialogs.push(dialog.message());
      void dialog.dismiss();
    });
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
    await rm(directory, { recursive: true, force: true });
  });

  // One story told in steps: once a step fails, the later ones (which build on it) are skipped.
  let failed = false;
  beforeEach((context) => {
    if (failed) context.skip();
  });
  afterEach((context) => {
    if (context.task.result?.state === "fail") failed = true;
    expect(pageProblems).toEqual([]);
  });

  const url = (path: string) => `${stack.edgeUrl}${path}`;
  /** Follows a link of the console's navigation bar. */
  const nav = (name: string) => page.getByRole("navigation", { name: "Console" }).getByRole("link", { name, exact: true }).click();
  const shot = (name: string) => page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });

  /** Every form control on the page has a label (its own, aria-label or aria-labelledby). */
  async function unlabelledControls(): Promise<string[]> {
    return page.$$eval("input:not([type=hidden]), select, textarea", (controls) =>
      controls
        .filter((c) => (c as HTMLInputElement).labels?.length === 0 && !c.getAttribute("aria-label") && !c.getAttribute("aria-labelledby"))
        .map((c) => c.outerHTML),
    );
  }

  /** What sticks out of a phone's width (the page would scroll sideways): nothing, when it fits. */
  async function overflowAtPhoneWidth(): Promise<string[]> {
    await page.setViewportSize(PHONE);
    const sticking = await page.evaluate((width) => {
      if (document.documentElement.scrollWidth <= width) return [];
      // What sticks out, less what a scrolling box (a wide table) holds inside itself.
      const clipped = (element: Element) => {
        for (let parent = element.parentElement; parent !== null; parent = parent.parentElement)
          if (getComputedStyle(parent).overflowX !== "visible") return true;
        return false;
      };
      const sticking = [...document.querySelectorAll("body *")]
        .filter((element) => element.getBoundingClientRect().right > width + 1 && !clipped(element))
        .map((element) => `${element.tagName.toLowerCase()}.${element.className}: ${Math.round(element.getBoundingClientRect().right)}px`);
      return sticking.length > 0 ? sticking : [`the page, ${document.documentElement.scrollWidth}px wide`];
    }, PHONE.width);
    await page.setViewportSize(DESKTOP);
    return sticking;
  }

  /** Drops a file on the page's drop zone, as dragging it from the desktop does. */
  async function dropFile(name: string, text: string) {
    await page.evaluate(
      ({ name, text }) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([text], name, { type: "application/jsonl" }));
        document.querySelector(".drop-zone")!.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
      },
      { name, text },
    );
  }

  async function signIn(target: Page, key: string) {
    await target.goto(url("/console"));
    expect(new URL(target.url()).pathname).toBe("/console/sign-in");
    // The key field has focus on arrival: typing and Enter sign in, no mouse needed.
    await target.bringToFront();
    expect(await target.evaluate(() => document.activeElement?.id)).toBe("api-key");
    await target.keyboard.type(key);
    await target.keyboard.press("Enter");
    await target.waitForURL(url("/console"));
    await target.getByRole("heading", { name: "Fine-tuning jobs", level: 1 }).waitFor();
  }

  let jobId = "";
  let adapter = "";

  it("signs in with an API key into an HttpOnly session, the key in no browser storage", async () => {
    await page.goto(url("/console"));
    await shot("sign-in");
    await signIn(page, stack.key);
    const cookies = await context.cookies();
    expect(cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite }))).toEqual([
      { name: "pica_session", httpOnly: true, sameSite: "Strict" },
    ]);
    expect(cookies[0].value).not.toContain(stack.key);
    const stored = await page.evaluate(() => JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage }, cookie: document.cookie }));
    expect(stored).toBe(JSON.stringify({ local: {}, session: {}, cookie: "" }));
    expect(await page.content()).not.toContain(stack.key);
    await shot("jobs-empty");
  });

  it("shows a refused file's errors beside its lines, and lists good files with their names as text", async () => {
    await nav("Files");
    await page.getByRole("heading", { name: "Files", level: 1 }).waitFor();
    const lines = toChatJsonl(task.train.slice(0, 12)).trim().split("\n");
    lines[3] = "{not json";
    lines[7] = JSON.stringify({ messages: [{ role: "user", content: "no answer here" }] });
    await dropFile("bad.jsonl", lines.join("\n"));
    const rows = page.locator("table.line-errors tbody tr");
    await rows.first().waitFor();
    const shown = await rows.evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent)));
    expect(shown).toEqual([
      ["4", "{not json", expect.stringContaining("invalid JSON")],
      ["8", lines[7], expect.stringContaining("no assistant message")],
    ]);
    await shot("files-refused");

    // A good file under a hostile name, through the file picker (the keyboard's way in).
    await page
      .locator("#file-upload")
      .setInputFiles({ name: `${HOSTILE_NAME}.jsonl`, mimeType: "application/jsonl", buffer: Buffer.from(toChatJsonl(task.train)) });
    await page.locator("p.notice", { hasText: "Uploaded" }).waitFor();
    await dropFile("validation.jsonl", toChatJsonl(task.eval));
    await page.locator("td.file-name", { hasText: "validation.jsonl" }).waitFor();
    expect((await page.locator("td.file-name").allTextContents()).sort()).toEqual([`${HOSTILE_NAME}.jsonl`, "validation.jsonl"]);
    expect(await page.locator("main img").count()).toBe(0);
    expect(dialogs).toEqual([]);
    expect(await unlabelledControls()).toEqual([]);
    expect(await overflowAtPhoneWidth()).toEqual([]);
    await shot("files");
  });

  it("estimates a fine-tune before launching it, and launches it", async () => {
    await nav("New fine-tune");
    const hostileFile = await page.locator("#job-training-file option", { hasText: HOSTILE_NAME }).getAttribute("value");
    await page.getByLabel("Training file", { exact: true }).selectOption(hostileFile!);
    const validationFile = await page.locator("#job-validation-file option", { hasText: "validation.jsonl" }).getAttribute("value");
    await page.getByLabel("Validation file", { exact: true }).selectOption(validationFile!);
    await page.getByLabel("Suffix", { exact: true }).fill("mood");
    await page.getByLabel("Epochs", { exact: true }).fill("4");
    await page.getByLabel("Rank", { exact: true }).fill("8");
    const estimate = page.locator(".estimate");
    await estimate.getByText("over 4 epochs of 96 examples").waitFor();
    expect(await estimate.textContent()).toMatch(/About [\d,]+ training tokens over 4 epochs of 96 examples \(batch \d+, rank 8\), about \d+ s/);
    expect(await unlabelledControls()).toEqual([]);
    expect(await overflowAtPhoneWidth()).toEqual([]);
    await shot("new-fine-tune");
    await page.getByRole("button", { name: "Launch fine-tune" }).click();
    await page.waitForURL(/\/console\/jobs\/ftjob-/);
    jobId = decodeURIComponent(new URL(page.url()).pathname.split("/").pop()!);
  });

  it("follows the job: the loss curve gains points while it runs, then it succeeds with its model id and snippets", async () => {
    const points = async () => {
      const line = page.locator("polyline.series-0").first();
      return (await line.count()) === 0 ? 0 : ((await line.getAttribute("points")) ?? "").trim().split(/\s+/).length;
    };
    await page.waitForFunction(() => document.querySelector("polyline.series-0") !== null, null, { timeout: 300_000 });
    const first = await points();
    await page.waitForFunction(
      (count) => (document.querySelector("polyline.series-0")?.getAttribute("points") ?? "").trim().split(/\s+/).length > count,
      first,
      {
        timeout: 300_000,
      },
    );
    expect(await points()).toBeGreaterThan(first);
    await page.locator(".badge.status-succeeded").waitFor({ timeout: 600_000 });
    adapter = (await page.locator("#fine-tuned-model").textContent()) ?? "";
    expect(adapter).toMatch(new RegExp(`^ft:pica-base-4m:tenant_[^:]+:mood:${jobId}$`));
    // The estimate was of the right size: the tokens trained are within half of it either way.
    const [trained, estimated] = ((await page.locator("dt:has-text('Trained tokens') + dd").textContent()) ?? "")
      .split(" of about ")
      .map((text) => Number(text.replace(/,/g, "")));
    expect(trained / estimated).toBeGreaterThan(2 / 3);
    expect(trained / estimated).toBeLessThan(3 / 2);
    expect(await page.locator("polyline.series-1").count()).toBe(1); // validation loss
    expect(await page.locator("figcaption").first().textContent()).toContain("validation loss");
    expect(await page.locator(".snippet code").textContent()).toContain(`${stack.edgeUrl}/v1/chat/completions`);
    expect(await page.locator(".snippet code").textContent()).toContain(adapter);
    await page.getByRole("tab", { name: "openai" }).click();
    expect(await page.locator(".snippet code").textContent()).toContain(`baseURL: "${stack.edgeUrl}/v1"`);
    const checkpoints = await page.locator("table tbody tr td.mono").allTextContents();
    expect(checkpoints.length).toBeGreaterThan(0);
    for (const id of checkpoints) expect(id).toMatch(new RegExp(`^${adapter.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:ckpt-step-\\d+$`));
    expect(await overflowAtPhoneWidth()).toEqual([]);
    await shot("job");
  });

  it("chats with the adapter beside the base model, streamed", async () => {
    await page.getByRole("link", { name: "Try it in the playground" }).click();
    await page.getByRole("heading", { name: "Playground", level: 1 }).waitFor();
    expect(await page.getByLabel("Adapter", { exact: true }).inputValue()).toBe(adapter);
    await page.getByLabel("Temperature", { exact: true }).fill("0");
    await page.getByLabel("Max tokens", { exact: true }).fill("8");
    await page.getByLabel("Message", { exact: true }).fill(task.eval[0].prompt);
    const streams: string[] = [];
    page.on("response", (response) => {
      if (response.url().endsWith("/v1/chat/completions")) streams.push(response.headers()["content-type"] ?? "");
    });
    await page.getByRole("button", { name: "Send" }).click();
    await page.waitForFunction(
      () =>
        document.querySelectorAll(".transcript .turn.assistant").length === 2 &&
        !document.querySelector(".playground-settings button[type=submit]")?.hasAttribute("disabled"),
    );
    const answers = await page.locator(".transcript .turn.assistant").allTextContents();
    expect(answers.map((a) => a.replace(/^Model:/, "").trim().length > 0)).toEqual([true, true]);
    // The adapter learnt the task's labels; the base model never saw them.
    expect(answers[0]).toContain(task.eval[0].answer);
    expect(streams).toEqual(["text/event-stream", "text/event-stream"].map((type) => expect.stringContaining(type)) as never);
    expect(await page.locator(".transcript .error").count()).toBe(0);
    expect(await unlabelledControls()).toEqual([]);
    expect(await overflowAtPhoneWidth()).toEqual([]);
    await shot("playground");
  });

  it("exports the adapter as PEFT files, imports them back with their projection error, and deletes the import", async () => {
    await nav("Adapters");
    await page.locator("td.adapter-id", { hasText: adapter }).first().waitFor();
    await page.getByRole("button", { name: `Export ${adapter} as PEFT`, exact: true }).click();
    const save = async (name: string) => {
      const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name }).click()]);
      expect(download.suggestedFilename()).toBe(name);
      return readFile(await download.path());
    };
    const model = await save("adapter_model.safetensors");
    const config = await save("adapter_config.json");
    const header = JSON.parse(model.subarray(8, 8 + Number(model.readBigUInt64LE(0))).toString("utf8")) as Record<string, unknown>;
    expect(Object.keys(header).some((name) => name.endsWith("lora_A.weight"))).toBe(true);
    expect(JSON.parse(config.toString("utf8"))).toMatchObject({ peft_type: "LORA" });
    expect(await unlabelledControls()).toEqual([]);
    expect(await overflowAtPhoneWidth()).toEqual([]);
    await shot("adapters");

    // What PiCa exported as LoRA lies in the basis already: it comes back with a projection error of about zero.
    await page.getByLabel("Name", { exact: true }).fill("roundtrip");
    await page.getByLabel("adapter_config.json", { exact: true }).setInputFiles({ name: "adapter_config.json", mimeType: "application/json", buffer: config });
    await page
      .getByLabel("adapter_model.safetensors", { exact: true })
      .setInputFiles({ name: "adapter_model.safetensors", mimeType: "application/octet-stream", buffer: model });
    await page.getByRole("button", { name: "Import", exact: true }).click();
    const imported = page.locator("p.notice", { hasText: "Imported as" });
    await imported.waitFor();
    const [, id, error] = /Imported as (peft:\S+); largest relative projection error (\S+)\./.exec((await imported.textContent()) ?? "") ?? [];
    expect(Number(error)).toBeLessThan(1e-3);
    const row = page.locator("tr", { has: page.locator("td.adapter-id", { hasText: id }) });
    await row.waitFor();
    expect(await row.locator("td").nth(1).textContent()).toBe("peft import");
    await page.getByRole("button", { name: `Delete ${id}`, exact: true }).click();
    await page.getByRole("button", { name: `Really delete ${id}`, exact: true }).click();
    await row.waitFor({ state: "detached" });
    expect(await page.locator("td.adapter-id").allTextContents()).toContain(adapter); // the fine-tuned one stays
  });

  it("cancels a running job from its page", async () => {
    await nav("New fine-tune");
    const hostileFile = await page.locator("#job-training-file option", { hasText: HOSTILE_NAME }).getAttribute("value");
    await page.getByLabel("Training file", { exact: true }).selectOption(hostileFile!);
    await page.getByLabel("Epochs", { exact: true }).fill("40");
    await page.locator(".estimate", { hasText: "over 40 epochs" }).waitFor();
    await page.getByRole("button", { name: "Launch fine-tune" }).click();
    await page.waitForURL(/\/console\/jobs\/ftjob-/);
    await page.getByRole("button", { name: "Cancel job" }).click();
    await page.locator(".badge.status-cancelled").waitFor();
    expect(await page.getByRole("button", { name: "Cancel job" }).count()).toBe(0);
    await page.locator("ol.events li", { hasText: "The job was cancelled" }).waitFor();
  });

  it("charts usage per day and model", async () => {
    // Usage is written just after each answer: the page shows it once it has landed.
    for (let attempt = 0; ; attempt++) {
      await nav("Usage");
      await page.getByRole("heading", { name: "Usage", level: 1 }).waitFor();
      await page.locator("tr.total").waitFor();
      const models = await page.locator("tbody tr:not(.total) td.mono").allTextContents();
      if (models.includes(adapter) || attempt === 20) {
        expect(models).toEqual(expect.arrayContaining([adapter, "pica-base-4m"]));
        break;
      }
      await nav("Jobs");
    }
    expect(await page.locator("rect.bar").count()).toBeGreaterThan(0);
    expect(await overflowAtPhoneWidth()).toEqual([]);
    await shot("usage");
    await nav("Jobs");
    await page.locator(`a:has-text("${jobId}")`).waitFor();
    expect(await overflowAtPhoneWidth()).toEqual([]);
    await shot("jobs");
  });

  it("shows another tenant none of it", async () => {
    const other = await browser.newContext({ viewport: DESKTOP });
    const theirs = watch(await other.newPage());
    await signIn(theirs, otherKey);
    await theirs.getByText("No jobs yet").waitFor();
    await theirs.goto(url(`/console/jobs/${jobId}`));
    await theirs.getByRole("alert").getByText(`No fine-tuning job ${jobId}`).waitFor();
    await theirs.goto(url("/console/files"));
    await theirs.getByText("No files yet.").waitFor();
    await theirs.goto(url("/console/adapters"));
    await theirs.getByText("No adapters yet").waitFor();
    await theirs.goto(url(`/console/playground?model=${encodeURIComponent(adapter)}`));
    await theirs.getByLabel("Message", { exact: true }).fill("hello");
    await theirs.getByRole("button", { name: "Send" }).click();
    await theirs.locator("[data-side=adapter] .error").waitFor();
    expect(await theirs.locator("[data-side=adapter] .error").textContent()).toContain("does not exist");
    await other.close();
  });

  it("reads long lists a page at a time", async () => {
    const training = toChatJsonl(task.train.slice(0, 10));
    for (let i = 0; i < 51; i++) {
      const form = new FormData();
      form.set("purpose", "fine-tune");
      form.set("file", new Blob([training]), `many-${i}.jsonl`);
      const uploaded = await fetch(url("/v1/files"), { method: "POST", headers: { authorization: `Bearer ${otherKey}` }, body: form });
      expect(uploaded.status).toBe(200);
    }
    const other = await browser.newContext({ viewport: DESKTOP });
    const theirs = watch(await other.newPage());
    await signIn(theirs, otherKey);
    await theirs.goto(url("/console/files"));
    const rows = theirs.locator("td.file-name");
    await rows.first().waitFor();
    expect(await rows.count()).toBe(50);
    await theirs.getByRole("button", { name: "Show more files" }).click();
    await theirs.waitForFunction(() => document.querySelectorAll("td.file-name").length > 50);
    expect(await rows.count()).toBe(51);
    expect(new Set(await rows.allTextContents()).size).toBe(51);
    expect(await theirs.getByRole("button", { name: "Show more files" }).count()).toBe(0);

    // Deleting by keyboard: Enter on Delete moves the focus to the question, Enter again deletes.
    const doomed = (await rows.first().textContent())!;
    await theirs.getByRole("button", { name: `Delete ${doomed}`, exact: true }).focus();
    await theirs.keyboard.press("Enter");
    expect(await theirs.evaluate(() => document.activeElement?.getAttribute("aria-label"))).toBe(`Really delete ${doomed}`);
    await theirs.keyboard.press("Enter");
    await theirs.waitForFunction(() => document.querySelectorAll("td.file-name").length === 50);
    expect(await rows.allTextContents()).not.toContain(doomed);
    // The row that took its place asks afresh: no delete is armed.
    expect(await theirs.getByRole("button", { name: /^Really delete/ }).count()).toBe(0);
    expect(await theirs.getByRole("button", { name: /^Delete / }).count()).toBe(50);
    await other.close();
  });

  it("signs out: the cookie is gone and the console asks for a key again", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(url("/console/sign-in?ended=signed_out"));
    expect(await page.getByRole("status").textContent()).toContain("You are signed out.");
    expect(await context.cookies()).toEqual([]);
    await page.goto(url("/console/files"));
    expect(new URL(page.url()).pathname).toBe("/console/sign-in");
  });
});
