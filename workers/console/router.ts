/**
 * The console's pages as paths under /console, moved between with the History API so links,
 * the back button and reloads all work (the edge serves the same shell for every such path).
 */
import { useEffect, useState } from "hono/jsx/dom";
import { CONSOLE_PATHS } from "../../src/protocol/console.ts";

const CHANGE = "console:navigate";

/** The path below /console, without slashes at either end ("" for the jobs list). */
function currentPath(): string {
  return window.location.pathname.slice(CONSOLE_PATHS.root.length).replace(/^\/+|\/+$/g, "");
}

/** The href of a console page. */
export function href(path: string, query?: Record<string, string>): string {
  const search = query ? `?${new URLSearchParams(query)}` : "";
  return `${CONSOLE_PATHS.root}${path === "" ? "" : `/${path}`}${search}`;
}

/** Goes to a console page without reloading. */
export function navigate(to: string): void {
  window.history.pushState(null, "", to);
  window.dispatchEvent(new Event(CHANGE));
}

/** The current page's path and query, re-rendering on navigation. */
export function useLocation(): { path: string; query: URLSearchParams } {
  const [location, setLocation] = useState(() => ({ path: currentPath(), query: new URLSearchParams(window.location.search) }));
  useEffect(() => {
    const update = () => setLocation({ path: currentPath(), query: new URLSearchParams(window.location.search) });
    window.addEventListener("popstate", update);
    window.addEventListener(CHANGE, update);
    return () => {
      window.removeEventListener("popstate", update);
      window.removeEventListener(CHANGE, update);
    };
  }, []);
  return location;
}

/** Follows in-console links without a reload (a modified click still opens a new tab). */
export function interceptLinks(root: HTMLElement): void {
  root.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const anchor = (event.target as Element).closest("a");
    if (anchor === null || anchor.target !== "" || anchor.origin !== window.location.origin) return;
    if (anchor.getAttribute("href")?.startsWith("#")) return; // in-page, such as "Skip to content"
    if (!anchor.pathname.startsWith(CONSOLE_PATHS.root) || anchor.pathname.startsWith(CONSOLE_PATHS.assets)) return;
    event.preventDefault();
    navigate(anchor.pathname + anchor.search);
  });
}
