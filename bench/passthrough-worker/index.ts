/**
 * The edge bench's baseline: a worker that sends each request on to the runner and returns the
 * runner's response body untouched. Run under the same `wrangler dev` as the edge, what it costs
 * is the platform's (workerd and wrangler's local proxy relaying a stream), so the edge's time
 * over it is the edge's own work. GET /ready answers 204 so the bench knows it has started.
 */
interface PassThroughEnv {
  RUNNER_URL: string;
}

export default {
  async fetch(request: Request, env: PassThroughEnv): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/ready") return new Response(null, { status: 204 });
    const upstream = await fetch(`${env.RUNNER_URL}${url.pathname}`, {
      method: request.method,
      headers: { "content-type": request.headers.get("content-type") ?? "application/json" },
      body: request.method === "GET" ? undefined : await request.arrayBuffer(),
    });
    return new Response(upstream.body, { status: upstream.status, headers: { "content-type": upstream.headers.get("content-type") ?? "text/plain" } });
  },
};
