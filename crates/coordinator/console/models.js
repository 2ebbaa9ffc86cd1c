// The Models page: every registered version by name with its lineage (job,
// data set, the epoch registered and why, metrics, created, by whom), its
// tags and description (editable), its aliases (moving one asks for
// confirmation first) and who moved them when, deleting a version, and
// importing a safetensors
// file or a PyTorch `.pth` state dict (the coordinator converts it to
// safetensors without running its pickle; nothing is unpickled here).
// The page follows the registry's event stream (`/v1/registry/events`), so
// a version registered or an alias moved elsewhere shows without a reload.

import { ApiError, api, errorBox, errorText, withAccessToken } from "./api.js";
import { announce, fmt, fmtBytes, fmtTime, h, num, replace, shortEnum, timeAgo } from "./dom.js";

const MAX_PAGES = 20;
/** Names whose alias history is unfolded. */
const OPEN_HISTORIES = new Set();

async function allVersions() {
  const versions = [];
  let token = "";
  for (let i = 0; i < MAX_PAGES; i++) {
    const page = await api(`v1/models?pageSize=200${token ? `&pageToken=${encodeURIComponent(token)}` : ""}`);
    versions.push(...(page.versions || []));
    token = page.nextPageToken || "";
    if (!token) break;
  }
  return versions;
}

/** Reads a safetensors header: {tensors: {name: {dtype, shape}}} or throws. */
export async function safetensorsHeader(file) {
  const head = new DataView(await file.slice(0, 8).arrayBuffer());
  if (head.byteLength < 8) throw new Error("not a safetensors file (too short)");
  const len = Number(head.getBigUint64(0, true));
  if (len <= 1 || len > 100 * 1024 * 1024 || 8 + len > file.size) throw new Error("not a safetensors file (bad header length)");
  const text = await file.slice(8, 8 + len).text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error("not a safetensors file (its header is not JSON)");
  }
  const tensors = Object.fromEntries(Object.entries(parsed).filter(([k]) => k !== "__metadata__"));
  return { tensors };
}

