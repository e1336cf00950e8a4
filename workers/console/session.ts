/**
 * The signed-in page's context: the API client (the session cookie authenticates it, the page's
 * CSRF token rides on every call) and who is signed in. A call refused because the session ended
 * takes the browser back to the sign-in page.
 */
import { PicaApiError, PicaClient } from "../../src/client/pica-client.ts";
import { CONSOLE_META, CONSOLE_PATHS, CSRF_HEADER, type SessionEnd } from "../../src/protocol/console.ts";

function meta(name: string): string {
  return document.querySelector<HTMLMetaElement>(`meta[name="${name}"]`)?.content ?? "";
}

/** The session's CSRF token, also posted by the sign-out form. */
export const csrfToken = meta(CONSOLE_META.csrfToken);
/** The tenant and key name the session was opened with. */
export const signedInAs = { tenant: meta(CONSOLE_META.tenant), keyName: meta(CONSOLE_META.keyName) };

/** The API, as this session. */
export const api = new PicaClient({
  baseUrl: "",
  apiKey: null,
  headers: { [CSRF_HEADER]: csrfToken },
  fetch: async (input, init) => {
    const response = await fetch(input, { ...init, credentials: "same-origin" });
    if (response.status === 401) window.location.assign(`${CONSOLE_PATHS.signIn}?ended=${"expired" satisfies SessionEnd}`);
    return response;
  },
});

/** A readable message for a failed call. */
export function errorMessage(error: unknown): string {
  if (error instanceof PicaApiError) return error.body?.message ?? `The API answered ${error.status}.`;
  return error instanceof Error ? error.message : String(error);
}

export { PicaApiError };
