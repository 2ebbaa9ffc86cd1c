// The console's entry point: hash routes to pages, the header (who is
// signed in, the token button), and hiding editor-only controls from
// viewers. Each page module exports `render(main, params)`, which may
// return a function that stops what the page started (event streams,
// timers) when the page is left.

import { askForToken, errorBox, whoami } from "./api.js";
import { announce, h, replace } from "./dom.js";
import * as explain from "./explain.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";
import * as submit from "./submit.js";
import * as workers from "./workers.js";

const ROUTES = {
  jobs: { title: "Jobs", render: (main, params, rest) => (rest ? jobs.renderJob(main, rest) : jobs.renderList(main, params)) },
  submit: { title: "Submit a job", render: submit.render },
  models: { title: "Models", render: models.render },
  explain: { title: "Explain", render: explain.render },
  workers: { title: "Workers & status", render: workers.render },
};

/** The signed-in principal as /v1/whoami tells it; null when unknown. */
export const session = { principal: null };

let leave = null;

/** `#/jobs/j-3?x=1` → {route: "jobs", rest: "j-3", params}. */
function parseHash() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const [route, ...rest] = path.split("/");
  return { route: route || "jobs", rest: rest.map(decodeURIComponent).join("/"), params: new URLSearchParams(query) };
}

async function show() {
  const { route, rest, params } = parseHash();
  if (leave) {
    try {
      leave();
    } catch {
      // A page that failed to clean up must not block the next one.
    }
    leave = null;
  }
  const page = ROUTES[route];
  const main = document.getElementById("main");
  for (const link of document.querySelectorAll("nav a[data-route]")) {
    if (link.dataset.route === route) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!page) {
    replace(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, "No page here. ", h("a", { href: "#/jobs" }, "See the jobs.")));
    return;
  }
  document.title = `${page.title} · Camshaft`;
  // A message said just before this page was opened ("Submitted j-3.") stays.
  if (Date.now() - Number(document.getElementById("status-bar").dataset.at || 0) > 1500) announce("");
  replace(main);
  try {
    leave = (await page.render(main, params, rest)) || null;
  } catch (e) {
    main.append(errorBox(e));
  }
  const heading = main.querySelector("h1");
  if (heading && show.moveFocus) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: false });
  }
  show.moveFocus = true;
}

/** Asks the server who we are and hides editor-only controls for viewers. */
async function refreshPrincipal() {
  const label = document.getElementById("whoami");
  try {
    session.principal = await whoami();
  } catch {
    session.principal = null;
  }
  const p = session.principal;
  document.body.classList.toggle("viewer", Boolean(p && p.role === "viewer"));
  label.textContent = p ? `${p.name} (${p.role})` : "";
}

document.addEventListener("camshaft:token", async () => {
  await refreshPrincipal();
});

document.getElementById("token-button").addEventListener("click", async () => {
  await askForToken();
  await refreshPrincipal();
  show();
});

document.getElementById("skip-link").addEventListener("click", () => {
  const main = document.getElementById("main");
  (main.querySelector("h1") || main).focus();
});

window.addEventListener("hashchange", show);
window.addEventListener("unhandledrejection", (event) => {
  announce(String((event.reason && event.reason.message) || event.reason), "error");
});

show.moveFocus = false;
await refreshPrincipal();
show();
