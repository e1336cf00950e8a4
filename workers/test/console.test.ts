import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { CONSOLE_META, CONSOLE_PATHS, CSRF_FIELD, CSRF_HEADER } from "../../src/protocol/console.ts";
import { ADMIN, call, errorOf, tenantWithKey } from "./helpers.ts";
import { trainingJsonl, upload } from "./fine-tuning-helpers.ts";

const ORIGIN = "http://edge.test";

/** A console request as a same-origin browser sends it. */
function browser(method: string, path: string, init: { cookie?: string; form?: Record<string, string>; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { origin: ORIGIN, "sec-fetch-site": "same-origin", ...init.headers };
  if (init.cookie) headers.cookie = init.cookie;
  const body = init.form ? new URLSearchParams(init.form) : undefined;
  if (body) headers["content-type"] = "application/x-www-form-urlencoded";
  return SELF.fetch(new Request(`${ORIGIN}${path}`, { method, headers, body, redirect: "manual" }));
}

/** Signs in with a key: the cookie pair to send back and the CSRF token of the console page. */
async function signIn(key: string): Promise<{ cookie: string; setCookie: string; csrf: string; page: string }> {
  const response = await browser("POST", CONSOLE_PATHS.signIn, { form: { api_key: key } });
  expect(response.status).toBe(303);
  expect(response.headers.get("location")).toBe(CONSOLE_PATHS.root);
  const setCookie = response.headers.get("set-cookie")!;
  const cookie = setCookie.split(";")[0];
  const page = await (await browser("GET", CONSOLE_PATHS.root, { cookie })).text();
  const csrf = new RegExp(`<meta name="${CONSOLE_META.csrfToken}" content="([^"]+)"`).exec(page)![1];
  return { cookie, setCookie, csrf, page };
}

describe("console sign-in", () => {
  it("exchanges a key for an HttpOnly, SameSite=Strict session cookie that names the key, never holds it", async () => {
    const { key, keyId, tenantId } = await tenantWithKey();
    const { setCookie, cookie, page } = await signIn(key);
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Strict/i);
    expect(setCookie).toMatch(/Path=\//);
    expect(setCookie).not.toContain(key);
    expect(cookie.split("=")[1].split(".")[2]).toBe(keyId);
    expect(setCookie).not.toMatch(/Secure/i); // plain http here (npm start); over https the cookie is Secure and __Host-
    expect(page).not.toContain(key);
    expect(page).toContain(`<meta name="${CONSOLE_META.tenant}" content="${tenantId}"`);
  });

  it("refuses an unknown, malformed or revoked key with a 401 page and no cookie", async () => {
    const { key, tenantId, keyId } = await tenantWithKey();
    await call("DELETE", `/admin/tenants/${tenantId}/keys/${keyId}`, { headers: ADMIN });
    for (const presented of [key, "sk-pica-nope", ""]) {
      const response = await browser("POST", CONSOLE_PATHS.signIn, { form: { api_key: presented } });
      expect(response.status).toBe(401);
      expect(response.headers.get("set-cookie")).toBeNull();
      expect(await response.text()).toContain("not valid, or it was revoked");
    }
  });

  it("over https the cookie is Secure and __Host- prefixed, and works under that name", async () => {
    const { key } = await tenantWithKey();
    const signedIn = await SELF.fetch(
      new Request("https://edge.test/console/sign-in", {
        method: "POST",
        headers: { origin: "https://edge.test", "sec-fetch-site": "same-origin", "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ api_key: key }),
        redirect: "manual",
      }),
    );
    const setCookie = signedIn.headers.get("set-cookie")!;
    expect(setCookie).toMatch(/^__Host-pica_session=v2\./);
    expect(setCookie).toMatch(/; Secure/i);
    const cookie = setCookie.split(";")[0];
    const page = await (await SELF.fetch(new Request("https://edge.test/console", { headers: { cookie } }))).text();
    const csrf = new RegExp(`<meta name="${CONSOLE_META.csrfToken}" content="([^"]+)"`).exec(page)![1];
    const files = await SELF.fetch(new Request("https://edge.test/v1/files", { headers: { cookie, [CSRF_HEADER]: csrf } }));
    expect(files.status).toBe(200);
    // The unprefixed name means nothing over https (a sibling domain could have planted it).
    const planted = await SELF.fetch(new Request("https://edge.test/v1/files", { headers: { cookie: cookie.replace("__Host-", ""), [CSRF_HEADER]: csrf } }));
    expect(planted.status).toBe(401);
  });

  it("refuses a sign-in form posted from another origin", async () => {
    const { key } = await tenantWithKey();
    const response = await browser("POST", CONSOLE_PATHS.signIn, {
      form: { api_key: key },
      headers: { origin: "https://evil.test", "sec-fetch-site": "cross-site" },
    });
    expect(response.status).toBe(403);
    expect(response.headers.get("set-cookie")).toBeNull();
  });

  it("sends a browser without a session to the sign-in page", async () => {
    for (const path of [CONSOLE_PATHS.root, `${CONSOLE_PATHS.root}/files`, `${CONSOLE_PATHS.root}/jobs/ftjob-x`]) {
      const response = await browser("GET", path);
      expect(response.status).toBe(303);
      expect(response.headers.get("location")).toBe(CONSOLE_PATHS.signIn);
    }
    // A real session's cookie with its expiry pushed out, or its signature changed, is no session.
    const { cookie } = await signIn((await tenantWithKey()).key);
    const parts = cookie.slice("pica_session=".length).split(".");
    const forgeries = [
      [...parts.slice(0, 4), String(Number(parts[4]) + 3600), parts[5]],
      [...parts.slice(0, 5), `${parts[5].startsWith("A") ? "B" : "A"}${parts[5].slice(1)}`],
    ];
    for (const forged of forgeries) {
      const response = await browser("GET", CONSOLE_PATHS.root, { cookie: `pica_session=${forged.join(".")}` });
      expect(response.status).toBe(303);
      expect(response.headers.get("location")).toBe(CONSOLE_PATHS.signIn);
    }
    expect((await browser("GET", CONSOLE_PATHS.root, { cookie })).status).toBe(200);
  });
});

describe("console pages", () => {
  it("carry a strict content security policy and no inline script", async () => {
    const { cookie } = await signIn((await tenantWithKey()).key);
    for (const response of [await browser("GET", CONSOLE_PATHS.signIn), await browser("GET", `${CONSOLE_PATHS.root}/usage`, { cookie })]) {
      expect(response.status).toBe(200);
      const policy = response.headers.get("content-security-policy")!;
      expect(policy).toContain("default-src 'none'");
      expect(policy).toContain("script-src 'self'");
      expect(policy).toContain("style-src 'self'");
      expect(policy).toContain("frame-ancestors 'none'");
      expect(policy).not.toContain("unsafe-inline");
      expect(response.headers.get("x-content-type-options")).toBe("nosniff");
      expect(response.headers.get("cache-control")).toBe("no-store");
      const html = await response.text();
      expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // every script is a file from this origin
      expect(html).not.toMatch(/\sstyle=|<style/);
    }
  });

  it("serves the script and styles under content-hashed names, cacheable for good", async () => {
    const { page } = await signIn((await tenantWithKey()).key);
    const script = /<script type="module" src="([^"]+)"/.exec(page)![1];
    const styles = /<link rel="stylesheet" href="([^"]+)"/.exec(page)![1];
    for (const [path, type] of [
      [script, "text/javascript"],
      [styles, "text/css"],
    ]) {
      expect(path).toMatch(new RegExp(`^${CONSOLE_PATHS.assets}/app\\.[0-9a-f]{12}\\.(js|css)$`));
      const response = await browser("GET", path);
      expect(response.status).toBe(200);
      expect(response.headers.get("content-type")).toContain(type);
      expect(response.headers.get("cache-control")).toContain("immutable");
      expect((await response.text()).length).toBeGreaterThan(1000);
    }
    expect((await browser("GET", `${CONSOLE_PATHS.assets}/app.000000000000.js`)).status).toBe(404);
  });

  it("render a tenant-chosen key name escaped", async () => {
    const { key } = await tenantWithKey(["admin"]);
    const hostile = `<img src=x onerror=alert(1)>"'`;
    const issued = (await (await call("POST", "/v1/api_keys", { key, json: { name: hostile, scopes: ["inference"] } })).json()) as { key: string };
    const { page } = await signIn(issued.key);
    expect(page).not.toContain("<img src=x");
    expect(page).toContain(`content="&lt;img src=x onerror=alert(1)&gt;&quot;&#39;"`);
  });
});

