// The Jobs pages: the list (filters, progress, refreshed every few
// seconds while shown) and one job's live page, fed by the job's
// Server-Sent Events (no polling): the epoch table, loss / accuracy curves,
// the planned learning-rate schedule, the attempts and why each ended, the
// step-time breakdown of profiled jobs with a Chrome trace to download, the
// log, and a cancel button.

import { api, errorBox, errorText, withAccessToken } from "./api.js";
import { lineChart, stackedBars } from "./charts.js";
import {
  announce, download, fmt, fmtBytes, fmtSeconds, fmtTime, h, num, replace, shortEnum, stateBadge, table, timeAgo,
} from "./dom.js";

const STATES = ["pending", "running", "restarting", "succeeded", "failed", "cancelled"];
const TERMINAL = new Set(["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"]);
const LIST_REFRESH_MS = 5000;

/** Epochs of a job's whole plan: fine_tune adds its frozen epochs. */
export function totalEpochs(spec) {
  if (!spec) return 0;
  const frozen = spec.fineTune ? (spec.freezeEpochs ?? 1) : 0;
  return num(spec.epochs) + num(frozen);
}

function modelLabel(spec) {
  if (!spec) return "";
  if (spec.collectiveBench) return "all-reduce sweep";
  return `${shortEnum(spec.arch)} + ${shortEnum(spec.head)}`;
}

function datasetLabel(spec) {
  const d = spec && spec.dataset;
  if (!d || spec.collectiveBench) return "–";
  const kind = shortEnum(d.kind);
  return d.dataDir ? `${kind}:${d.dataDir}` : kind;
}

/** Epochs done: the job's count, or its history's when that says more. */
function epochsDone(job) {
  const seen = (job.history || []).map((r) => num(r.epoch) + 1);
  return Math.max(num(job.epochsDone), ...seen, 0);
}

function progress(job) {
  const total = totalEpochs(job.spec);
  if (job.spec && job.spec.collectiveBench) return `${(job.allreduceRows || []).length} sizes`;
  const done = epochsDone(job);
  return h("span", { class: "progress" },
    h("progress", { max: total || 1, value: done, "aria-label": `${done} of ${total} epochs` }),
    ` ${done}/${total}`);
}

// ───────────────────────────── the list ─────────────────────────────

