// Hand-drawn SVG charts: line charts (loss, accuracy, learning rate) and
// horizontal stacked bars (step time per phase and rank). Colours come
// from CSS classes (`series-N`, `phase-N`), so dark mode restyles them.

import { fmt, h } from "./dom.js";

const W = 420;
const H = 210;
const PAD = { left: 50, right: 12, top: 14, bottom: 34 };

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) {
    const v = Number.isFinite(lo) ? lo : 0;
    return [v];
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => raw <= s) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/**
 * A line chart. `series`: [{name, points: [[x, y], ...]}]; options:
 * `title`, `xLabel`, `yLabel`, `yMin`/`yMax` (fixed range), `xTicks`
 * (values), `dots` (draw points, default true), `marker` (an x drawn as a
 * dashed vertical line), `yFormat`.
 */
export function lineChart(series, opts = {}) {
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [0, 1];
  if (opts.xMin !== undefined) x0 = opts.xMin;
  if (opts.xMax !== undefined) x1 = opts.xMax;
  if (x1 === x0) x1 = x0 + 1;
  let y0 = opts.yMin !== undefined ? opts.yMin : ys.length ? Math.min(...ys) : 0;
  let y1 = opts.yMax !== undefined ? opts.yMax : ys.length ? Math.max(...ys) : 1;
  if (y1 === y0) {
    const d = Math.abs(y0) * 0.1 || 0.1;
    y0 -= opts.yMin !== undefined ? 0 : d;
    y1 += d;
  } else if (opts.yMin === undefined) {
    const d = (y1 - y0) * 0.08;
    y0 -= d;
    y1 += d;
  }
  const yTicks = niceTicks(y0, y1, 4);
  const xTicks = opts.xTicks || niceTicks(x0, x1, Math.min(8, Math.max(1, Math.round(x1 - x0))));
  const px = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const py = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const yFormat = opts.yFormat || ((v) => fmt(v, 3));
  const summary = series.map((s) => {
    const last = s.points[s.points.length - 1];
    return last ? `${s.name} ${yFormat(last[1])} at ${opts.xLabel || "x"} ${fmt(last[0], 4)}` : `${s.name}: no data`;
  }).join("; ");
  const svg = h("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": `${opts.title || "chart"}: ${summary || "no data yet"}`,
  },
  h("title", {}, opts.title || ""),
  yTicks.map((t) => h("g", { class: "tick" },
    h("line", { x1: PAD.left, x2: W - PAD.right, y1: py(t), y2: py(t), class: "grid" }),
    h("text", { x: PAD.left - 6, y: py(t) + 4, "text-anchor": "end" }, yFormat(t)))),
  xTicks.map((t) => h("text", { class: "tick", x: px(t), y: H - PAD.bottom + 16, "text-anchor": "middle" }, fmt(t, 4))),
  h("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }),
  h("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }),
  opts.xLabel ? h("text", { class: "axis-label", x: (PAD.left + W - PAD.right) / 2, y: H - 4, "text-anchor": "middle" }, opts.xLabel) : null,
  opts.marker !== undefined ? h("line", { class: "marker", x1: px(opts.marker), x2: px(opts.marker), y1: PAD.top, y2: H - PAD.bottom }) : null,
  series.map((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    const cls = `series series-${s.index ?? i}`;
    return h("g", { class: cls },
      pts.length > 1 ? h("polyline", { points: pts.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ") }) : null,
      opts.dots === false ? null : pts.map((p) => h("circle", { cx: px(p[0]), cy: py(p[1]), r: 3 },
        h("title", {}, `${s.name}: ${yFormat(p[1])} (${opts.xLabel || "x"} ${fmt(p[0], 4)})`))));
  }));
  const legend = h("ul", { class: "legend", "aria-hidden": "true" },
    series.map((s, i) => h("li", {}, h("span", { class: `swatch series-${s.index ?? i}` }), s.name)));
  return h("figure", { class: "chart-figure" }, opts.title ? h("figcaption", {}, opts.title) : null, svg, legend);
}

/**
 * Horizontal stacked bars: `rows` = [{label, values: [..]}] with one value
 * per `parts` name; `unit` is appended to values in tooltips and totals.
 */
export function stackedBars(rows, parts, opts = {}) {
  const unit = opts.unit || "";
  const W = 720;
  const rowH = 26;
  const labelW = 64;
  const totalW = 84;
  const height = rows.length * rowH + 24;
  const max = Math.max(1e-9, ...rows.map((r) => r.values.reduce((a, b) => a + b, 0)));
  const scale = (W - labelW - totalW) / max;
  const svg = h("svg", {
    viewBox: `0 0 ${W} ${height}`, class: "chart bars", role: "img",
    "aria-label": `${opts.title || "bars"}: ${rows.map((r) => `${r.label} ${parts.map((p, i) => `${p} ${fmt(r.values[i], 3)}${unit}`).join(", ")}`).join("; ")}`,
  },
  h("title", {}, opts.title || ""),
  rows.map((r, j) => {
    let x = labelW;
    const y = 6 + j * rowH;
    const total = r.values.reduce((a, b) => a + b, 0);
    return h("g", {},
      h("text", { class: "tick", x: labelW - 8, y: y + 15, "text-anchor": "end" }, r.label),
      r.values.map((v, i) => {
        const w = Math.max(0, v * scale);
        const rect = h("rect", { class: `phase phase-${i}`, x, y, width: w, height: rowH - 8 },
          h("title", {}, `${r.label} ${parts[i]}: ${fmt(v, 3)} ${unit}`));
        x += w;
        return rect;
      }),
      h("text", { class: "tick", x: x + 6, y: y + 15 }, `${fmt(total, 3)} ${unit}`));
  }));
  const legend = h("ul", { class: "legend", "aria-hidden": "true" },
    parts.map((p, i) => h("li", {}, h("span", { class: `swatch phase-${i}` }), p)));
  return h("figure", { class: "chart-figure" }, opts.title ? h("figcaption", {}, opts.title) : null, svg, legend);
}