async function sha256Hex(file) {
  // SubtleCrypto exists in secure contexts only (https, localhost); elsewhere
  // the header's sha256 stays empty and the server skips that check.
  if (!(globalThis.crypto && crypto.subtle)) return "";
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function render(main, params) {
  const only = params.get("name") || "";
  const list = h("div", { id: "models-list", "aria-live": "polite" }, h("p", { class: "empty" }, "Loading…"));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Models"),
      only ? h("a", { class: "button secondary", href: "#/models" }, "Show every model") : null),
    importForm(reload),
    list);

  // What the list shows, so a reload that finds nothing new (the page's
  // own change arriving again as a registry event) leaves the DOM alone.
  let shown = "";
  async function reload() {
    let versions;
    try {
      versions = await allVersions();
    } catch (e) {
      shown = "";
      replace(list, errorBox(e));
      return;
    }
    const key = JSON.stringify(versions);
    if (key === shown) return;
    shown = key;
    const byName = new Map();
    for (const v of versions) {
      if (only && v.name !== only) continue;
      if (!byName.has(v.name)) byName.set(v.name, []);
      byName.get(v.name).push(v);
    }
    if (!byName.size) {
      replace(list, h("p", { class: "empty" }, only ? `No versions of ${only}.` : "No model is registered yet: train one (Submit) or import one."));
      return;
    }
    replace(list, [...byName.entries()].map(([name, vs]) => modelSection(name, vs, reload)));
  }
  await reload();

  // Registry changes made anywhere (ctl, the SDK, a job) redraw the list
  // (a burst of them once), unless the user is in the middle of an edit
  // here: then the page offers to refresh instead of pulling the form away.
  const live = h("p", { class: "hint", id: "models-live", "aria-live": "polite" });
  list.before(live);
  let timer = 0;
  let source = new EventSource(withAccessToken(`v1/registry/events${only ? `?name=${encodeURIComponent(only)}` : ""}`));
  source.addEventListener("open", () => { live.textContent = "Following registry changes."; });
  const editing = () => list.querySelector("tr details[open]") || (list.contains(document.activeElement) && document.activeElement.matches("input, textarea, select"));
  const refresh = () => {
    if (editing()) {
      replace(live, "The registry changed. ", h("button", { type: "button", class: "secondary", id: "models-refresh", onclick: () => reload().then(() => { live.textContent = "Following registry changes."; }) }, "Refresh"));
    } else {
      reload();
    }
  };
  const changed = (e) => {
    const event = JSON.parse(e.data);
    const v = event.versionRegistered || event.versionUpdated || event.versionDeleted || event.aliasChanged || {};
    live.textContent = `${v.name || "a model"} changed (${e.type.replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`)}).`;
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  };
  for (const kind of ["versionRegistered", "versionDeleted", "versionUpdated", "aliasChanged"]) source.addEventListener(kind, changed);
  source.addEventListener("error", () => {
    if (source && source.readyState === EventSource.CLOSED) live.textContent = "Not following registry changes (the stream closed): reload the page.";
  });
  return () => {
    clearTimeout(timer);
    if (source) source.close();
    source = null;
  };
}

/** A model's alias changes, newest first: "prod 3 → 4 by alice, 2 min ago". */
async function loadHistory(name, into) {
  try {
    const page = await api(`v1/models/${encodeURIComponent(name)}/history?pageSize=50`);
    const changes = page.changes || [];
    replace(into, changes.length
      ? h("ol", { class: "plain history" }, changes.map((c) => h("li", { dataset: { alias: c.alias } },
        h("strong", {}, c.alias), " ",
        c.fromVersion === undefined ? "created → " : `${num(c.fromVersion)} → `,
        c.toVersion === undefined ? "removed" : String(num(c.toVersion)),
        h("span", { class: "muted" }, ` by ${c.changedBy || "unknown"}, `, h("span", { title: fmtTime(c.unixMs) }, timeAgo(c.unixMs))))))
      : h("p", { class: "empty" }, "No alias has been set or moved."));
  } catch (e) {
    replace(into, errorBox(e));
  }
}

function modelSection(name, versions, reload) {
  const sorted = [...versions].sort((a, b) => num(b.version) - num(a.version));
  const aliases = new Map();
  for (const v of sorted) for (const a of v.aliases || []) aliases.set(a, num(v.version));
  const id = `model-${name}`;
  const history = h("div", { class: "history-body" });
  const historyBox = h("details", { class: "alias-history", id: `${id}-history` }, h("summary", {}, "Alias history"), history);
  // Kept open across redraws (a registry event redraws every section).
  historyBox.addEventListener("toggle", () => {
    if (historyBox.open) {
      OPEN_HISTORIES.add(name);
      loadHistory(name, history);
    } else {
      OPEN_HISTORIES.delete(name);
    }
  });
  if (OPEN_HISTORIES.has(name)) historyBox.open = true;
  return h("section", { class: "model", id, "aria-labelledby": `${id}-h` },
    h("h2", { id: `${id}-h` }, name),
    historyBox,
    h("table", { class: "versions" },
      h("caption", {}, `Versions of ${name}, newest first`),
      h("thead", {}, h("tr", {}, ["Version", "Aliases", "Model", "Lineage", "Tags", "Metrics", "Created", "Actions"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, sorted.map((v) => versionRow(v, aliases, reload)))));
}

function versionRow(v, aliases, reload) {
  const version = num(v.version);
  const ref = `${v.name}:${version}`;
  const spec = v.spec || {};
  const lin = v.lineage || {};
  const classes = spec.classNames || [];
  const metrics = Object.entries(lin.metrics || {}).sort(([a], [b]) => a.localeCompare(b));

  const aliasInput = h("input", { name: "alias", id: `alias-${v.name}-${version}`, required: true, autocomplete: "off", list: `aliases-${v.name}`, placeholder: "e.g. prod" });
  const aliasForm = h("form", {
    class: "alias-form",
    onsubmit: async (e) => {
      e.preventDefault();
      const alias = aliasInput.value.trim();
      if (!alias) return;
      const now = aliases.get(alias);
      if (now === version) {
        announce(`${v.name}@${alias} already points at version ${version}.`);
        return;
      }
      const question = now ? `Move alias "${alias}" of ${v.name} from version ${now} to version ${version}?` : `Create alias "${alias}" of ${v.name} pointing at version ${version}?`;
      if (!confirm(question)) return;
      try {
        await api(`v1/models/${encodeURIComponent(v.name)}/aliases/${encodeURIComponent(alias)}`, { method: "PUT", body: { version: String(version) } });
        announce(`${v.name}@${alias} → version ${version}.`);
        await reload();
      } catch (err) {
        announce(errorText(err), "error");
      }
    },
  },
  h("label", { for: aliasInput.id }, "Alias"), aliasInput,
  h("datalist", { id: `aliases-${v.name}` }, [...aliases.keys()].map((a) => h("option", { value: a }))),
  h("button", { type: "submit" }, "Point here"));

  async function removeAlias(alias) {
    if (!confirm(`Remove alias "${alias}" of ${v.name} (now version ${version})?`)) return;
    try {
      await api(`v1/models/${encodeURIComponent(v.name)}/aliases/${encodeURIComponent(alias)}`, { method: "DELETE" });
      announce(`Removed ${v.name}@${alias}.`);
      await reload();
    } catch (err) {
      announce(errorText(err), "error");
    }
  }

  const tagsText = h("textarea", { id: `tags-${v.name}-${version}`, rows: 3, spellcheck: "false", placeholder: "key=value, one a line" },
    Object.entries(v.tags || {}).map(([k, val]) => `${k}=${val}`).join("\n"));
  const descText = h("textarea", { id: `desc-${v.name}-${version}`, rows: 2 }, v.description || "");
  const editForm = h("form", {
    class: "tags-form",
    onsubmit: async (e) => {
      e.preventDefault();
      const wanted = {};
      for (const line of tagsText.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
        const cut = line.indexOf("=");
        if (cut <= 0) {
          announce(`A tag is key=value, not ${JSON.stringify(line)}.`, "error");
          return;
        }
        wanted[line.slice(0, cut).trim()] = line.slice(cut + 1).trim();
      }
      const removeTags = Object.keys(v.tags || {}).filter((k) => !(k in wanted));
      try {
        await api(`v1/models/${encodeURIComponent(v.name)}/versions/${version}`, { method: "PATCH", body: { setTags: wanted, removeTags, description: descText.value } });
        announce(`Updated ${ref}.`);
        await reload();
      } catch (err) {
        announce(errorText(err), "error");
      }
    },
  },
  h("label", { for: tagsText.id }, "Tags"), tagsText,
  h("label", { for: descText.id }, "Description"), descText,
  h("button", { type: "submit" }, "Save"));

  async function remove() {
    if (!confirm(`Delete ${ref} and its weights? This cannot be undone.`)) return;
    const path = `v1/models/${encodeURIComponent(v.name)}/versions/${version}`;
    try {
      await api(path, { method: "DELETE" });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === "FAILED_PRECONDITION")) {
        announce(errorText(err), "error");
        return;
      }
      if (!confirm(`${err.message}\n\nDelete ${ref} anyway, removing its aliases (${(v.aliases || []).join(", ")})?`)) return;
      try {
        await api(`${path}?force=true`, { method: "DELETE" });
      } catch (again) {
        announce(errorText(again), "error");
        return;
      }
    }
    announce(`Deleted ${ref}.`);
    await reload();
  }

  return h("tr", { dataset: { version, name: v.name } },
    h("td", {}, h("strong", {}, ref)),
    h("td", { class: "aliases" }, (v.aliases || []).map((a) => h("span", { class: "chip", dataset: { alias: a } }, a,
      a === "latest" ? null : h("button", { type: "button", class: "chip-remove needs-editor", "aria-label": `Remove alias ${a}`, title: `Remove alias ${a}`, onclick: () => removeAlias(a) }, "×")))),
    h("td", {},
      `${shortEnum(spec.arch)} + ${shortEnum(spec.head)}, ${spec.inputSize} px`, h("br"),
      h("span", { title: classes.join(", ") }, `${classes.length} classes: ${classes.slice(0, 4).join(", ")}${classes.length > 4 ? ", …" : ""}`), h("br"),
      h("span", { class: "muted" }, `${shortEnum(spec.normalization)} normalisation, ${shortEnum(spec.resize) || "crop"}`)),
    h("td", {},
      lin.jobId ? h("span", {}, "job ", h("a", { href: `#/jobs/${encodeURIComponent(lin.jobId)}` }, lin.jobId)) : `imported from ${lin.importedFrom || "a file"}`,
      lin.dataset ? [h("br"), `data: ${lin.dataset}`] : null,
      lin.epoch !== undefined ? [h("br"), h("span", { class: "registered-epoch" }, `epoch ${num(lin.epoch) + 1}${lin.selectedBy ? ` (${lin.selectedBy})` : ""}`)] : null,
      lin.checkpointId ? [h("br"), h("span", { class: "muted" }, `checkpoint ${lin.checkpointId}`)] : null,
      h("br"), h("span", { class: "muted", title: `sha256 ${lin.weightsSha256 || ""}` }, `${fmtBytes(lin.weightsSizeBytes)}, sha256 ${(lin.weightsSha256 || "").slice(0, 12)}…`)),
    h("td", { class: "tags" },
      Object.entries(v.tags || {}).sort(([a], [b]) => a.localeCompare(b)).map(([k, val]) => h("span", { class: "chip tag", dataset: { tag: k } }, `${k}=${val}`)),
      v.description ? h("p", { class: "description" }, v.description) : null),
    h("td", {}, metrics.length ? h("dl", { class: "metrics" }, metrics.map(([k, val]) => [h("dt", {}, k), h("dd", {}, fmt(val, 4))])) : "–"),
    h("td", {}, h("span", { title: fmtTime(lin.createdUnixMs) }, timeAgo(lin.createdUnixMs)), lin.createdBy ? [h("br"), `by ${lin.createdBy}`] : null),
    h("td", {}, h("div", { class: "row-actions" },
      h("a", { class: "button secondary", href: `#/explain?model=${encodeURIComponent(ref)}` }, "Explain"),
      h("details", { class: "needs-editor" }, h("summary", {}, "Set alias…"), aliasForm),
      h("details", { class: "needs-editor" }, h("summary", {}, "Tags…"), editForm),
      h("button", { type: "button", class: "danger secondary needs-editor", onclick: remove, "aria-label": `Delete ${ref}` }, "Delete"))));
}

