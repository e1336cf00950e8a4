import { describe, expect, it } from "vitest";
import { csrfToken, csrfTokenValid, dueForRenewal, issueSession, readSession, SESSION_SECONDS } from "./session.ts";

const SECRET = "a-session-secret";
const NOW = 1_800_000_000;

describe("console sessions", () => {
  it("a cookie names its key and expiry, and reads back only while unexpired", async () => {
    const { session, cookie } = await issueSession(SECRET, "key_abc", NOW);
    expect(session.expiresAt).toBe(NOW + SESSION_SECONDS);
    expect(cookie.split(".")[2]).toBe("key_abc");
    expect(await readSession(SECRET, cookie, NOW + 10)).toEqual(session);
    expect(await readSession(SECRET, cookie, NOW + SESSION_SECONDS)).toBeNull();
    expect(await readSession(SECRET, cookie, NOW + SESSION_SECONDS + 1)).toBeNull();
  });

  it("refuses a cookie signed with another secret, or with any part changed", async () => {
    const { cookie } = await issueSession(SECRET, "key_abc", NOW);
    expect(await readSession("another-secret", cookie, NOW)).toBeNull();
    const parts = cookie.split(".");
    const changed = [
      [parts[0], parts[1], "key_other", parts[3], parts[4]],
      [parts[0], parts[1], parts[2], String(NOW + 10 * SESSION_SECONDS), parts[4]],
      [parts[0], `${parts[1]}x`, parts[2], parts[3], parts[4]],
      ["v2", parts[1], parts[2], parts[3], parts[4]],
    ];
    for (const forged of changed) expect(await readSession(SECRET, forged.join("."), NOW)).toBeNull();
    for (const junk of [undefined, "", "v1", "v1.a.b.c", `${cookie}.extra`, "x".repeat(600)]) expect(await readSession(SECRET, junk, NOW)).toBeNull();
  });

  it("a renewal keeps the session's id, so its CSRF token stays valid; other sessions' tokens are refused", async () => {
    const first = await issueSession(SECRET, "key_abc", NOW);
    expect(dueForRenewal(first.session, NOW + 60)).toBe(false);
    expect(dueForRenewal(first.session, NOW + SESSION_SECONDS / 2 + 1)).toBe(true);
    const renewed = await issueSession(SECRET, "key_abc", NOW + 2000, first.session.id);
    expect(renewed.session.expiresAt).toBe(NOW + 2000 + SESSION_SECONDS);
    expect(renewed.csrfToken).toBe(first.csrfToken);
    expect(await csrfTokenValid(SECRET, renewed.session, first.csrfToken)).toBe(true);
    const other = await issueSession(SECRET, "key_abc", NOW);
    expect(other.csrfToken).not.toBe(first.csrfToken);
    expect(await csrfTokenValid(SECRET, first.session, other.csrfToken)).toBe(false);
    expect(await csrfTokenValid(SECRET, first.session, "")).toBe(false);
    expect(await csrfTokenValid(SECRET, first.session, undefined)).toBe(false);
    expect(await csrfToken(SECRET, first.session)).toBe(first.csrfToken);
  });
});
