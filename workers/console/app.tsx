/**
 * The console's script: the header (navigation, who is signed in, sign-out) and the page the
 * path names. Pages read and change everything through the public API as the signed-in session.
 */
import { render } from "hono/jsx/dom";
import { CONSOLE_PATHS, CSRF_FIELD } from "../../src/protocol/console.ts";
import { AdaptersPage } from "./pages/adapters.tsx";
import { FilesPage } from "./pages/files.tsx";
import { JobPage } from "./pages/job.tsx";
import { JobsPage } from "./pages/jobs.tsx";
import { NewJobPage } from "./pages/new-job.tsx";
import { PlaygroundPage } from "./pages/playground.tsx";
import { UsagePage } from "./pages/usage.tsx";
import { href, interceptLinks, useLocation } from "./router.ts";
import { csrfToken, signedInAs } from "./session.ts";

const SECTIONS = [
  { path: "", title: "Jobs" },
  { path: "fine-tune", title: "New fine-tune" },
  { path: "files", title: "Files" },
  { path: "adapters", title: "Adapters" },
  { path: "playground", title: "Playground" },
  { path: "usage", title: "Usage" },
];

function Header(props: { section: string }) {
  return (
    <header class="top">
      <a class="skip" href="#main">
        Skip to content
      </a>
      <a class="brand" href={href("")}>
        PiCa console
      </a>
      <nav aria-label="Console">
        <ul>
          {SECTIONS.map((section) => (
            <li>
              <a href={href(section.path)} aria-current={section.path === props.section ? "page" : undefined}>
                {section.title}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <div class="account">
        <span class="mono" title="tenant">
          {signedInAs.tenant}
        </span>
        <span class="key-name">key “{signedInAs.keyName}”</span>
        <form method="post" action={CONSOLE_PATHS.signOut}>
          <input type="hidden" name={CSRF_FIELD} value={csrfToken} />
          <button type="submit" class="secondary">
            Sign out
          </button>
        </form>
      </div>
    </header>
  );
}

/** A path segment as text (a malformed escape stays as typed: the API then says no such job). */
function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function Page(props: { path: string; query: URLSearchParams }) {
  const [section, id] = props.path.split("/");
  switch (section) {
    case "":
      return <JobsPage />;
    case "jobs":
      return id ? <JobPage id={decoded(id)} /> : <JobsPage />;
    case "fine-tune":
      return <NewJobPage />;
    case "files":
      return <FilesPage />;
    case "adapters":
      return <AdaptersPage />;
    case "playground":
      return <PlaygroundPage model={props.query.get("model")} />;
    case "usage":
      return <UsagePage />;
    default:
      return (
        <p class="empty">
          No console page at {props.path}. Back to <a href={href("")}>the jobs</a>.
        </p>
      );
  }
}

function App() {
  const { path, query } = useLocation();
  const section = path.split("/")[0];
  const current = section === "jobs" ? "" : section;
  const title = SECTIONS.find((s) => s.path === current)?.title ?? "Console";
  document.title = `${title} · PiCa console`;
  return (
    <>
      <Header section={current} />
      <main id="main" tabIndex={-1}>
        <Page path={path} query={query} />
      </main>
    </>
  );
}

const root = document.getElementById("app")!;
interceptLinks(root);
root.replaceChildren();
render(<App />, root);
