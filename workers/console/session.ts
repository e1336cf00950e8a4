/**
 * The signed-in page's context: the API client (the session cookie authenticates it, the page's
 * CSRF token rides on every call) and who is signed in. A call refused because the session ended
 * takes the browser back to the sign-in page.
 */
import { PicaApiError, PicaClient } from "../../src/client/pica-client.ts";
import { CONSOLE_META, CONSOLE_PATHS, CSRF_HEADER, INVALID_CSRF_TOKEN_CODE, type SessionEnd } from "../../src/protocol/console.ts";

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
    // Signed in again in another tab: this page's token is another session's; a reload brings the current one.
    if (response.status === 403 && (await errorCode(response)) === INVALID_CSRF_TOKEN_CODE) window.location.reload();
    return response;
  },
});

async function errorCode(response: Response): Promise<string | null> {
  const body = (await response
    .clone()
    .json()
    .catch(() => null)) as { error?: { code?: string } } | null;
  return body?.error?.code ?? null;
}

/** A readable message for a failed call. */
export function errorMessage(error: unknown): string {
  if (error instanceof PicaApiError) return error.body?.message ?? `The API answered ${error.status}.`;
  return error instanceof Error ? error.message : String(error);
}

export { PicaApiError };
