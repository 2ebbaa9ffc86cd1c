// Workers and status: every worker with its devices and what it runs, and
// what the coordinator and the explainer say about themselves (versions,
// store, loaded models, queue), with their health and readiness.

import { api, errorBox } from "./api.js";
import { fmtBytes, fmtTime, h, num, replace, shortEnum, stateBadge, table, timeAgo } from "./dom.js";

const REFRESH_MS = 5000;

function device(d) {
  const kind = shortEnum(d.kind);
  const extra = kind === "cpu" ? `${d.cpuThreads || "?"} threads` : fmtBytes(d.memoryBytes);
  return `${kind}:${num(d.index)} ${d.name || ""} (${extra})`;
}

async function probe(path) {
  try {
    const res = await fetch(path, { headers: { Accept: "text/plain" } });
    return { ok: res.ok, text: `${res.status} ${(await res.text()).trim().slice(0, 80)}` };
  } catch (e) {
    return { ok: false, text: e.message };
  }
}

function serverInfo(title, info, extra) {
  if (!info) return null;
  const roles = (info.roles || []).map((r) => shortEnum(r)).join(", ");
  const items = [
    ["Roles", roles || "–"],
    ["Version", info.version || "–"],
    ["Started", h("span", {}, timeAgo(info.startedUnixMs), ` (${fmtTime(info.startedUnixMs)})`)],
    info.store ? ["Store", `${info.store} — ${info.storeHealthy ? "healthy" : "UNHEALTHY"}`] : null,
    ["CUDA", info.cudaAvailable ? "available" : "not available"],
    (info.devices || []).length ? ["Devices", info.devices.map(device).join("; ")] : null,
    ...extra,
  ].filter(Boolean);
  return h("section", { class: "server", "aria-label": title }, h("h3", {}, title),
    h("dl", { class: "summary" }, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
}

export async function render(main) {
  const includeLost = h("input", { type: "checkbox", id: "include-lost" });
  const workers = h("section", { id: "workers", "aria-labelledby": "workers-h" });
  const status = h("section", { id: "status", "aria-labelledby": "status-h" });
  main.append(h("h1", {}, "Workers & status"),
    h("div", { class: "inline-controls" }, includeLost, h("label", { for: "include-lost" }, "Also show lost workers")),
    workers, status);

  let timer = null;
  let stopped = false;

  async function load() {
    clearTimeout(timer);
    // A refresh redraws the tables: not while the keyboard is in them.
    if (workers.contains(document.activeElement) || status.contains(document.activeElement)) {
      if (!stopped) timer = setTimeout(load, REFRESH_MS);
      return;
    }
    const [w, coord, expl, healthz, readyz] = await Promise.all([
      api(`v1/workers${includeLost.checked ? "?includeLost=true" : ""}`).catch((e) => e),
      api("v1/status").catch((e) => e),
      api("v1/explainer/status").catch((e) => e),
      probe("healthz"),
      probe("readyz"),
    ]);
    if (w instanceof Error) {
      replace(workers, h("h2", { id: "workers-h" }, "Workers"), errorBox(w));
    } else {
      const list = w.workers || [];
      replace(workers, h("h2", { id: "workers-h" }, `Workers (${list.length})`),
        list.length ? table("Workers by id", ["Worker", "State", "Host", "Devices", "Job", "Ranks", "Heartbeat", "Lease expires", "Version", "Labels"],
          list.map((x) => [
            x.workerId, stateBadge(x.state), x.hostname || "–",
            h("ul", { class: "plain" }, (x.devices || []).map((d) => h("li", {}, device(d)))),
            x.jobId ? h("a", { href: `#/jobs/${encodeURIComponent(x.jobId)}` }, x.jobId) : "idle",
            (x.ranks || []).join(", ") || "–",
            timeAgo(x.lastHeartbeatUnixMs),
            fmtTime(x.leaseExpiresUnixMs),
            x.version || "–",
            Object.entries(x.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–",
          ]), { id: "workers-table" })
          : h("p", { class: "empty" }, "No worker is connected."));
    }
    const coordExtra = coord instanceof Error ? [] : [
      ["Live workers", String(coord.liveWorkers ?? 0)],
      ["Active jobs", String(coord.activeJobs ?? 0)],
      ["/healthz", h("span", { class: healthz.ok ? "ok" : "error" }, healthz.text)],
      ["/readyz", h("span", { class: readyz.ok ? "ok" : "error" }, readyz.text)],
    ];
    const explExtra = expl instanceof Error ? [] : [
      ["Queue", `${expl.queueDepth || 0} of ${expl.queueCapacity || 0} images`],
      ["Loaded models", (expl.loadedModels || []).length
        ? h("ul", { class: "plain", id: "loaded-models" }, expl.loadedModels.map((m) => h("li", {},
          `${m.modelVersion}${(m.aliases || []).length ? ` (@${m.aliases.join(", @")})` : ""}${m.preloaded ? ", preloaded" : ""} on ${m.device}, loaded ${new Date(num(m.loadedUnixMs)).toLocaleTimeString()}`,
          m.settings ? h("span", { class: "muted" }, ` · batch ≤ ${m.settings.maxBatch}, wait ${num(m.settings.maxBatchWaitMs)} ms, ${m.settings.replicas} replica(s), ${m.settings.precision}`) : null)))
        : "none yet (loaded on first use)"],
      (expl.preload || []).length ? ["Preload", h("ul", { class: "plain", id: "preload" }, expl.preload.map((p) => h("li", {},
        `${p.modelRef}${p.modelVersion ? ` → ${p.modelVersion}` : ""}: `,
        p.ready ? h("span", { class: "ok" }, "ready") : p.error ? h("span", { class: "error" }, p.error) : h("span", {}, "loading…"))))] : null,
    ].filter(Boolean);
    replace(status, h("h2", { id: "status-h" }, "Services"),
      h("div", { class: "servers" },
        coord instanceof Error ? h("div", {}, h("h3", {}, "Coordinator"), errorBox(coord)) : serverInfo("Coordinator", coord, coordExtra),
        expl instanceof Error ? h("div", {}, h("h3", {}, "Explainer"), errorBox(expl)) : serverInfo("Explainer", expl, explExtra)));
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  }
  includeLost.addEventListener("change", load);
  await load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
