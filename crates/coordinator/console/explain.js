// The Explain page: images dropped or picked, one model reference, one or
// several CAM methods side by side (a column per method, as `ctl explain
// --method a,b` draws its grid), the layers maps are taken at (fused, or a
// column each to compare them), target class, top-k, aug-smooth and a
// faithfulness score with its baseline. Each column says what the server
// ran (its `recipe`: method, layers, precision, baseline). The server returns the maps upsampled to the model's input size;
// the overlays are drawn here on canvases (min–max normalised with the raw
// map's range, as crates/render does, coloured with the same matplotlib
// tables, alpha-blended over the resized image), so the colormap and alpha
// controls re-render without a new request.

import { ApiError, api, errorText } from "./api.js";
import { COLORMAPS, lutIndex } from "./colormaps.js";
import { announce, download, h, num, replace, shortEnum } from "./dom.js";

const METHODS = [
  ["cam", "CAM", "EXPLAIN_METHOD_CAM"],
  ["gradcam", "Grad-CAM", "EXPLAIN_METHOD_GRAD_CAM"],
  ["gradcam++", "Grad-CAM++", "EXPLAIN_METHOD_GRAD_CAM_PLUS_PLUS"],
  ["xgradcam", "XGrad-CAM", "EXPLAIN_METHOD_XGRAD_CAM"],
  ["layercam", "LayerCAM", "EXPLAIN_METHOD_LAYER_CAM"],
  ["hirescam", "HiResCAM", "EXPLAIN_METHOD_HIRES_CAM"],
  ["scorecam", "Score-CAM", "EXPLAIN_METHOD_SCORE_CAM"],
];
const FAITHFULNESS = [
  ["", "none"],
  ["FAITHFULNESS_METRIC_DELETION_AUC", "deletion AUC (lower is better)"],
  ["FAITHFULNESS_METRIC_AVERAGE_DROP", "average drop (lower is better)"],
  ["FAITHFULNESS_METRIC_ROAD", "ROAD most-relevant-first (lower is better)"],
];
const FAITHFULNESS_SHORT = { FAITHFULNESS_METRIC_DELETION_AUC: "deletion AUC", FAITHFULNESS_METRIC_AVERAGE_DROP: "average drop", FAITHFULNESS_METRIC_ROAD: "ROAD" };
const BASELINES = [
  ["", "mean colour (default)"],
  ["FAITHFULNESS_BASELINE_BLACK", "black"],
  ["FAITHFULNESS_BASELINE_BLUR", "blurred image"],
];
/** The layers maps can be taken at, by the model's module names (the last is the default). */
const LAYERS = {
  ARCH_CNN: [["0", "0 (convolution)"], ["1", "1 (ReLU)"], ["2", "2 (max-pool)"]],
  ARCH_RESNET18: ["layer1", "layer2", "layer3", "layer4"].map((l) => [l, l]),
  ARCH_RESNET34: ["layer1", "layer2", "layer3", "layer4"].map((l) => [l, l]),
};

/** What a response's recipe says ran: "layer3 · fp32 · aug-smooth · mean baseline". */
export function recipeText(recipe) {
  if (!recipe) return "";
  const parts = [(recipe.targetLayers || []).join(" + ")];
  if (recipe.precision) parts.push(recipe.precision);
  if (recipe.augSmooth) parts.push("aug-smooth");
  const baseline = shortEnum(recipe.faithfulnessBaseline);
  if (baseline && baseline !== "unspecified") parts.push(`${baseline} baseline`);
  return parts.filter(Boolean).join(" · ");
}

/** Bytes of `file` as base64 (proto3 JSON's `bytes`). */
function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** The browser's decoding of `file`, EXIF orientation ignored as the explainer does; null if undecodable. */
async function decode(file) {
  try {
    return await createImageBitmap(file, { imageOrientation: "none" });
  } catch {
    try {
      return await createImageBitmap(file);
    } catch {
      return null;
    }
  }
}

