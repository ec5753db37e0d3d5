// Dashboard view (#dashboard): queue depth per queue, live workers and their model, running jobs,
// jobs finished per minute over the last hour, median time per stage and an ETA per running
// batch, all from GET /api/dashboard; refreshed every few seconds while the view is shown.
import { getJSON } from "./api.js";
import { h, s, $, announce, seconds } from "./dom.js";
import { sourceName } from "./model.js";
import { shortId } from "./jobcard.js";

const POLL_MS = 5000;
const STAGE_NAMES = { download_s: "Download", sample_s: "Frame sampling", features_s: "Feature extraction",
  classify_s: "Classification", thumbnails_s: "Thumbnails", total_s: "Whole job" };

function table(caption, head, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-scroll" }, h("table", { class: "history-table dash-table" },
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows)));
}

// Bars per minute with a y-axis (0, half and the top: whole jobs per minute) and an x-axis.
function sparkline(counts) {
  const width = 600;
  const height = 80;
  const left = 28;        // room for the y-axis labels
  const top = 6;
  const max = Math.max(1, ...counts);
  const bar = (width - left) / counts.length;
  const y = (v) => top + height - (v / max) * height;
  const ticks = [...new Set([0, Math.round(max / 2), max])];
  return s("svg", { viewBox: `0 0 ${width} ${height + top + 14}`, class: "dash-spark", role: "img",
    "aria-label": `Jobs finished per minute over the last hour, at most ${max} a minute` },
  ...ticks.map((t) => s("line", { class: "grid", x1: left, x2: width, y1: y(t).toFixed(1), y2: y(t).toFixed(1) })),
  ...ticks.map((t) => s("text", { class: "axis tick", x: left - 4, y: (y(t) + 3).toFixed(1), "text-anchor": "end",
    "data-tick": t, text: String(t) })),
  ...counts.map((c, i) => s("rect", { class: "bar", x: (left + i * bar + 1).toFixed(1), width: Math.max(1, bar - 2).toFixed(1),
    y: y(c).toFixed(1), height: ((c / max) * height).toFixed(1) },
  s("title", { text: `${60 - i} min ago: ${c}` }))),
  s("text", { x: left, y: top + height + 12, class: "axis", text: "60 min ago" }),
  s("text", { x: width, y: top + height + 12, class: "axis", "text-anchor": "end", text: "now" }));
}

export class DashboardView {
  constructor() {
    this.timer = null;
    this.visible = false;
  }

  show() {
    this.visible = true;
    announce("Dashboard view.");
    this.load();
  }

  hide() {
    this.visible = false;
    clearTimeout(this.timer);
    this.timer = null;
  }

  async load() {
    clearTimeout(this.timer);
    let d;
    try {
      d = await getJSON("/api/dashboard");
    } catch (e) {
      $("#dash-queues").replaceChildren(h("p", { class: "empty" }, `Could not load the dashboard: ${e.message}`));
      return;
    }
    if (!this.visible) return;
    this.render(d);
    this.timer = setTimeout(() => this.load(), POLL_MS);
  }

  render(d) {
    $("#dash-queues").replaceChildren(d.queue_ok === false ? h("p", { class: "empty" }, "The queue (Redis) is unreachable.")
      : h("dl", { class: "dash-numbers" }, Object.entries(d.queues || {}).map(([name, n]) => [
        h("dt", {}, `Waiting in “${name}”`), h("dd", { class: "mono", dataset: { queue: name } }, String(n))])));
    $("#dash-workers").replaceChildren(table("Workers", ["Worker", "Queues", "Processes", "Active", "Done", "Up", "Model"],
      (d.workers || []).map((w) => h("tr", { dataset: { worker: w.name } }, h("td", { class: "mono" }, w.name),
        h("td", {}, (w.queues || []).join(", ") || "–"),
        h("td", { class: "num mono", dataset: { field: "concurrency" } }, w.concurrency == null ? "–" : String(w.concurrency)),
        h("td", { class: "num mono", dataset: { field: "active" } }, w.active == null ? "–" : String(w.active)),
        h("td", { class: "num mono", dataset: { field: "processed" } }, w.processed == null ? "–" : String(w.processed)),
        h("td", { class: "num mono" }, w.uptime_s == null ? "–" : seconds(w.uptime_s)),
        h("td", { class: "mono", dataset: { field: "model" } }, w.serves_model === false ? "none (downloads only)"
          : (w.model_versions || []).length ? w.model_versions.map((v) => String(v).slice(0, 12)).join(", ")
            : "loading"))),
    "No worker has a live heartbeat."));
    $("#dash-running").replaceChildren(table("Running jobs", ["Job", "Status", "Progress", "Worker"], (d.running || []).map((j) =>
      h("tr", { dataset: { id: j.id } }, h("td", { title: j.source }, sourceName(j), h("span", { class: "hint mono" }, ` #${shortId(j.id)}`)),
        h("td", {}, h("span", { class: `badge status-${j.status}` }, j.status)),
        h("td", { class: "num mono" }, `${j.progress}%`), h("td", { class: "mono" }, j.worker || "–"))),
    "No job is running."));
    const t = d.throughput || { per_minute: [], last_hour: 0 };
    $("#dash-throughput-total").textContent = `${t.last_hour} job${t.last_hour === 1 ? "" : "s"} finished in the last hour.`;
    $("#dash-throughput").replaceChildren(sparkline(t.per_minute));
    const medians = Object.entries(d.stage_medians_s || {});
    $("#dash-stages").replaceChildren(medians.length
      ? h("dl", { class: "timings" }, medians.map(([k, v]) => [h("dt", {}, STAGE_NAMES[k] || k),
        h("dd", { class: "mono", dataset: { stage: k } }, seconds(v))]))
      : h("p", { class: "empty" }, "No finished job yet."));
    $("#dash-stages-note").textContent = d.stage_sample ? `Medians of the last ${d.stage_sample} finished jobs.` : "";
    $("#dash-batches").replaceChildren(table("Running batches", ["Batch", "Remaining", "ETA (estimate)"], (d.batches || []).map((b) =>
      h("tr", { dataset: { id: b.id } }, h("td", {}, h("a", { href: `#history?batch=${encodeURIComponent(b.id)}` },
        b.name || `#${shortId(b.id)}`)),
      h("td", { class: "num mono" }, `${b.remaining}${b.total ? ` of ${b.total}` : ""}`),
      h("td", { class: "num mono eta" }, b.eta_s == null ? "–" : seconds(b.eta_s)))),
    "No batch is running."));
  }
}
