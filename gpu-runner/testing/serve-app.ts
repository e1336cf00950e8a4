/** Serves a Hono app on a free loopback port for a test, with a close that drops open connections. */
import { serve } from "@hono/node-server";
import type { Server } from "node:http";
import type { Hono } from "hono";

export interface Served {
  url: string;
  close(): Promise<void>;
}

/** Serves an app on a free local port. */
export function listen(app: Hono): Promise<Served> {
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, (info) => {
      resolve({
        url: `http://127.0.0.1:${info.port}`,
        close: () =>
          new Promise<void>((done, fail) => {
            (server as Server).closeAllConnections();
            server.close((error) => (error ? fail(error) : done()));
          }),
      });
    });
  });
}
