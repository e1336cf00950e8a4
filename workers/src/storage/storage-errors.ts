/**
 * Storage that fails (D1 or R2 unreachable, a write refused) is the client's cue to retry, not a
 * bug: the routes write so that a failure leaves nothing half-written (a blob before the row that
 * points at it, rows in one batch), and the error handler answers such a failure with a 503 and
 * Retry-After. R2's errors carry nothing to tell them from others, so the bucket is wrapped once
 * per request (guardedStorage) to mark them; D1's come through drizzle as query errors.
 */
import { DrizzleQueryError } from "drizzle-orm/errors";
import { ApiError } from "../../../src/errors.ts";

/** A D1 or R2 operation that failed. */
export class StorageError extends Error {
  override name = "StorageError";
}

// The runtime hands every request the same env object: wrap it once, not per request.
const guarded = new WeakMap<Env, Env>();

/** The environment with its R2 bucket's failures marked as StorageError. */
export function guardedStorage(env: Env): Env {
  let wrapped = guarded.get(env);
  if (wrapped === undefined) {
    wrapped = { ...env, BLOBS: guardedBucket(env.BLOBS) };
    guarded.set(env, wrapped);
  }
  return wrapped;
}

function guardedBucket(bucket: R2Bucket): R2Bucket {
  const mark = (operation: string, error: unknown) => new StorageError(`R2 ${operation} failed: ${(error as Error).message}`, { cause: error });
  return new Proxy(bucket, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        try {
          const result: unknown = value.apply(target, args);
          return result instanceof Promise ? result.catch((error: unknown) => Promise.reject(mark(String(property), error))) : result;
        } catch (error) {
          throw mark(String(property), error);
        }
      };
    },
  });
}

/** Whether an error is a storage failure (R2 through the guard, D1 through drizzle or raw). */
export function isStorageFailure(error: unknown): boolean {
  return error instanceof StorageError || error instanceof DrizzleQueryError || (error instanceof Error && /^D1_/.test(error.message));
}

/** The 503 a client gets for a storage failure: nothing was changed, and a retry may succeed. */
export function storageUnavailable(): ApiError {
  return new ApiError(503, "server_error", "Storage is unavailable right now and nothing was changed; please retry shortly.", null, "storage_unavailable", 1);
}

/**
 * Stores a blob under a fresh key, then the rows that point at it. When the rows fail, the blob is
 * deleted again (in the background; a blob nothing points at is invisible if that fails too), so a
 * retried request leaves exactly one blob behind.
 */
export async function blobThenRows<Result>(
  env: Pick<Env, "BLOBS">,
  context: Pick<ExecutionContext, "waitUntil">,
  blob: { key: string; bytes: Uint8Array; options?: R2PutOptions },
  rows: () => Promise<Result>,
): Promise<Result> {
  await env.BLOBS.put(blob.key, blob.bytes, blob.options);
  try {
    return await rows();
  } catch (error) {
    context.waitUntil(
      env.BLOBS.delete(blob.key).catch((cleanup: unknown) => console.error(`orphan blob ${blob.key} not deleted: ${(cleanup as Error).message}`)),
    );
    throw error;
  }
}