export async function renderList(main, params) {
  const chosen = new Set((params.get("states") || "").split(",").filter((s) => STATES.includes(s)));
  const search = h("input", { type: "search", id: "job-search", placeholder: "id, name, model, data set, submitter", value: params.get("q") || "" });
  const boxes = STATES.map((s) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "state", value: s, checked: chosen.has(s) }), s));
  const body = h("div", { id: "jobs-body", "aria-live": "polite", "aria-busy": "true" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter jobs", onsubmit: (e) => e.preventDefault() },
    h("fieldset", {}, h("legend", {}, "State"), boxes),
    h("div", { class: "field" }, h("label", { for: "job-search" }, "Search"), search),
    h("button", { type: "button", class: "secondary", onclick: () => load() }, "Refresh"));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"),
      h("a", { class: "button needs-editor", href: "#/submit" }, "Submit a job")),
    filters, body, more);

  let jobs = [];
  let nextPageToken = "";
  let lastSig = "";
  let timer = null;
  let stopped = false;

  const states = () => STATES.filter((s) => boxes.find((b) => b.querySelector("input").value === s).querySelector("input").checked);

  function query(token) {
    const q = new URLSearchParams();
    for (const s of states()) q.append("states", s);
    q.set("pageSize", "50");
    if (token) q.set("pageToken", token);
    return `v1/jobs?${q}`;
  }

  function draw() {
    const needle = search.value.trim().toLowerCase();
    const shown = jobs.filter((j) => !needle || [j.id, j.spec?.name, modelLabel(j.spec), datasetLabel(j.spec), j.createdBy]
      .some((v) => String(v || "").toLowerCase().includes(needle)));
    if (!shown.length) {
      replace(body, h("p", { class: "empty" }, jobs.length ? "No job matches the search."
        : states().length ? "No job is in the chosen states." : "No jobs yet."));
    } else {
      replace(body, table("Jobs, newest first", ["Job", "State", "Name", "Model", "Data set", "Workers", "Progress", "Age", "Submitted by"],
        shown.map((j) => h("tr", { dataset: { job: j.id } },
          h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)),
          h("td", {}, stateBadge(j.state)),
          h("td", {}, j.spec?.name || ""),
          h("td", {}, modelLabel(j.spec)),
          h("td", {}, datasetLabel(j.spec)),
          h("td", {}, j.worldSize ? `${(j.workerIds || []).length} (${j.worldSize} ranks)` : String(j.spec?.workers || 1)),
          h("td", {}, progress(j)),
          h("td", {}, timeAgo(j.createdUnixMs)),
          h("td", {}, j.createdBy || ""))), { class: "jobs-table" }));
    }
    more.hidden = !nextPageToken;
    body.setAttribute("aria-busy", "false");
  }

  async function load() {
    clearTimeout(timer);
    try {
      // Reload as many pages as are shown, so "Load more" survives refreshes.
      const want = Math.max(jobs.length, 1);
      let token = "";
      const fresh = [];
      do {
        const page = await api(query(token));
        fresh.push(...(page.jobs || []));
        token = page.nextPageToken || "";
      } while (token && fresh.length < want);
      // Redraw only on a change, so a refresh does not take the keyboard
      // focus away from a link in the table.
      const sig = JSON.stringify([token, fresh.map((j) => [j.id, j.state, j.epochsDone, (j.history || []).length, j.worldSize])]);
      jobs = fresh;
      nextPageToken = token;
      if (sig !== lastSig || !body.querySelector("table, .empty")) draw();
      lastSig = sig;
    } catch (e) {
      replace(body, errorBox(e));
    }
    if (!stopped) timer = setTimeout(() => (document.hidden ? (timer = setTimeout(load, LIST_REFRESH_MS)) : load()), LIST_REFRESH_MS);
  }

  more.addEventListener("click", async () => {
    try {
      const page = await api(query(nextPageToken));
      jobs.push(...(page.jobs || []));
      nextPageToken = page.nextPageToken || "";
      draw();
    } catch (e) {
      announce(errorText(e), "error");
    }
  });
  for (const b of boxes) b.querySelector("input").addEventListener("change", () => {
    const q = new URLSearchParams();
    if (states().length) q.set("states", states().join(","));
    history.replaceState(null, "", `#/jobs${q.toString() ? `?${q}` : ""}`);
    jobs = [];
    lastSig = "";
    load();
  });
  search.addEventListener("input", draw);
  await load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ───────────────────────────── one job ─────────────────────────────

/** fastai's SchedCos and combined_cos (crates/vision/src/schedule.rs). */
function schedCos(start, end, pos) {
  return start + ((1 + Math.cos(Math.PI * (1 - pos))) * (end - start)) / 2;
}
function combinedCos(pct, start, middle, end, pos) {
  return pos < pct ? schedCos(start, middle, pos / pct) : schedCos(middle, end, (pos - pct) / (1 - pct));
}

/**
 * The planned learning rate of the head's parameter group over the plan,
 * as [[epoch position, lr], ...]: fit_one_cycle (warm-up from lr/25 over
 * 25%, down to lr/1e5), or fine_tune (frozen one-cycle at pct_start 0.99,
 * then half the base rate with pct_start 0.3 and div 5).
 */
export function plannedLr(spec) {
  const stages = [];
  if (spec.fineTune) {
    const base = spec.lr ?? 2e-3;
    const frozen = num(spec.freezeEpochs ?? 1);
    if (frozen > 0) stages.push({ epochs: frozen, lr: base, pct: 0.99, div: 25 });
    stages.push({ epochs: num(spec.epochs), lr: base / 2, pct: 0.3, div: 5 });
  } else {
    stages.push({ epochs: num(spec.epochs), lr: spec.lr ?? 1e-3, pct: 0.25, div: 25 });
  }
  const points = [];
  let offset = 0;
  for (const s of stages) {
    const n = 60;
    for (let i = 0; i <= n; i++) {
      const pos = i / n;
      points.push([offset + pos * s.epochs, s.lr * combinedCos(s.pct, 1 / s.div, 1, 1e-5, Math.min(pos, 0.9999))]);
    }
    offset += s.epochs;
  }
  return points;
}

const PHASES = ["data", "forward", "backward", "allreduce", "optimizer"];

function phaseSeconds(p) {
  return PHASES.map((name) => Number((p && p[name]) || 0));
}