describe("the API through a console session", () => {
  it("answers with the session's CSRF token in its header, as the key's tenant", async () => {
    const { key } = await tenantWithKey();
    expect((await upload(key, trainingJsonl(), { filename: "mine.jsonl" })).status).toBe(200);
    const { cookie, csrf } = await signIn(key);
    const response = await call("GET", "/v1/files", { headers: { cookie, [CSRF_HEADER]: csrf } });
    expect(response.status).toBe(200);
    const files = (await response.json()) as { data: { filename: string }[] };
    expect(files.data.map((f) => f.filename)).toEqual(["mine.jsonl"]);
    const other = await tenantWithKey();
    const otherSession = await signIn(other.key);
    const theirs = (await (await call("GET", "/v1/files", { headers: { cookie: otherSession.cookie, [CSRF_HEADER]: otherSession.csrf } })).json()) as {
      data: unknown[];
    };
    expect(theirs.data).toEqual([]);
    // A bearer key wins over a cookie: the other tenant's key beside this session reads the other tenant.
    const both = await call("GET", "/v1/files", { key: other.key, headers: { cookie, [CSRF_HEADER]: csrf } });
    expect(((await both.json()) as { data: unknown[] }).data).toEqual([]);
  });

  it("refuses a session call without the CSRF token, or with another session's", async () => {
    const { key } = await tenantWithKey();
    const { cookie } = await signIn(key);
    const another = await signIn(key);
    const attempts: Record<string, string>[] = [{ cookie }, { cookie, [CSRF_HEADER]: another.csrf }, { cookie, [CSRF_HEADER]: "" }];
    for (const headers of attempts) {
      const response = await call("POST", "/v1/fine_tuning/jobs", { headers, json: { model: "pica-base-4m", training_file: "file-x" } });
      expect(response.status).toBe(403);
      expect((await errorOf(response)).code).toBe("invalid_csrf_token");
    }
  });

  it("ends when the key is revoked: API calls are 401 session_expired and pages go to sign-in", async () => {
    const { key, tenantId, keyId } = await tenantWithKey();
    const { cookie, csrf } = await signIn(key);
    expect((await call("GET", "/v1/files", { headers: { cookie, [CSRF_HEADER]: csrf } })).status).toBe(200);
    await call("DELETE", `/admin/tenants/${tenantId}/keys/${keyId}`, { headers: ADMIN });
    const refused = await call("GET", "/v1/files", { headers: { cookie, [CSRF_HEADER]: csrf } });
    expect(refused.status).toBe(401);
    expect((await errorOf(refused)).code).toBe("session_expired");
    const page = await browser("GET", CONSOLE_PATHS.root, { cookie });
    expect(page.status).toBe(303);
    expect(page.headers.get("location")).toBe(CONSOLE_PATHS.signIn);
  });

  it("a bearer key still works beside a stale cookie; the key's scopes bound the session", async () => {
    const { key } = await tenantWithKey(["inference"]);
    const { cookie, csrf } = await signIn(key);
    const refused = await call("GET", "/v1/files", { headers: { cookie, [CSRF_HEADER]: csrf } });
    expect(refused.status).toBe(403);
    expect((await errorOf(refused)).code).toBe("insufficient_scope");
    const full = await tenantWithKey();
    expect((await call("GET", "/v1/files", { key: full.key, headers: { cookie: "pica_session=v1.junk" } })).status).toBe(200);
  });
});

