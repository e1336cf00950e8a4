/**
 * A real Chromium for the console's browser tests: Debian's `chromium` (or CHROMIUM_PATH) driven
 * by playwright-core, headless. `.ci/run` installs the package when it is missing.
 */
import { access } from "node:fs/promises";
import { chromium, type Browser } from "playwright-core";

const CANDIDATES = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];

/** Launches the first Chromium found; throws saying how to install one when there is none. */
export async function launchChromium(): Promise<Browser> {
  for (const path of CANDIDATES) {
    if (!path) continue;
    const found = await access(path).then(
      () => true,
      () => false,
    );
    if (!found) continue;
    // Root (containers, CI) cannot use Chromium's sandbox.
    const args = process.getuid?.() === 0 ? ["--no-sandbox"] : [];
    return chromium.launch({ executablePath: path, args, headless: true });
  }
  throw new Error("The console's browser tests need Chromium: `apt-get install chromium` (Debian), or set CHROMIUM_PATH to a Chromium or Chrome binary.");
}
