/**
 * What the tenant console's pages (served by the edge) and its browser script agree on: where the
 * console lives, how a page hands the script its CSRF token, and the header the script sends it
 * back in. The session itself is an HttpOnly cookie the script never sees.
 */

/** The console's pages, under one prefix on the API's origin. */
export const CONSOLE_PATHS = {
  root: "/console",
  signIn: "/console/sign-in",
  signOut: "/console/sign-out",
  assets: "/console/assets",
} as const;

/** The header that carries a session's CSRF token on every API call the console makes. */
export const CSRF_HEADER = "x-csrf-token";

/** The error code of a session call without the session's CSRF token (or with another session's). */
export const INVALID_CSRF_TOKEN_CODE = "invalid_csrf_token";

/** The form field that carries it on the console's own form posts (sign-out). */
export const CSRF_FIELD = "csrf_token";

/** The `<meta name>` a console page puts its CSRF token in, and the tenant it is signed in as. */
export const CONSOLE_META = { csrfToken: "pica-csrf-token", tenant: "pica-tenant", keyName: "pica-key-name" } as const;

/** Why the sign-in page is shown again (`?ended=…`). */
export type SessionEnd = "signed_out" | "expired";
