// Small DOM and formatting helpers shared by the pages. Every text that
// comes from the server (job names, log lines, class names, errors) goes
// into the page through `h` as text nodes, never as HTML.

/**
 * Creates an element: `h("a", {href: "#/jobs", class: "x"}, "text", child)`.
 * Attributes starting with `on` are event listeners; `dataset` is an object
 * of data-* values; `false`, `null` and `undefined` attributes and children
 * are skipped; arrays of children are flattened.
 */
export function h(tag, attrs, ...children) {
  const svg = SVG_TAGS.has(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" && !svg) {
      el.value = value;
    } else if (key === "checked" || key === "selected" || key === "disabled" || key === "hidden") {
      el[key] = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

const SVG_TAGS = new Set(["svg", "g", "path", "line", "rect", "text", "title", "circle", "polyline", "desc"]);

function append(el, children) {
  for (const child of children) {
    if (child === false || child === null || child === undefined) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const ENUM_PREFIXES = [
  "JOB_STATE_", "WORKER_STATE_", "DATASET_KIND_", "ARCH_", "HEAD_", "PRETRAINED_SOURCE_", "NORMALIZATION_",
  "RESIZE_METHOD_", "PRECISION_", "COLLECTIVE_BACKEND_", "DEVICE_KIND_", "FAILURE_KIND_", "SERVER_ROLE_",
  "EXPLAIN_METHOD_", "IMAGE_ERROR_KIND_", "WEIGHTS_FORMAT_", "FAITHFULNESS_BASELINE_", "FAITHFULNESS_METRIC_",
  "REGISTER_POLICY_", "MONITOR_METRIC_",
];

/** `JOB_STATE_RUNNING` → `running`, `FAILURE_KIND_WORKER_LOST` → `worker-lost`. */
export function shortEnum(value) {
  if (!value) return "";
  let s = String(value);
  const prefix = ENUM_PREFIXES.find((p) => s.startsWith(p));
  if (prefix) s = s.slice(prefix.length);
  return s.toLowerCase().replaceAll("_", "-");
}

/** A proto3-JSON 64-bit integer (a string) or number as a Number. */
export function num(value) {
  if (value === undefined || value === null || value === "") return 0;
  return Number(value);
}

/** `1.2345` → `1.234`, with a fixed number of significant digits. */
export function fmt(value, digits = 4) {
  if (value === undefined || value === null || Number.isNaN(Number(value))) return "–";
  const n = Number(value);
  if (n === 0) return "0";
  if (Math.abs(n) >= 1e5 || Math.abs(n) < 1e-3) return n.toExponential(2);
  return Number(n.toPrecision(digits)).toString();
}

/** Seconds as `12.3 s`, `4:05`, or `1:02:03`. */
export function fmtSeconds(seconds) {
  const s = Number(seconds) || 0;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const whole = Math.round(s);
  const hh = Math.floor(whole / 3600);
  const mm = Math.floor((whole % 3600) / 60);
  const ss = String(whole % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** Bytes as `1.5 GiB`. */
export function fmtBytes(bytes) {
  let n = num(bytes);
  if (!n) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** Unix milliseconds as a local date and time; `–` for 0. */
export function fmtTime(ms) {
  const n = num(ms);
  return n ? new Date(n).toLocaleString() : "–";
}

/** Unix milliseconds as `5 s ago`, `3 min ago`, `2 h ago`, `4 d ago`. */
export function fmtAge(ms, now = Date.now()) {
  const n = num(ms);
  if (!n) return "–";
  const s = Math.max(0, (now - n) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A `<time>` element showing the age, with the full time as its title. */
export function timeAgo(ms) {
  const n = num(ms);
  if (!n) return "–";
  return h("time", { datetime: new Date(n).toISOString(), title: fmtTime(n) }, fmtAge(n));
}

/** Politely tells screen readers (and shows in the status bar) `text`. */
export function announce(text, kind = "info") {
  const bar = document.getElementById("status-bar");
  if (!bar) return;
  bar.dataset.kind = kind;
  bar.dataset.at = String(Date.now());
  bar.textContent = text;
  bar.hidden = !text;
  clearTimeout(announce.timer);
  if (text && kind !== "error") announce.timer = setTimeout(() => { bar.hidden = true; }, 6000);
}

/** A badge for a job or worker state (`JOB_STATE_RUNNING` → "running"). */
export function stateBadge(state) {
  const name = shortEnum(state);
  return h("span", { class: `badge state-${name}`, dataset: { state: name } }, name || "unknown");
}

/** Saves `blob` as a file called `name` (a temporary link, clicked). */
export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** A table from column headers and rows of cells (nodes or text). */
export function table(caption, headers, rows, attrs = {}) {
  return h("table", attrs,
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((cells) => (cells instanceof Node ? cells : h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}

/** A random id (crypto.randomUUID needs a secure context; this does not). */
export function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
