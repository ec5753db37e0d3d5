// A small stacked-bar chart of labels per group (day or batch), drawn as inline SVG so no
// chart library is needed. Colours come from CSS custom properties (--class-<Name>).
import { h, s, humanLabel } from "./dom.js";

const HEIGHT = 200;
const PAD = { top: 12, right: 8, bottom: 42, left: 34 };

// Whole-number tick step (1, 2, 5, 10, 20, ...) giving at most 5 intervals: counts are integers.
function tickStep(max) {
  const rough = Math.max(1, max / 5);
  const pow = 10 ** Math.floor(Math.log10(rough));
  for (const m of [1, 2, 5, 10]) if (m * pow >= rough) return Math.max(1, m * pow);
  return 10 * pow;
}

// groups: [{key, label, counts: {className: n}}] in display order.
export function drawChart(container, groups, classes) {
  const WIDTH = Math.max(280, Math.min(1000, container.clientWidth || 640));
  container.replaceChildren();
  if (!groups.length) {
    container.append(h("p", { class: "empty" }, "No finished jobs match these filters yet."));
    return;
  }
  const totals = groups.map((g) => classes.reduce((a, c) => a + (g.counts[c] || 0), 0));
  const step0 = tickStep(Math.max(...totals));
  const max = Math.max(step0, Math.ceil(Math.max(...totals) / step0) * step0);
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const step = plotW / groups.length;
  const barW = Math.max(4, Math.min(48, step * 0.7));
  const y = (v) => PAD.top + plotH - (v / max) * plotH;

  const summary = groups.map((g, i) => `${g.label}: ${totals[i]} (${classes.filter((c) => g.counts[c])
    .map((c) => `${humanLabel(c)} ${g.counts[c]}`).join(", ")})`).join("; ");
  const svg = s("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "chart-svg",
    "aria-label": `Finished jobs per label. ${summary}`, preserveAspectRatio: "xMidYMid meet" });

  // Gridlines and y ticks.
  const ticks = Array.from({ length: max / step0 + 1 }, (_, i) => i * step0);
  for (const t of ticks) {
    svg.append(s("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(t), y2: y(t), class: "grid" }));
    svg.append(s("text", { x: PAD.left - 6, y: y(t) + 4, class: "tick", "text-anchor": "end", text: String(t) }));
  }

  // Show at most ~12 x labels so they stay readable on a phone.
  const labelEvery = Math.ceil(groups.length / 12);
  groups.forEach((g, i) => {
    const cx = PAD.left + step * i + step / 2;
    let acc = 0;
    for (const c of classes) {
      const n = g.counts[c] || 0;
      if (!n) continue;
      const top = y(acc + n);
      const rect = s("rect", { x: cx - barW / 2, y: top, width: barW, height: y(acc) - top,
        class: `bar bar-${c}`, "data-class": c });
      rect.append(s("title", { text: `${g.label}: ${humanLabel(c)} ${n}` }));
      svg.append(rect);
      acc += n;
    }
    if (i % labelEvery === 0) {
      svg.append(s("text", { x: cx, y: HEIGHT - PAD.bottom + 16, class: "tick", "text-anchor": "middle", text: g.short || g.label }));
    }
  });
  svg.append(s("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(0), y2: y(0), class: "axis" }));

  const legend = h("ul", { class: "legend", "aria-hidden": "true" },
    classes.map((c) => h("li", {}, h("span", { class: "swatch", dataset: { class: c } }), humanLabel(c))));
  container.append(svg, legend);
}
