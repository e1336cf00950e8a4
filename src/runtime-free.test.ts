// src/ is shared by the Cloudflare Worker and the Node runner, so it may use neither runtime.
import { readdirSync, readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const SOURCE_DIRECTORY = import.meta.dirname;
const IMPORT_SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*)["']([^"']+)["']/g;

function sourceFiles(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    // Tests run under Node only and may read the file system.
    return /\.[cm]?[jt]sx?$/.test(entry.name) && !/\.test\.[cm]?[jt]sx?$/.test(entry.name) ? [path] : [];
  });
}

describe("src/ is runtime-free", () => {
  it("has source files to check", () => {
    expect(sourceFiles(SOURCE_DIRECTORY).length).toBeGreaterThan(0);
  });

  it("imports nothing from node: or cloudflare:, nor a bare Node built-in", () => {
    const builtins = new Set(builtinModules);
    const offenders: string[] = [];
    for (const file of sourceFiles(SOURCE_DIRECTORY)) {
      for (const match of readFileSync(file, "utf8").matchAll(IMPORT_SPECIFIER)) {
        const specifier = match[1];
        if (specifier.startsWith("node:") || specifier.startsWith("cloudflare:") || builtins.has(specifier.split("/")[0])) {
          offenders.push(`${relative(SOURCE_DIRECTORY, file)} imports "${specifier}"`);
        }
      }
    }
    expect(offenders).toEqual([]);
  });
});
