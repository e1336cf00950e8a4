/**
 * Fresh directory paths under one temporary root per test file, removed after the file's tests.
 * Call at the top level of a test file; each call of the returned function names a new path.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";

/** Registers the root's creation and removal, and returns `label → a path no other call returns`. */
export function scratchDirectories(prefix: string): (label: string) => string {
  let root: string;
  let counter = 0;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), `${prefix}-`));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });
  return (label) => join(root, `${label}-${counter++}`);
}
