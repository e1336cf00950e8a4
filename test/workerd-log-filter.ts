/**
 * A global setup for the Workers test project that drops one line of benign noise:
 * `exception = workerd/api/web-socket.c++:NNN: disconnected: WebSocket peer disconnected`, which
 * workerd logs (at info level) once per test file when @cloudflare/vitest-pool-workers closes the
 * WebSocket to that file's runner. The pool prints workerd's logs with `process.stdout.write` or
 * `process.stderr.write` in vitest's own process, where vitest's `onConsoleLog` never sees them,
 * and filters its other benign disconnects itself; it filters this one from version 0.16.6 on, so
 * this file can go with that upgrade. Only a write that is exactly that line is dropped: anything
 * else, an exception with a stack included, is printed as it comes.
 */

const BENIGN = /^exception = workerd\/api\/web-socket\.c\+\+:\d+: disconnected: WebSocket peer disconnected\r?\n?$/;

/** Whether `chunk` (one write to stdout or stderr) is the benign disconnect line and nothing else. */
export function isBenignWorkerdLine(chunk: unknown): boolean {
  const text = typeof chunk === "string" ? chunk : chunk instanceof Uint8Array ? Buffer.from(chunk).toString("utf8") : null;
  return text !== null && BENIGN.test(text);
}

/** `stream.write`, less the benign line. */
export function filterWrites(stream: NodeJS.WriteStream): void {
  const write = stream.write;
  stream.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]) {
    if (!isBenignWorkerdLine(chunk)) return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    // Call back as a real write would, for a writer that waits on it.
    const callback = rest.find((argument) => typeof argument === "function") as (() => void) | undefined;
    callback?.();
    return true;
  } as typeof stream.write;
}

/**
 * Installs the filter on this process's stdout and stderr for the rest of the run: the pool logs
 * the last test file's disconnect after the global teardown, so there is nothing to undo.
 */
export default function setup(): void {
  filterWrites(process.stdout);
  filterWrites(process.stderr);
}
