import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ApiError, badRequest, forbidden, formatParamPath, fromZodError, notFound, rateLimited, serverError, unauthorized } from "./errors.ts";

describe("ApiError helpers", () => {
  it("give each error its OpenAI status, type and body", () => {
    const cases: [ApiError, number, string][] = [
      [badRequest("bad", "temperature", "invalid_value"), 400, "invalid_request_error"],
      [unauthorized("no key"), 401, "authentication_error"],
      [forbidden("not yours"), 403, "permission_error"],
      [notFound("no such model", "model", "model_not_found"), 404, "not_found_error"],
      [rateLimited("slow down", 7), 429, "rate_limit_error"],
      [serverError(), 500, "server_error"],
    ];
    for (const [error, status, type] of cases) {
      expect(error).toBeInstanceOf(ApiError);
      expect(error).toBeInstanceOf(Error);
      expect(error.status).toBe(status);
      expect(error.toBody().error.type).toBe(type);
    }
    expect(badRequest("bad", "temperature", "invalid_value").toBody()).toEqual({
      error: { message: "bad", type: "invalid_request_error", param: "temperature", code: "invalid_value" },
    });
    expect(notFound("gone").toBody()).toEqual({
      error: { message: "gone", type: "not_found_error", param: null, code: null },
    });
  });

  it("keeps Retry-After on rate limits", () => {
    const error = rateLimited("slow down", 7);
    expect(error.retryAfterSeconds).toBe(7);
    expect(error.toBody().error.code).toBe("rate_limit_exceeded");
    expect(badRequest("x").retryAfterSeconds).toBeNull();
  });
});

describe("fromZodError", () => {
  const schema = z.object({
    messages: z.array(z.object({ role: z.enum(["user", "assistant"]), content: z.string() })),
    temperature: z.number().max(2).optional(),
  });
  const errorFor = (body: unknown, root?: string) => {
    const result = schema.safeParse(body, { reportInput: true });
    if (result.success) throw new Error("expected a parse failure");
    return fromZodError(result.error, root);
  };

  it("names the first bad field with OpenAI's path syntax", () => {
    const error = errorFor({
      messages: [
        { role: "user", content: "hi" },
        { role: "robot", content: "x" },
      ],
    });
    expect(error.status).toBe(400);
    expect(error.param).toBe("messages[1].role");
    expect(error.message).toMatch(/^Invalid value for 'messages\[1\]\.role': /);
    expect(error.code).toBe("invalid_value");
  });

  it("describes type mismatches and missing parameters", () => {
    const wrongType = errorFor({ messages: [], temperature: "hot" });
    expect(wrongType.param).toBe("temperature");
    expect(wrongType.message).toBe("Invalid type for 'temperature': expected a number, but got a string instead.");
    const missing = errorFor({});
    expect(missing.param).toBe("messages");
    expect(missing.message).toBe("Missing required parameter: 'messages'.");
    expect(missing.code).toBe("missing_required_parameter");
  });

  it("treats a non-object body as a body error and prefixes a root", () => {
    expect(errorFor("nope").param).toBeNull();
    expect(errorFor("nope").message).toMatch(/JSON object/);
    expect(errorFor({ messages: [], temperature: 9 }, "body").param).toBe("body.temperature");
  });

  it("formats paths", () => {
    expect(formatParamPath([])).toBeNull();
    expect(formatParamPath(["messages", 0, "content", 2, "text"])).toBe("messages[0].content[2].text");
    expect(formatParamPath([0], "prompt")).toBe("prompt[0]");
  });
});