describe("console sign-out", () => {
  it("clears the cookie with the session's token and goes to the sign-in page; a stale or missing token only reloads the console", async () => {
    const { key } = await tenantWithKey();
    const { cookie, csrf } = await signIn(key);
    const another = await signIn(key);
    const staleForms: Record<string, string>[] = [{}, { [CSRF_FIELD]: another.csrf }];
    for (const form of staleForms) {
      const refused = await browser("POST", CONSOLE_PATHS.signOut, { cookie, form });
      expect(refused.status).toBe(303);
      expect(refused.headers.get("location")).toBe(CONSOLE_PATHS.root);
      expect(refused.headers.get("set-cookie")).toBeNull();
    }
    const crossSite = await browser("POST", CONSOLE_PATHS.signOut, {
      cookie,
      form: { [CSRF_FIELD]: csrf },
      headers: { origin: "https://evil.test", "sec-fetch-site": "cross-site" },
    });
    expect(crossSite.status).toBe(403);
    const response = await browser("POST", CONSOLE_PATHS.signOut, { cookie, form: { [CSRF_FIELD]: csrf } });
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe(`${CONSOLE_PATHS.signIn}?ended=signed_out`);
    expect(response.headers.get("set-cookie")).toMatch(/^pica_session=;.*Max-Age=0/i);
  });
});