/** Chrome trace-event JSON of one epoch row's traced steps (as `ctl jobs trace`). */
export function chromeTrace(jobId, row) {
  const events = [];
  for (const profile of row.stepProfiles || []) {
    const pid = num(profile.rank);
    events.push({ name: "process_name", ph: "M", pid, args: { name: `rank ${pid}` } });
    events.push({ name: "process_sort_index", ph: "M", pid, args: { sort_index: pid } });
    for (const step of profile.lastSteps || []) {
      const seconds = phaseSeconds(step.seconds);
      let at = Number(step.startSeconds || 0) * 1e6;
      const stepNo = num(step.step);
      events.push({
        name: `step ${stepNo}`, cat: "step", ph: "X", pid, tid: 0, ts: at,
        dur: seconds.reduce((a, b) => a + b, 0) * 1e6, args: { epoch: num(row.epoch), step: stepNo },
      });
      PHASES.forEach((name, i) => {
        events.push({ name, cat: "phase", ph: "X", pid, tid: 0, ts: at, dur: seconds[i] * 1e6, args: { epoch: num(row.epoch), step: stepNo } });
        at += seconds[i] * 1e6;
      });
    }
  }
  return {
    traceEvents: events,
    displayTimeUnit: "ms",
    otherData: { job: jobId, epoch: num(row.epoch), attempt: num(row.attempt), world_size: num(row.worldSize) },
  };
}

