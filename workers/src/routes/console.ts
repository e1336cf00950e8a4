/**
 * The tenant console at /console: a sign-in page that exchanges an API key for a session cookie,
 * sign-out, the page shell the console's script renders into, and that script and its styles
 * (built from workers/console by `npm run console:build`). The script calls the public API with
 * the session; nothing here serves tenant data. Every console response carries a strict
 * Content-Security-Policy: scripts and styles from this origin only, nothing inline, no frames.
 */
import { Hono, type Context } from "hono";
import { csrf } from "hono/csrf";
import { html } from "hono/html";
import { secureHeaders } from "hono/secure-headers";
import { CONSOLE_META, CONSOLE_PATHS, CSRF_FIELD, type SessionEnd } from "../../../src/protocol/console.ts";
import { CONSOLE_ASSET_VERSION, CONSOLE_SCRIPT, CONSOLE_STYLES } from "../../console/dist/assets.ts";
import { looksLikeApiKey, sha256Hex } from "../auth/keys.ts";
import { csrfToken, csrfTokenValid, MIN_SESSION_SECRET_LENGTH, usableSessionSecret } from "../auth/session.ts";
import { clearSession, currentSession, openSession, renewIfDue } from "../auth/session-cookie.ts";
import { database } from "../db/client.ts";
import { findLiveKeyByHash } from "../db/queries/tenants.ts";
import type { AppEnv } from "../env.ts";

export const consoleRoutes = new Hono<AppEnv>();

consoleRoutes.use(
  "*",
  secureHeaders({
    contentSecurityPolicy: {
      defaultSrc: ["'none'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'"],
      imgSrc: ["'self'", "data:"],
      connectSrc: ["'self'"],
      formAction: ["'self'"],
      frameAncestors: ["'none'"],
      baseUri: ["'none'"],
    },
    referrerPolicy: "no-referrer",
    crossOriginResourcePolicy: "same-origin",
  }),
  // Form posts (sign-in, sign-out) only from the console's own origin.
  csrf(),
);

// The names carry the content's hash, so a browser may keep them forever.
const ASSETS = new Map([
  [`app.${CONSOLE_ASSET_VERSION}.js`, { body: CONSOLE_SCRIPT, type: "text/javascript; charset=utf-8" }],
  [`app.${CONSOLE_ASSET_VERSION}.css`, { body: CONSOLE_STYLES, type: "text/css; charset=utf-8" }],
]);
const scriptPath = `${CONSOLE_PATHS.assets}/app.${CONSOLE_ASSET_VERSION}.js`;
const stylesPath = `${CONSOLE_PATHS.assets}/app.${CONSOLE_ASSET_VERSION}.css`;

consoleRoutes.get("/assets/:name", (c) => {
  const asset = ASSETS.get(c.req.param("name"));
  if (asset === undefined) return c.text("Not found", 404);
  return c.body(asset.body, 200, { "content-type": asset.type, "cache-control": "public, max-age=31536000, immutable" });
});

consoleRoutes.get("/sign-in", async (c) => {
  if ((await currentSession(c)) !== null) return c.redirect(CONSOLE_PATHS.root, 303);
  const ended = c.req.query("ended") as SessionEnd | undefined;
  const notice = ended === "signed_out" ? "You are signed out." : ended === "expired" ? "Your session ended. Sign in again." : null;
  return page(c, { body: signInPage(notice, null) }, 200);
});

consoleRoutes.post("/sign-in", async (c) => {
  const secret = c.env.SESSION_SECRET;
  if (!usableSessionSecret(secret)) {
    const problem = `The console is not configured on this deployment (SESSION_SECRET must be set, at least ${MIN_SESSION_SECRET_LENGTH} characters).`;
    return page(c, { body: signInPage(null, problem) }, 503);
  }
  const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
  const presented = typeof form.api_key === "string" ? form.api_key.trim() : "";
  const key = looksLikeApiKey(presented) ? await findLiveKeyByHash(database(c.env.DB), await sha256Hex(presented)) : null;
  if (key === null) return page(c, { body: signInPage(null, "That API key is not valid, or it was revoked.") }, 401);
  await openSession(c, secret, key.id);
  return c.redirect(CONSOLE_PATHS.root, 303);
});

consoleRoutes.post("/sign-out", async (c) => {
  const signedIn = await currentSession(c);
  const form = await c.req.parseBody().catch(() => ({}) as Record<string, unknown>);
  const token = typeof form[CSRF_FIELD] === "string" ? (form[CSRF_FIELD] as string) : undefined;
  // A page older than the session (signed in again in another tab) has a stale token: show it the current one.
  if (signedIn !== null && !(await csrfTokenValid(c.env.SESSION_SECRET, signedIn.session, token))) return c.redirect(CONSOLE_PATHS.root, 303);
  clearSession(c);
  return c.redirect(`${CONSOLE_PATHS.signIn}?ended=${"signed_out" satisfies SessionEnd}`, 303);
});

// Every other console path is a page of the script's: the shell, for a signed-in browser.
consoleRoutes.get("/*", async (c) => {
  const signedIn = await currentSession(c);
  if (signedIn === null) return c.redirect(CONSOLE_PATHS.signIn, 303);
  await renewIfDue(c, signedIn.session);
  const token = await csrfToken(c.env.SESSION_SECRET, signedIn.session);
  const head = html`<meta name="${CONSOLE_META.csrfToken}" content="${token}" />
    <meta name="${CONSOLE_META.tenant}" content="${signedIn.key.tenantId}" />
    <meta name="${CONSOLE_META.keyName}" content="${signedIn.key.name}" />
    <script type="module" src="${scriptPath}"></script>`;
  const body = html`<div id="app"><p class="loading">Loading the console…</p></div>
    <noscript><p>The console needs JavaScript.</p></noscript>`;
  return page(c, { head, body }, 200);
});

function signInPage(notice: string | null, error: string | null) {
  return html`<main class="sign-in">
    <h1>PiCa console</h1>
    <form method="post" action="${CONSOLE_PATHS.signIn}">
      <label for="api-key">API key</label>
      <input id="api-key" name="api_key" type="password" autocomplete="current-password" required placeholder="sk-pica-…" autofocus />
      ${error ? html`<p class="error" role="alert">${error}</p>` : ""} ${notice ? html`<p class="notice" role="status">${notice}</p>` : ""}
      <button type="submit">Sign in</button>
    </form>
    <p class="hint">
      The key is exchanged for a session cookie (an hour, renewed while you work, 12 hours at most); the key itself is not kept in the
      browser.
    </p>
  </main>`;
}

type Html = ReturnType<typeof html>;

/** A whole document: the shared head (styles), the page's own head and its body; never cached. */
function page(c: Context<AppEnv>, parts: { head?: Html; body: Html }, status: 200 | 401 | 503) {
  c.header("cache-control", "no-store");
  return c.html(
    html`<!doctype html>
      <html lang="en">
        <head>
          <meta charset="utf-8" />
          <meta name="viewport" content="width=device-width, initial-scale=1" />
          <title>PiCa console</title>
          <link rel="icon" href="data:," />
          <link rel="stylesheet" href="${stylesPath}" />
          ${parts.head ?? ""}
        </head>
        <body>
          ${parts.body}
        </body>
      </html>`,
    status,
  );
}
