// Reading a request's JSON body the same way at the edge and on the runner.
import { badRequest } from "./errors.ts";

/** Anything with a Hono-style request (`c.req.json()`). */
export interface HasJsonRequest {
  req: { json(): Promise<unknown> };
}

/** The request's JSON body; a body that is not JSON is a 400 an OpenAI client can read. */
export async function jsonBody(c: HasJsonRequest): Promise<unknown> {
  try {
    return await c.req.json();
  } catch {
    throw badRequest("We could not parse the JSON body of your request. The body must be a JSON object.", null, "invalid_json");
  }
}