export async function renderJob(main, id) {
  const st = {
    job: await api(`v1/jobs/${encodeURIComponent(id)}`).then((r) => r.job),
    rows: new Map(),
    stateEvents: [],
    failures: [],
    logs: [],
    allreduce: new Map(),
    lastSeq: 0,
    profileEpoch: null,
  };
  for (const row of st.job.history || []) st.rows.set(`${num(row.attempt)}:${num(row.epoch)}`, row);
  for (const r of st.job.allreduceRows || []) st.allreduce.set(`${num(r.attempt)}:${num(r.bytes)}`, r);

  const badge = h("span", { id: "job-state" });
  const live = h("span", { id: "job-live", class: "live", role: "status" });
  const actions = h("div", { class: "actions" });
  const summary = h("dl", { class: "summary", id: "job-summary" });
  const epochs = h("section", { id: "job-epochs", "aria-labelledby": "epochs-h" });
  const curves = h("section", { id: "job-curves", "aria-labelledby": "curves-h" });
  const attempts = h("section", { id: "job-attempts", "aria-labelledby": "attempts-h" });
  const profile = h("section", { id: "job-profile", "aria-labelledby": "profile-h" });
  const sweep = h("section", { id: "job-allreduce", "aria-labelledby": "allreduce-h" });
  const logList = h("ol", { class: "log", id: "job-log", "aria-label": "Log lines", tabindex: "0" });
  const logs = h("section", { id: "job-logs", "aria-labelledby": "log-h" },
    h("h2", { id: "log-h" }, "Log"), logList);

  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", id),
    h("div", { class: "page-head" }, h("h1", {}, `Job ${id} `, badge), live, actions),
    summary, epochs, curves, attempts, profile, sweep, logs);

  function drawHead() {
    const job = st.job;
    replace(badge, stateBadge(job.state));
    replace(actions,
      job.modelVersion ? h("a", { class: "button secondary", href: `#/explain?model=${encodeURIComponent(job.modelVersion)}` }, `Explain ${job.modelVersion}`) : null,
      TERMINAL.has(job.state) ? null : h("button", { type: "button", class: "danger needs-editor", id: "cancel-job", onclick: cancel }, "Cancel job"));
    const spec = job.spec || {};
    const items = [
      ["Name", spec.name || "–"],
      ["Model", modelLabel(spec)],
      ["Data set", datasetLabel(spec)],
      ["Plan", spec.collectiveBench ? "all-reduce sweep"
        : `${spec.fineTune ? `fine_tune(${spec.epochs}, freeze ${spec.freezeEpochs ?? 1})` : `fit_one_cycle(${spec.epochs})`}, lr ${fmt(spec.lr)}, batch ${spec.batchSize}, ${spec.imageSize} px, ${shortEnum(spec.precision)}`],
      ["Progress", progress(job)],
      ["Attempt", `${job.attempt || 0} (failures ${job.failuresUsed || 0}/${spec.maxFailures ?? 3}, membership changes ${job.membershipChangesUsed || 0}/${spec.maxMembershipChanges ?? 10})`],
      ["Workers", (job.workerIds || []).length ? `${job.workerIds.join(", ")} (${job.worldSize} ranks)` : `${spec.workers || 1} wanted`],
      ["Submitted", h("span", {}, timeAgo(job.createdUnixMs), job.createdBy ? ` by ${job.createdBy}` : "")],
      ["Started", fmtTime(job.startedUnixMs)],
      ["Finished", fmtTime(job.finishedUnixMs)],
      spec.register || spec.earlyStopPatience ? ["Registers", `${shortEnum(spec.register) || "last"} epoch${spec.register === "REGISTER_POLICY_BEST" || spec.earlyStopPatience ? ` by ${shortEnum(spec.monitor) || "valid-loss"}` : ""}${spec.earlyStopPatience ? `, early stop after ${spec.earlyStopPatience} epochs without improvement` : ""}`] : null,
      job.earlyStop ? ["Stopped early", h("span", { id: "early-stop" }, job.earlyStop.reason || `after epoch ${num(job.earlyStop.epoch) + 1}`)] : null,
      job.modelVersion ? ["Model version", h("a", { href: `#/models?name=${encodeURIComponent(job.modelVersion.split(":")[0])}` }, job.modelVersion)] : null,
      job.error ? ["Error", h("span", { class: "error", id: "job-error" }, job.error)] : null,
    ].filter(Boolean);
    replace(summary, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function sortedRows() {
    return [...st.rows.values()].sort((a, b) => num(a.attempt) - num(b.attempt) || num(a.epoch) - num(b.epoch));
  }

  function drawEpochs() {
    const rows = sortedRows();
    const spec = st.job.spec || {};
    if (spec.collectiveBench) {
      epochs.hidden = true;
      return;
    }
    const attemptsSeen = new Set(rows.map((r) => num(r.attempt)));
    const showStage = Boolean(spec.fineTune);
    const showAttempt = attemptsSeen.size > 1;
    const headers = ["epoch", showStage ? "stage" : null, showAttempt ? "attempt" : null, "train_loss", "valid_loss", "accuracy", "time", "images/s", "ranks"].filter(Boolean);
    replace(epochs, h("h2", { id: "epochs-h" }, "Epochs"),
      rows.length ? table(`Epoch table of ${id}`, headers, rows.map((r) => h("tr", { dataset: { epoch: num(r.epoch), attempt: num(r.attempt) } },
        [num(r.epoch), showStage ? (num(r.stage) === 0 && spec.fineTune ? "frozen" : "unfrozen") : null, showAttempt ? num(r.attempt) : null,
          Number(r.trainLoss).toFixed(6), Number(r.validLoss).toFixed(6), Number(r.accuracy).toFixed(6), fmtSeconds(r.seconds),
          fmt(r.imagesPerSec, 4), num(r.worldSize)].filter((c) => c !== null).map((c) => h("td", {}, c)))), { class: "numbers", id: "epoch-table" })
        : h("p", { class: "empty" }, TERMINAL.has(st.job.state) ? "No epochs were run." : "Waiting for the first epoch…"));
  }

  function drawCurves() {
    const spec = st.job.spec || {};
    if (spec.collectiveBench) {
      curves.hidden = true;
      return;
    }
    // One point per epoch: a restarted epoch's latest attempt wins.
    const latest = new Map();
    for (const r of sortedRows()) latest.set(num(r.epoch), r);
    const rows = [...latest.values()];
    const x = (r) => num(r.epoch) + 1;
    const total = totalEpochs(spec);
    const xTicks = Array.from({ length: Math.min(total, 20) + 1 }, (_, i) => Math.round((i * total) / Math.min(total, 20)));
    replace(curves, h("h2", { id: "curves-h" }, "Curves"), h("div", { class: "charts" },
      lineChart([
        { name: "train_loss", points: rows.map((r) => [x(r), Number(r.trainLoss)]) },
        { name: "valid_loss", points: rows.map((r) => [x(r), Number(r.validLoss)]) },
      ], { title: "Loss", xLabel: "epoch", xMin: 0, xMax: total, xTicks }),
      lineChart([{ name: "accuracy", points: rows.map((r) => [x(r), Number(r.accuracy)]), index: 2 }],
        { title: "Accuracy", xLabel: "epoch", xMin: 0, xMax: total, xTicks, yFormat: (v) => fmt(v, 3) }),
      lineChart([{ name: "learning rate (head group)", points: plannedLr(spec), index: 3 }],
        { title: "Learning-rate schedule (planned)", xLabel: "epoch", xMin: 0, xMax: total, xTicks, dots: false, yMin: 0, marker: epochsDone(st.job), yFormat: (v) => fmt(v, 2) })));
  }

  function drawAttempts() {
    const byAttempt = new Map();
    const get = (n) => {
      if (!byAttempt.has(n)) byAttempt.set(n, { attempt: n, start: 0, group: "", end: 0, why: "" });
      return byAttempt.get(n);
    };
    for (const e of st.stateEvents) {
      const c = e.stateChanged;
      const n = num(c.attempt);
      if (c.to === "JOB_STATE_RUNNING" && n) {
        const a = get(n);
        a.start = num(e.unixMs);
        a.group = c.reason || "";
      } else if (TERMINAL.has(c.to) && n) {
        const a = get(n);
        if (!a.end) {
          a.end = num(e.unixMs);
          a.why = `${shortEnum(c.to)}: ${c.reason || ""}`;
        }
      }
    }
    const failures = st.failures.length ? st.failures : st.job.failures || [];
    for (const f of failures) {
      const a = get(num(f.attempt));
      a.end = num(f.unixMs) || a.end;
      const where = [f.rank !== undefined ? `rank ${f.rank}` : "", f.workerId ? `worker ${f.workerId}` : "", f.epoch !== undefined ? `epoch ${f.epoch}` : ""].filter(Boolean).join(", ");
      a.why = `${shortEnum(f.kind)}${where ? ` (${where})` : ""}: ${f.reason || ""}`;
    }
    const list = [...byAttempt.values()].sort((a, b) => a.attempt - b.attempt);
    replace(attempts, h("h2", { id: "attempts-h" }, "Attempts"),
      list.length ? table("Attempts and why each ended", ["attempt", "started", "group", "ended", "why"],
        list.map((a) => [a.attempt, fmtTime(a.start), a.group, a.end ? fmtTime(a.end) : TERMINAL.has(st.job.state) ? "–" : "running", a.why || "–"]))
        : h("p", { class: "empty" }, "Not started yet."));
  }

  function drawProfile() {
    const profiled = sortedRows().filter((r) => (r.stepProfiles || []).length);
    if (!(st.job.spec || {}).profileSteps || !profiled.length) {
      replace(profile, (st.job.spec || {}).profileSteps ? [h("h2", { id: "profile-h" }, "Step time"), h("p", { class: "empty" }, "No profiled epoch yet.")] : null);
      return;
    }
    const keyOf = (r) => `${num(r.attempt)}:${num(r.epoch)}`;
    if (!st.profileEpoch || !profiled.some((r) => keyOf(r) === st.profileEpoch)) st.profileEpoch = keyOf(profiled[profiled.length - 1]);
    const row = profiled.find((r) => keyOf(r) === st.profileEpoch);
    const select = h("select", { id: "profile-epoch", onchange: (e) => { st.profileEpoch = e.target.value; drawProfile(); } },
      profiled.map((r) => h("option", { value: keyOf(r), selected: keyOf(r) === st.profileEpoch }, `epoch ${num(r.epoch)}${num(r.attempt) > 1 ? ` (attempt ${num(r.attempt)})` : ""}`)));
    const bars = (row.stepProfiles || []).map((p) => {
      const steps = num(p.steps) || 1;
      return { label: `rank ${num(p.rank)}`, values: phaseSeconds(p.totalSeconds).map((s) => (s * 1000) / steps) };
    });
    replace(profile, h("h2", { id: "profile-h" }, "Step time"),
      h("div", { class: "inline-controls" },
        h("label", { for: "profile-epoch" }, "Epoch"), select,
        h("button", {
          type: "button", class: "secondary", id: "download-trace",
          onclick: () => download(new Blob([JSON.stringify(chromeTrace(id, row))], { type: "application/json" }), `${id}-epoch${num(row.epoch)}.trace.json`),
        }, "Download Chrome trace")),
      h("p", { class: "hint" }, "Milliseconds per step of each phase, per rank; open the trace in chrome://tracing or ui.perfetto.dev."),
      stackedBars(bars, PHASES, { title: `Step time of epoch ${num(row.epoch)} (ms per step)`, unit: "ms" }));
  }

  function drawSweep() {
    const rows = [...st.allreduce.values()].sort((a, b) => num(a.bytes) - num(b.bytes));
    if (!(st.job.spec || {}).collectiveBench) return;
    replace(sweep, h("h2", { id: "allreduce-h" }, "All-reduce sweep"),
      table("All-reduce bandwidth by message size", ["size", "count", "time (µs)", "algbw (GB/s)", "busbw (GB/s)", "wrong", "ranks"],
        rows.map((r) => [fmtBytes(r.bytes), num(r.count), fmt(r.timeUs), fmt(r.algbwGbps), fmt(r.busbwGbps), num(r.wrong), num(r.worldSize)]), { class: "numbers" }));
  }

  const MAX_LOG = 2000;
  function addLog(e) {
    const l = e.log;
    const line = h("li", { class: `level-${l.level}` },
      h("time", {}, new Date(num(e.unixMs)).toLocaleTimeString()), " ",
      h("span", { class: "level" }, l.level), " ",
      h("span", { class: "rank" }, `rank ${num(l.rank)}`), " ", l.message);
    logList.append(line);
    while (logList.childElementCount > MAX_LOG) logList.firstElementChild.remove();
    if (logList.scrollHeight - logList.scrollTop - logList.clientHeight < 80) logList.scrollTop = logList.scrollHeight;
  }

  let frame = 0;
  function redraw() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      drawHead();
      drawEpochs();
      drawCurves();
      drawAttempts();
      drawProfile();
      drawSweep();
    });
  }

  let refetching = null;
  function refetch() {
    if (refetching) return;
    refetching = api(`v1/jobs/${encodeURIComponent(id)}`).then((r) => {
      st.job = r.job;
      for (const row of st.job.history || []) {
        const key = `${num(row.attempt)}:${num(row.epoch)}`;
        if (!st.rows.has(key)) st.rows.set(key, row);
      }
      redraw();
    }).catch((e) => announce(errorText(e), "error")).finally(() => { refetching = null; });
  }

  async function cancel() {
    if (!confirm(`Cancel job ${id}? Its ranks are told to stop.`)) return;
    try {
      const r = await api(`v1/jobs/${encodeURIComponent(id)}:cancel`, { method: "POST", body: { reason: "cancelled from the web console" } });
      st.job = r.job;
      announce(`Job ${id} cancelled.`);
      redraw();
    } catch (e) {
      announce(errorText(e), "error");
    }
  }

  // Live events; EventSource resumes with Last-Event-ID by itself.
  const finishedAtLoad = TERMINAL.has(st.job.state);
  let source = null;
  function setLive(text, kind) {
    live.textContent = text;
    live.dataset.kind = kind;
  }
  function connect() {
    source = new EventSource(withAccessToken(`v1/jobs/${encodeURIComponent(id)}/events?includeLogs=true`));
    setLive("connecting…", "wait");
    const handle = (fn) => (msg) => {
      const e = JSON.parse(msg.data);
      const seq = num(e.sequence);
      if (seq && seq <= st.lastSeq) return;
      st.lastSeq = Math.max(st.lastSeq, seq);
      fn(e);
    };
    source.addEventListener("open", () => setLive("live", "live"));
    source.addEventListener("epoch", handle((e) => {
      st.rows.set(`${num(e.epoch.attempt)}:${num(e.epoch.epoch)}`, e.epoch);
      st.job.epochsDone = Math.max(num(st.job.epochsDone), num(e.epoch.epoch) + 1);
      redraw();
    }));
    source.addEventListener("stateChanged", handle((e) => {
      st.stateEvents.push(e);
      st.job.state = e.stateChanged.to;
      if (TERMINAL.has(e.stateChanged.to)) {
        source.close();
        setLive("finished", "done");
        if (!finishedAtLoad) announce(`Job ${id} ${shortEnum(e.stateChanged.to)}.`);
      }
      redraw();
      refetch();
    }));
    source.addEventListener("failure", handle((e) => {
      st.failures.push(e.failure);
      redraw();
    }));
    source.addEventListener("log", handle(addLog));
    source.addEventListener("modelRegistered", handle((e) => {
      const v = e.modelRegistered.version;
      st.job.modelVersion = `${v.name}:${v.version}`;
      redraw();
      refetch();
    }));
    source.addEventListener("allreduce", handle((e) => {
      st.allreduce.set(`${num(e.allreduce.attempt)}:${num(e.allreduce.bytes)}`, e.allreduce);
      redraw();
    }));
    source.addEventListener("error", () => {
      if (!source || source.readyState === EventSource.CLOSED) {
        if (!TERMINAL.has(st.job.state)) {
          setLive("disconnected", "error");
          replace(live, "disconnected ", h("button", { type: "button", class: "secondary", onclick: () => connect() }, "Reconnect"));
        }
      } else {
        setLive("reconnecting…", "wait");
      }
    });
  }

  drawHead();
  drawEpochs();
  drawCurves();
  drawAttempts();
  drawProfile();
  drawSweep();
  connect();
  return () => {
    if (source) source.close();
    source = null;
    cancelAnimationFrame(frame);
  };
}