/**
 * `bitmap` resized to size×size as the explainer resizes it (crates/data's
 * `resize`): crop = the centred square of the shorter side, scaled; squish
 * = stretched; pad = the longer side scaled to size, centred on black. The
 * browser's bilinear filter is not the server's antialiasing convolution,
 * so pixels differ slightly from the server's input; the map is the
 * server's, exactly.
 */
export function resizedPixels(bitmap, size, method) {
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, size, size);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  const { width: w, height: hh } = bitmap;
  if (method === "squish" || (w === size && hh === size)) {
    ctx.drawImage(bitmap, 0, 0, size, size);
  } else if (method === "pad") {
    const longer = Math.max(w, hh);
    const iw = Math.min(size, Math.max(1, Math.round((w * size) / longer)));
    const ih = Math.min(size, Math.max(1, Math.round((hh * size) / longer)));
    ctx.drawImage(bitmap, Math.floor((size - iw) / 2), Math.floor((size - ih) / 2), iw, ih);
  } else {
    const side = Math.min(w, hh);
    ctx.drawImage(bitmap, Math.floor((w - side) / 2), Math.floor((hh - side) / 2), side, side, 0, 0, size, size);
  }
  return ctx.getImageData(0, 0, size, size);
}

/**
 * Draws `upsampled` (a ClassMap at the input size) coloured with `cmap`,
 * normalised by [lo, hi] (the raw map's range), over `base` (ImageData of
 * the same size, or null: the colours alone) with opacity `alpha`.
 */
