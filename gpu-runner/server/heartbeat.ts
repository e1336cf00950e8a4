/**
 * The runner's heartbeat to the control plane: every few seconds it tells the edge where it is
 * reachable, which base model and basis it serves, and how busy it is, so the edge routes to it
 * (and brings it back into rotation after failures). A missed beat is only logged: the edge
 * drops a runner whose beats stop, which is exactly what should happen.
 */
import { HEARTBEAT_INTERVAL_SECONDS, HEARTBEAT_PATH, type RunnerHeartbeatBody } from "../../src/protocol/heartbeat.ts";
import { runnerAuthorization } from "../../src/protocol/runner.ts";

export interface HeartbeatOptions {
  edgeUrl: string; // the control plane's base URL
  secret: string; // the runner secret, sent as a bearer token
  report: () => RunnerHeartbeatBody; // read at every beat
  intervalMs?: number; // default HEARTBEAT_INTERVAL_SECONDS
  timeoutMs?: number; // one beat's longest wait; default 5 s
  log?: (message: string) => void;
}

/** A running heartbeat loop. */
export interface Heartbeat {
  /** Sends one beat now; resolves true when the edge accepted it. */
  beat(): Promise<boolean>;
  /** Stops the loop (a beat in flight is allowed to finish). */
  stop(): void;
}

/** Starts beating at once and then every interval; the timer never keeps the process alive. */
export function startHeartbeat(options: HeartbeatOptions): Heartbeat {
  const endpoint = new URL(`.${HEARTBEAT_PATH}`, options.edgeUrl.endsWith("/") ? options.edgeUrl : `${options.edgeUrl}/`).href;
  const log = options.log ?? ((message: string) => console.error(message));
  let healthy: boolean | null = null; // log only changes, not every missed beat while the edge is down

  const beat = async (): Promise<boolean> => {
    let problem: string | null = null;
    try {
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { ...runnerAuthorization(options.secret), "content-type": "application/json" },
        body: JSON.stringify(options.report()),
        signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
      });
      if (!response.ok) problem = `${response.status} ${(await response.text()).slice(0, 200)}`;
      else await response.body?.cancel();
    } catch (error) {
      problem = (error as Error).message;
    }
    if (problem !== null && healthy !== false) log(`heartbeat to ${endpoint} failed: ${problem}`);
    if (problem === null && healthy === false) log(`heartbeat to ${endpoint} works again`);
    healthy = problem === null;
    return healthy;
  };

  void beat();
  const timer = setInterval(() => void beat(), options.intervalMs ?? HEARTBEAT_INTERVAL_SECONDS * 1000);
  timer.unref();
  return { beat, stop: () => clearInterval(timer) };
}