function importForm(reload) {
  const status = h("div", { class: "import-status", role: "status" });
  const field = (label, control, hint) => h("div", { class: "field" }, h("label", { for: control.id }, label), control, hint ? h("p", { class: "hint" }, hint) : null);
  const sel = (id, options, value) => h("select", { id, name: id }, options.map((o) => h("option", { value: o, selected: o === value }, o)));
  const file = h("input", { id: "import-file", name: "weights", type: "file", accept: ".safetensors,.pth,.pt", required: true });
  const name = h("input", { id: "import-name", name: "name", required: true, autocomplete: "off", placeholder: "e.g. pets-resnet34" });
  const arch = sel("import-arch", ["resnet18", "resnet34", "cnn"], "resnet34");
  const head = sel("import-head", ["cam", "linear", "fastai"], "cam");
  const classes = h("input", { id: "import-classes", name: "classes", required: true, autocomplete: "off", placeholder: "cat, dog" });
  const size = h("input", { id: "import-size", name: "size", inputmode: "numeric", value: "224" });
  const norm = sel("import-norm", ["imagenet", "none"], "imagenet");
  const resize = sel("import-resize", ["crop", "squish", "pad"], "crop");
  const dataset = h("input", { id: "import-dataset", name: "dataset", autocomplete: "off", placeholder: "where it was trained (free text)" });
  const aliasesInput = h("input", { id: "import-aliases", name: "aliases", autocomplete: "off", placeholder: "comma-separated, besides latest" });
  const button = h("button", { type: "submit" }, "Import");

  file.addEventListener("change", async () => {
    replace(status);
    const f = file.files[0];
    if (!f) return;
    if (/\.(pth|pt)$/i.test(f.name)) {
      if (!name.value) name.value = f.name.replace(/\.(pth|pt)$/i, "").replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "");
      replace(status, h("p", { class: "hint" }, "A torch.save state dict: the coordinator converts it to safetensors and checks its names and shapes."));
      return;
    }
    try {
      const { tensors } = await safetensorsHeader(f);
      const names = Object.keys(tensors);
      const fc = tensors["fc.weight"];
      if (fc && fc.shape && !classes.value) {
        classes.placeholder = `${fc.shape[0]} class names, comma-separated`;
      }
      if (!name.value) name.value = f.name.replace(/\.safetensors$/i, "").replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "");
      replace(status, h("p", { class: "hint" }, `${names.length} tensors${fc ? `; fc.weight is ${fc.shape.join("×")}` : ""}.`));
    } catch (e) {
      replace(status, h("p", { class: "error" }, e.message));
    }
  });

  const form = h("form", {
    id: "import-form", novalidate: true,
    onsubmit: async (e) => {
      e.preventDefault();
      const f = file.files[0];
      const classNames = classes.value.split(",").map((s) => s.trim()).filter(Boolean);
      const problems = [];
      if (!f) problems.push("choose a .safetensors or .pth file");
      if (!name.value.trim()) problems.push("name the model");
      if (classNames.length < 2) problems.push("give at least two class names");
      if (!/^\d+$/.test(size.value.trim())) problems.push("the input size is a whole number of pixels");
      if (problems.length) {
        replace(status, h("p", { class: "error", role: "alert" }, `Cannot import: ${problems.join("; ")}.`));
        return;
      }
      button.disabled = true;
      replace(status, h("p", {}, "Uploading…"));
      try {
        const header = {
          spec: {
            arch: `ARCH_${arch.value.toUpperCase()}`, head: `HEAD_${head.value.toUpperCase()}`, classNames,
            inputSize: Number(size.value.trim()), normalization: `NORMALIZATION_${norm.value.toUpperCase()}`,
            resize: `RESIZE_METHOD_${resize.value.toUpperCase()}`,
          },
          format: /\.(pth|pt)$/i.test(f.name) ? "WEIGHTS_FORMAT_PTH" : "WEIGHTS_FORMAT_SAFETENSORS",
          sha256: await sha256Hex(f),
          fileName: f.name,
          dataset: dataset.value.trim(),
          aliases: aliasesInput.value.split(",").map((s) => s.trim()).filter(Boolean),
        };
        const body = new FormData();
        body.append("header", new Blob([JSON.stringify(header)], { type: "application/json" }), "header.json");
        body.append("weights", f, f.name);
        const answer = await api(`v1/models/${encodeURIComponent(name.value.trim())}/versions`, { method: "POST", form: body });
        const v = answer.version;
        replace(status, h("p", {}, `Registered ${v.name}:${v.version}.`));
        announce(`Imported ${v.name}:${v.version}.`);
        await reload();
      } catch (err) {
        const violations = err instanceof ApiError ? err.fieldViolations : [];
        replace(status, h("div", { class: "error", role: "alert" }, h("p", {}, `Import failed: ${errorText(err)}`),
          violations.length ? h("ul", {}, violations.map((v) => h("li", {}, `${v.field}: ${v.description}`))) : null));
      } finally {
        button.disabled = false;
      }
    },
  },
  h("div", { class: "form-grid" },
    field("Weights (.safetensors or .pth)", file, "torchvision names; a CAM-head ResNet has fc.weight only"),
    field("Name", name),
    field("Body", arch), field("Head", head),
    field("Class names (logit order)", classes),
    field("Input size (px)", size), field("Normalisation", norm), field("Resize", resize),
    field("Data set (lineage)", dataset), field("Aliases", aliasesInput)),
  h("div", { class: "actions" }, button), status);
  return h("details", { class: "import needs-editor" }, h("summary", {}, "Import a version…"), form);
}