export function drawOverlay(canvas, upsampled, lo, hi, base, cmap, alpha) {
  const w = num(upsampled.width);
  const ht = num(upsampled.height);
  canvas.width = w;
  canvas.height = ht;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(w, ht);
  const lut = COLORMAPS[cmap] || COLORMAPS.magma;
  const values = upsampled.values || [];
  const span = hi - lo;
  const a = base ? alpha : 1;
  for (let i = 0; i < w * ht; i++) {
    const t = span > 0 ? (Number(values[i] || 0) - lo) / span : 0;
    const k = 3 * lutIndex(t);
    for (let c = 0; c < 3; c++) {
      const b = base ? base.data[4 * i + c] : 0;
      out.data[4 * i + c] = Math.round((1 - a) * b + a * lut[k + c]);
    }
    out.data[4 * i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

function minMax(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values || []) {
    const n = Number(v);
    if (n < lo) lo = n;
    if (n > hi) hi = n;
  }
  return Number.isFinite(lo) ? [lo, hi] : [0, 0];
}

const label = (names, probs, index) => `${names[index] ?? `class ${index}`}(${Number(probs[index] ?? 0).toFixed(2)})`;

export async function render(main, params) {
  const st = {
    images: [], // {id, name, file, bitmap, base}
    model: null, // the resolved ModelVersion
    columns: [], // {method, title, error, response}
    panels: [], // {canvas, upsampled, lo, hi, image}
    nextId: 1,
  };

  // ── controls ──
  const fileInput = h("input", { id: "explain-files", type: "file", accept: "image/png,image/jpeg", multiple: true, class: "visually-hidden", tabindex: "-1" });
  const drop = h("label", { for: "explain-files", class: "dropzone", id: "dropzone", tabindex: "0", role: "button", "aria-describedby": "drop-hint" },
    h("strong", {}, "Drop PNG or JPEG images here"), h("span", { id: "drop-hint" }, " or press Enter to pick files"));
  const chosen = h("ul", { class: "chosen", id: "chosen-images", "aria-label": "Chosen images" });
  const modelInput = h("input", { id: "explain-model", list: "model-refs", autocomplete: "off", spellcheck: "false", required: true, value: params.get("model") || "" });
  const refs = h("datalist", { id: "model-refs" });
  const modelInfo = h("p", { class: "hint", id: "model-info", "aria-live": "polite" });
  const methodBoxes = METHODS.map(([key, name]) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "method", value: key, checked: key === "gradcam" }), name));
  const target = h("select", { id: "explain-target" }, h("option", { value: "" }, "the predicted class"));
  const topK = h("input", { id: "explain-topk", type: "number", min: "1", max: "1", value: "1", inputmode: "numeric" });
  const faith = h("select", { id: "explain-faithfulness" }, FAITHFULNESS.map(([v, t]) => h("option", { value: v }, t)));
  const baseline = h("select", { id: "explain-baseline" }, BASELINES.map(([v, t]) => h("option", { value: v }, t)));
  const layerBoxes = h("div", { class: "checks", id: "explain-layers" });
  const perLayer = h("input", { type: "checkbox", id: "explain-per-layer" });
  const augSmooth = h("input", { type: "checkbox", id: "explain-aug-smooth" });
  const colormap = h("select", { id: "explain-colormap" }, Object.keys(COLORMAPS).map((c) => h("option", { value: c }, c)));
  const alpha = h("input", { id: "explain-alpha", type: "range", min: "0", max: "1", step: "0.05", value: "0.5" });
  const alphaOut = h("output", { for: "explain-alpha", id: "alpha-value" }, "0.50");
  const run = h("button", { type: "submit", id: "explain-run" }, "Explain");
  const save = h("button", { type: "button", class: "secondary", id: "download-grid", disabled: true }, "Download grid (PNG)");
  const grid = h("div", { id: "explain-grid", class: "explain-grid", "aria-live": "polite" });

  const form = h("form", { id: "explain-form", class: "explain-form", novalidate: true },
    h("fieldset", {}, h("legend", {}, "Images"), drop, fileInput, chosen),
    h("fieldset", {}, h("legend", {}, "Model and maps"),
      h("div", { class: "field" }, h("label", { for: "explain-model" }, "Model (name, name@alias or name:version)"), modelInput, refs, modelInfo),
      h("fieldset", { class: "methods" }, h("legend", {}, "Methods (a column each)"), methodBoxes),
      h("fieldset", { class: "methods" }, h("legend", {}, "Layers (none ticked: the last; several: fused as TorchCAM does)"), layerBoxes,
        h("label", { class: "check" }, perLayer, "a column per layer instead (compare them)")),
      h("div", { class: "form-grid" },
        h("div", { class: "field" }, h("label", { for: "explain-target" }, "Target class"), target),
        h("div", { class: "field" }, h("label", { for: "explain-topk" }, "Top-k maps"), topK),
        h("div", { class: "field" }, h("label", { for: "explain-faithfulness" }, "Faithfulness"), faith),
        h("div", { class: "field" }, h("label", { for: "explain-baseline" }, "Removed pixels become"), baseline),
        h("label", { class: "check" }, augSmooth, "aug-smooth (flips × brightness, 6× the work; not CAM)"))),
    h("div", { class: "actions" }, run));
  const display = h("div", { class: "display-controls", role: "group", "aria-label": "Overlay display (redrawn locally)" },
    h("div", { class: "field" }, h("label", { for: "explain-colormap" }, "Colormap"), colormap),
    h("div", { class: "field" }, h("label", { for: "explain-alpha" }, "Alpha "), alpha, alphaOut),
    save);
  main.append(h("h1", {}, "Explain"), form, display, grid);

  // ── images ──
  function drawChosen() {
    replace(chosen, st.images.map((img) => h("li", {},
      img.bitmap ? h("img", { src: img.url, alt: "", width: 40, height: 40 }) : h("span", { class: "thumb-missing", "aria-hidden": "true" }, "?"),
      h("span", {}, img.name),
      h("button", {
        type: "button", class: "chip-remove", "aria-label": `Remove ${img.name}`,
        onclick: () => {
          URL.revokeObjectURL(img.url);
          st.images = st.images.filter((x) => x !== img);
          drawChosen();
        },
      }, "×"))));
  }
  async function addFiles(files) {
    for (const file of files) {
      const bitmap = await decode(file);
      st.images.push({ id: `img-${st.nextId++}`, name: file.name, file, bitmap, url: URL.createObjectURL(file), base: null });
    }
    drawChosen();
  }
  fileInput.addEventListener("change", async () => {
    await addFiles([...fileInput.files]);
    fileInput.value = "";
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      fileInput.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles([...e.dataTransfer.files]);
  });

  // ── the model ──
  async function loadRefs() {
    try {
      const page = await api("v1/models?pageSize=200");
      const options = [];
      for (const v of page.versions || []) {
        for (const a of v.aliases || []) options.push(`${v.name}@${a}`);
        options.push(`${v.name}:${v.version}`);
      }
      replace(refs, options.map((o) => h("option", { value: o })));
      if (!modelInput.value) modelInput.value = options.find((o) => o.endsWith("@latest")) || options[0] || "";
    } catch (e) {
      modelInfo.textContent = errorText(e);
    }
  }
  async function resolveModel() {
    const ref = modelInput.value.trim();
    st.model = null;
    if (!ref) {
      modelInfo.textContent = "";
      return null;
    }
    try {
      const { version } = await api(`v1/models/${encodeURIComponent(ref)}`);
      st.model = version;
      const spec = version.spec || {};
      const names = spec.classNames || [];
      modelInfo.textContent = `${version.name}:${version.version}: ${shortEnum(spec.arch)} + ${shortEnum(spec.head)}, ${spec.inputSize} px input (${shortEnum(spec.resize) || "crop"}), ${names.length} classes.`;
      const keep = target.value;
      replace(target, h("option", { value: "" }, "the predicted class"), names.map((n, i) => h("option", { value: String(i), selected: String(i) === keep }, `${i}: ${n}`)));
      topK.max = String(Math.max(1, names.length));
      const ticked = new Set([...layerBoxes.querySelectorAll("input:checked")].map((i) => i.value));
      replace(layerBoxes, (LAYERS[spec.arch] || []).map(([value, text]) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "layer", value, checked: ticked.has(value) }), text)));
      if (Number(topK.value) > names.length) topK.value = String(names.length);
      return version;
    } catch (e) {
      modelInfo.textContent = errorText(e);
      return null;
    }
  }
  modelInput.addEventListener("change", resolveModel);

  // ── drawing ──
  function recolour() {
    alphaOut.textContent = Number(alpha.value).toFixed(2);
    for (const p of st.panels) drawOverlay(p.canvas, p.upsampled, p.lo, p.hi, p.image.base, colormap.value, Number(alpha.value));
  }
  colormap.addEventListener("change", recolour);
  alpha.addEventListener("input", recolour);

  function drawGrid() {
    st.panels = [];
    const spec = st.model.spec || {};
    const size = num(spec.inputSize);
    const resize = shortEnum(spec.resize) || "crop";
    for (const img of st.images) img.base = img.bitmap ? resizedPixels(img.bitmap, size, resize) : null;
    const head = h("div", { class: "grid-row grid-head", role: "row" },
      h("div", { role: "columnheader" }, "Image"),
      st.columns.map((c) => h("div", { role: "columnheader", dataset: { method: c.method } },
        h("strong", {}, c.title),
        c.response ? h("span", { class: "muted recipe" }, ` ${recipeText(c.response.recipe)}`) : null,
        c.error ? h("p", { class: "error column-error" }, c.error) : null)));
    const rows = st.images.map((img, row) => {
      const results = st.columns.map((c) => (c.response ? c.response.results[row] : null));
      const imageError = (results.find((r) => r && r.error) || {}).error || "";
      const inputCell = h("div", { role: "rowheader", class: "input-cell" },
        h("div", { class: "input-figure" },
          img.base ? imageCanvas(img.base) : h("div", { class: "placeholder", "aria-hidden": "true" }, "?"),
          imageError ? h("p", { class: "image-error", role: "alert", dataset: { image: img.name } }, imageError) : null),
        h("span", { class: "image-name" }, img.name));
      const cells = st.columns.map((c, k) => {
        const r = results[k];
        if (!r) return h("div", { role: "cell", class: "empty-cell" }, c.error ? "–" : "");
        if (r.error) return h("div", { role: "cell", class: "empty-cell" }, h("span", { class: "muted" }, `no map (${shortEnum(r.errorKind)})`));
        const names = r.classNames || [];
        const probs = r.probabilities || [];
        return h("div", { role: "cell", class: "panels" }, (r.upsampledMaps || []).map((up, i) => {
          const raw = (r.maps || [])[i] || up;
          const [lo, hi] = minMax(raw.values);
          const canvas = h("canvas", { class: "overlay", width: num(up.width), height: num(up.height), role: "img" });
          const cls = num(up.classIndex);
          const text = label(names, probs, cls);
          canvas.setAttribute("aria-label", `${c.title} map of ${img.name} for ${text}`);
          const panel = { canvas, upsampled: up, lo, hi, image: img };
          st.panels.push(panel);
          const predicted = num(r.predictedClass);
          const faithfulness = raw.faithfulness;
          return h("figure", { class: "panel", dataset: { method: c.method, image: img.name, classIndex: cls, predicted: cls === predicted ? "yes" : "no" } },
            h("figcaption", { class: "panel-label" }, text,
              cls === predicted ? null : h("span", { class: "muted" }, ` · predicted ${label(names, probs, predicted)}`)),
            canvas,
            faithfulness !== undefined ? h("p", { class: "faithfulness" }, `${FAITHFULNESS_SHORT[st.faithfulness] || "faithfulness"} ${Number(faithfulness).toFixed(3)}`) : null);
        }));
      });
      return h("div", { class: "grid-row", role: "row", dataset: { image: img.name } }, inputCell, cells);
    });
    grid.style.setProperty("--columns", String(st.columns.length));
    replace(grid, h("p", { class: "hint" }, `${st.model.name}:${st.model.version}, ${size}×${size} input; maps are min–max normalised per panel.`),
      h("div", { role: "table", class: "grid", "aria-label": "Explanations: a row per image, a column per method" }, head, rows));
    recolour();
    save.disabled = !st.panels.length && !st.images.length;
  }

  function imageCanvas(base) {
    const c = h("canvas", { class: "input-image", width: base.width, height: base.height, "aria-hidden": "true" });
    c.getContext("2d").putImageData(base, 0, 0);
    return c;
  }

  // ── explaining ──
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const methods = methodBoxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => METHODS.find((m) => m[0] === i.value));
    const problems = [];
    if (!st.images.length) problems.push("add at least one image");
    if (!methods.length) problems.push("choose at least one method");
    if (!modelInput.value.trim()) problems.push("name a model");
    if (problems.length) {
      replace(grid, h("p", { class: "error", role: "alert" }, `Cannot explain yet: ${problems.join("; ")}.`));
      return;
    }
    run.disabled = true;
    grid.setAttribute("aria-busy", "true");
    replace(grid, h("p", {}, "Explaining…"));
    try {
      const version = await resolveModel();
      if (!version) {
        replace(grid, h("p", { class: "error", role: "alert" }, modelInfo.textContent || "Unknown model."));
        return;
      }
      // Pin the version, so every column explains the same weights even if
      // the alias moves meanwhile.
      const ref = `${version.name}:${version.version}`;
      const targetClass = target.value === "" ? undefined : Number(target.value);
      const images = await Promise.all(st.images.map(async (img) => ({ id: img.name, data: await base64Of(img.file), targetClass })));
      st.faithfulness = faith.value;
      const layers = [...layerBoxes.querySelectorAll("input:checked")].map((i) => i.value);
      const layerSets = perLayer.checked && layers.length > 1 ? layers.map((l) => [l]) : [layers];
      const jobs = methods.flatMap((m) => layerSets.map((set) => [m, set]));
      st.columns = await Promise.all(jobs.map(async ([[key, name, wire], set]) => {
        const title = set.length ? `${name} @ ${set.join("+")}` : name;
        const body = {
          model: ref, images, method: wire, topK: Math.max(1, Number(topK.value) || 1),
          returnUpsampledMaps: true, returnOverlay: false, targetLayers: set,
          augSmooth: augSmooth.checked && key !== "cam",
        };
        if (faith.value) body.faithfulness = faith.value;
        if (faith.value && baseline.value) body.faithfulnessBaseline = baseline.value;
        try {
          return { method: key, title, response: await api("v1/explain", { method: "POST", body }) };
        } catch (err) {
          return { method: key, title, error: err instanceof ApiError || err instanceof Error ? errorText(err) : String(err) };
        }
      }));
      drawGrid();
      announce(`Explained ${st.images.length} image(s) with ${methods.length} method(s).`);
    } catch (err) {
      replace(grid, h("p", { class: "error", role: "alert" }, errorText(err)));
    } finally {
      run.disabled = false;
      grid.setAttribute("aria-busy", "false");
    }
  });

  save.addEventListener("click", () => {
    const blobCanvas = composeGrid(st, colormap.value, Number(alpha.value));
    if (!blobCanvas) return;
    blobCanvas.toBlob((blob) => download(blob, `explain-${st.model ? `${st.model.name}-${st.model.version}` : "grid"}.png`), "image/png");
  });

  await loadRefs();
  if (modelInput.value) await resolveModel();
  return () => {
    for (const img of st.images) URL.revokeObjectURL(img.url);
  };
}

