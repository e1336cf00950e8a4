import { describe, expect, it } from "vitest";
import {
  csrfToken,
  csrfTokenValid,
  dueForRenewal,
  issueSession,
  MAX_SESSION_SECONDS,
  readSession,
  renewSession,
  SESSION_SECONDS,
  usableSessionSecret,
} from "./session.ts";

const SECRET = "a-session-secret-of-at-least-32-chars";
const NOW = 1_800_000_000;

describe("console sessions", () => {
  it("a cookie names its key, sign-in time and expiry, and reads back only while unexpired", async () => {
    const { session, cookie } = await issueSession(SECRET, "key_abc", NOW);
    expect(session).toMatchObject({ keyId: "key_abc", issuedAt: NOW, expiresAt: NOW + SESSION_SECONDS });
    expect(cookie.split(".").slice(2, 5)).toEqual(["key_abc", String(NOW), String(NOW + SESSION_SECONDS)]);
    expect(await readSession(SECRET, cookie, NOW + 10)).toEqual(session);
    expect(await readSession(SECRET, cookie, NOW + SESSION_SECONDS)).toBeNull();
    expect(await readSession(SECRET, cookie, NOW + SESSION_SECONDS + 1)).toBeNull();
  });

  it("refuses a cookie signed with another secret, or with any part changed", async () => {
    const { cookie } = await issueSession(SECRET, "key_abc", NOW);
    expect(await readSession("another-secret-of-at-least-32-characters", cookie, NOW)).toBeNull();
    const parts = cookie.split(".");
    const changed = [
      [parts[0], parts[1], "key_other", parts[3], parts[4], parts[5]],
      [parts[0], parts[1], parts[2], String(NOW + 100), parts[4], parts[5]], // a later sign-in time, to stretch the absolute limit
      [parts[0], parts[1], parts[2], parts[3], String(NOW + 2 * SESSION_SECONDS), parts[5]],
      [parts[0], `${parts[1]}x`, parts[2], parts[3], parts[4], parts[5]],
      ["v1", parts[1], parts[2], parts[3], parts[4], parts[5]],
      [parts[0], parts[1], parts[2], parts[3], parts[4], `${parts[5].startsWith("A") ? "B" : "A"}${parts[5].slice(1)}`],
    ];
    for (const forged of changed) expect(await readSession(SECRET, forged.join("."), NOW)).toBeNull();
    for (const junk of [undefined, "", "v2", "v2.a.b.c.d", `${cookie}.extra`, "x".repeat(600)]) expect(await readSession(SECRET, junk, NOW)).toBeNull();
  });

  it("renewals keep the session's id and CSRF token, and stop at the absolute limit", async () => {
    const first = await issueSession(SECRET, "key_abc", NOW);
    expect(dueForRenewal(first.session, NOW + 60)).toBe(false);
    expect(dueForRenewal(first.session, NOW + SESSION_SECONDS / 2 + 1)).toBe(true);
    const renewed = await renewSession(SECRET, first.session, NOW + 2000);
    expect(renewed.session).toEqual({ ...first.session, expiresAt: NOW + 2000 + SESSION_SECONDS });
    expect(renewed.csrfToken).toBe(first.csrfToken);
    expect(await readSession(SECRET, renewed.cookie, NOW + SESSION_SECONDS + 100)).toEqual(renewed.session);
    // Renewed again and again, a session still ends MAX_SESSION_SECONDS after sign-in.
    let session = first.session;
    for (let now = NOW; now < NOW + 2 * MAX_SESSION_SECONDS; now += SESSION_SECONDS / 2 + 1) {
      if (dueForRenewal(session, now)) session = (await renewSession(SECRET, session, now)).session;
    }
    expect(session.expiresAt).toBe(NOW + MAX_SESSION_SECONDS);
    expect(dueForRenewal(session, NOW + MAX_SESSION_SECONDS - 10)).toBe(false);
    const last = await renewSession(SECRET, session, NOW + MAX_SESSION_SECONDS - 10);
    expect(await readSession(SECRET, last.cookie, NOW + MAX_SESSION_SECONDS)).toBeNull();
  });

  it("CSRF tokens are per session", async () => {
    const first = await issueSession(SECRET, "key_abc", NOW);
    const other = await issueSession(SECRET, "key_abc", NOW);
    expect(other.csrfToken).not.toBe(first.csrfToken);
    expect(await csrfTokenValid(SECRET, first.session, first.csrfToken)).toBe(true);
    expect(await csrfTokenValid(SECRET, first.session, other.csrfToken)).toBe(false);
    expect(await csrfTokenValid(SECRET, first.session, "")).toBe(false);
    expect(await csrfTokenValid(SECRET, first.session, undefined)).toBe(false);
    expect(await csrfToken(SECRET, first.session)).toBe(first.csrfToken);
  });

  it("refuses to sign with a short or missing secret", () => {
    expect(usableSessionSecret(undefined)).toBe(false);
    expect(usableSessionSecret("")).toBe(false);
    expect(usableSessionSecret("x".repeat(31))).toBe(false);
    expect(usableSessionSecret("x".repeat(32))).toBe(true);
  });
});
