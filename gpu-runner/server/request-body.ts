import type { Context } from "hono";
import { badRequest } from "../../src/errors.ts";

/** The request's JSON body; a body that is not JSON is a 400 an OpenAI client can read. */
export async function jsonBody(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw badRequest("We could not parse the JSON body of your request. The body must be a JSON object.", null, "invalid_json");
  }
}
