/**
 * Writes a file so that readers see the old content or the new, never half of it, and a crash
 * leaves no partial file under the final name: the bytes go to a temporary file in the same
 * directory (so the rename never crosses file systems), are synced, then renamed into place.
 */
import { randomUUID } from "node:crypto";
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** A path beside `path` that no other writer uses, for a file filled there and then renamed into place. */
export function temporaryPathBeside(path: string): string {
  return join(dirname(path), `.${basename(path)}.${randomUUID()}.tmp`);
}

/** Writes `data` to `path` atomically; the directory must exist. */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const temporaryPath = temporaryPathBeside(path);
  try {
    const handle = await open(temporaryPath, "wx");
    try {
      await handle.writeFile(data);
      await handle.sync(); // the data must be on disk before the rename makes it visible
    } finally {
      await handle.close();
    }
    await rename(temporaryPath, path);
  } catch (error) {
    await unlink(temporaryPath).catch(() => undefined);
    throw error;
  }
}