/**
 * The grid as one PNG: a row per image, the input then a column per method
 * (top-k panels side by side), each panel titled `class(p)` as in the
 * lecture's grid, errors written in their cell.
 */
function composeGrid(st, cmap, alpha) {
  if (!st.model || !st.columns.length) return null;
  const size = num(st.model.spec.inputSize);
  const scale = Math.max(1, Math.ceil(160 / size));
  const cell = size * scale;
  const k = Math.max(1, ...st.columns.map((c) => Math.max(0, ...(c.response ? c.response.results.map((r) => (r.upsampledMaps || []).length) : [0]))));
  const pad = 10;
  const titleH = 22;
  const headH = 28;
  const colW = k * (cell + pad);
  const width = pad + (cell + pad) + st.columns.length * colW;
  const height = headH + st.images.length * (cell + titleH + pad) + pad;
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.fillStyle = "#111";
  ctx.font = "bold 15px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillText("image", pad, headH / 2);
  st.columns.forEach((c, j) => ctx.fillText(c.title, pad + cell + pad + j * colW, headH / 2));
  ctx.font = "13px system-ui, sans-serif";
  const scratch = document.createElement("canvas");
  st.images.forEach((img, row) => {
    const y = headH + row * (cell + titleH + pad);
    ctx.fillStyle = "#111";
    ctx.fillText(img.name.slice(0, 24), pad, y + titleH / 2);
    if (img.base) {
      scratch.width = img.base.width;
      scratch.height = img.base.height;
      scratch.getContext("2d").putImageData(img.base, 0, 0);
      ctx.drawImage(scratch, pad, y + titleH, cell, cell);
    }
    st.columns.forEach((c, j) => {
      const x0 = pad + cell + pad + j * colW;
      const r = c.response ? c.response.results[row] : null;
      if (!r || r.error) {
        ctx.fillStyle = "#b00020";
        wrapText(ctx, (r && r.error) || c.error || "no result", x0, y + titleH + 14, colW - pad, 16);
        return;
      }
      (r.upsampledMaps || []).forEach((up, i) => {
        const raw = (r.maps || [])[i] || up;
        const [lo, hi] = minMax(raw.values);
        drawOverlay(scratch, up, lo, hi, img.base, cmap, alpha);
        const x = x0 + i * (cell + pad);
        ctx.drawImage(scratch, x, y + titleH, cell, cell);
        ctx.fillStyle = "#111";
        ctx.fillText(label(r.classNames || [], r.probabilities || [], num(up.classIndex)), x, y + titleH / 2);
      });
    });
  });
  return canvas;
}

function wrapText(ctx, text, x, y, width, lineHeight) {
  let line = "";
  for (const word of String(text).split(/\s+/)) {
    const next = line ? `${line} ${word}` : word;
    if (ctx.measureText(next).width > width && line) {
      ctx.fillText(line, x, y);
      y += lineHeight;
      line = word;
    } else {
      line = next;
    }
  }
  if (line) ctx.fillText(line, x, y);
}
