// One job, rendered as a card: stage and progress while it runs, the full result when done,
// the error and a retry button when it failed. Used by the live list and the history detail.
import { h, pct, seconds, formatDate, humanLabel } from "./dom.js";
import {
  CLASS_NAMES, ACTIVE, STAGE_TEXT, jobError, sourceName, sourceKindText, thumbnailUrls, progressOf,
  members, sortedClasses,
} from "./model.js";
import { keyedImage } from "./api.js";

export function shortId(id) {
  return String(id).length > 12 ? String(id).slice(0, 8) : String(id);
}

const SHORT_NAMES = { Animation: "Anim.", Flat_Content: "Flat", Gaming: "Game", Natural_Content: "Nat." };

const TIMING_NAMES = {
  queue_s: "Waiting in queue",
  queued_s: "Waiting in queue",
  download_s: "Download",
  upload_s: "Upload",
  sample_s: "Frame sampling",
  features_s: "Feature extraction",
  extract_s: "Feature extraction",
  classify_s: "Classification",
  segments_s: "Timeline",
  thumbnails_s: "Thumbnails",
  total_s: "Total",
  elapsed_s: "Total",
};

function statusBadge(status) {
  const text = status ? status.charAt(0).toUpperCase() + status.slice(1) : "Unknown";
  return h("span", { class: `badge status-${status}`, dataset: { status } }, text);
}

function probabilityBars(probabilities, label) {
  const rows = sortedClasses(probabilities).map((name) => {
    const p = Number(probabilities[name] || 0);
    return h("li", { class: `prob-row${name === label ? " is-top" : ""}`, dataset: { class: name } },
      h("span", { class: "prob-name" }, humanLabel(name)),
      h("span", { class: "prob-track", "aria-hidden": "true" },
        h("span", { class: "prob-fill", dataset: { class: name }, style: { width: `${(p * 100).toFixed(1)}%` } })),
      h("span", { class: "prob-value mono" }, pct(p, 1)));
  });
  return h("ul", { class: "probs", "aria-label": "Probability per class" }, rows);
}

function membersTable(job) {
  const list = members(job);
  if (!list.length) return null;
  const classes = sortedClasses(job.probabilities || list[0].probabilities);
  // Phones show the short column names (CSS picks one), so the table fits without scrolling.
  const head = h("tr", {}, h("th", { scope: "col" }, "Model"),
    classes.map((c) => h("th", { scope: "col", class: "num" },
      h("span", { class: "long" }, humanLabel(c)),
      h("abbr", { class: "short", title: humanLabel(c) }, SHORT_NAMES[c] || humanLabel(c).slice(0, 4)))));
  const body = list.map((m) => {
    const top = classes.reduce((a, b) => (Number(m.probabilities[b] || 0) > Number(m.probabilities[a] || 0) ? b : a), classes[0]);
    return h("tr", {}, h("th", { scope: "row" }, m.name),
      classes.map((c) => h("td", { class: `num mono${c === top ? " is-top" : ""}` }, pct(m.probabilities[c], 1))));
  });
  return h("details", { class: "members", open: true },
    h("summary", {}, "Per-model probabilities"),
    h("div", { class: "table-scroll" },
      h("table", { class: "members-table" }, h("thead", {}, head), h("tbody", {}, body))));
}

function agreementText(job) {
  const n = members(job).length;
  const a = Number(job.agreement);
  if (!Number.isFinite(a)) return null;
  if (n) return `${Math.round(a * n)} of ${n} models agree (${pct(a)})`;
  return pct(a);
}

function timingsList(job) {
  const timings = Object.assign({}, job.timings || job.stage_timings || {});
  if (job.elapsed_s !== undefined && timings.total_s === undefined && timings.elapsed_s === undefined) {
    timings.elapsed_s = job.elapsed_s;
  }
  const order = Object.keys(TIMING_NAMES);
  const rank = (k) => (order.includes(k) ? order.indexOf(k) : order.length - 2);
  const entries = Object.entries(timings).filter(([, v]) => typeof v === "number")
    .sort(([a], [b]) => rank(a) - rank(b));
  if (!entries.length) return null;
  return h("dl", { class: "timings" }, entries.map(([k, v]) => [
    h("dt", {}, TIMING_NAMES[k] || k.replace(/_s$/, "").replace(/_/g, " ")),
    h("dd", { class: "mono" }, seconds(v)),
  ]));
}

function thumbnails(job) {
  const urls = thumbnailUrls(job);
  if (!urls.length) return null;
  return h("div", { class: "thumbs", role: "list", "aria-label": "Sampled frames" },
    urls.map((u, i) => {
      const link = h("a", { target: "_blank", rel: "noopener", role: "listitem",
        "aria-label": `Sampled frame ${i + 1} of ${urls.length} (opens full size)` });
      link.append(keyedImage(h("img", { alt: "", loading: "lazy", width: 112, height: 63 }), u,
        (src) => { link.href = src; }));
      return link;
    }));
}

function clock(t) {
  const v = Math.max(0, Number(t) || 0);
  const m = Math.floor(v / 60);
  const s = v - m * 60;
  const h = Math.floor(m / 60);
  const ss = s.toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m % 60).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

// The per-segment timeline: one bar per segment, as wide as it lasts, coloured by its class.
// Hover (title) gives times and confidence; a click shows that segment's thumbnail below.
function timeline(job) {
  const segs = Array.isArray(job.segments) ? job.segments : [];
  if (!segs.length) return null;
  const start = Number(segs[0].start) || 0;
  const total = Math.max(1e-6, Number(segs[segs.length - 1].end) - start);
  const img = h("img", { alt: "", width: 192, height: 108 });
  const caption = h("figcaption", { class: "mono" });
  const preview = h("figure", { class: "seg-preview", hidden: true }, img, caption);
  const describe = (s) => `${clock(s.start)}–${clock(s.end)} ${humanLabel(s.label)} (${pct(s.confidence, 1)})`;
  const bars = segs.map((s, i) => h("button", {
    type: "button", class: "seg", role: "listitem",
    dataset: { class: s.label, index: String(i), start: String(s.start), end: String(s.end) },
    title: describe(s), "aria-label": `Segment ${i + 1} of ${segs.length}: ${describe(s)}`,
    style: { width: `${(((Number(s.end) - Number(s.start)) / total) * 100).toFixed(3)}%` },
    onclick: (ev) => {
      for (const b of ev.currentTarget.parentNode.children) b.classList.toggle("is-selected", b === ev.currentTarget);
      caption.textContent = describe(s);
      if (s.thumbnail) {
        img.hidden = false;
        keyedImage(img, s.thumbnail);
      } else img.hidden = true;
      preview.hidden = false;
    },
  }));
  const shares = job.label_shares || {};
  const legend = Object.entries(shares).sort((a, b) => b[1] - a[1])
    .map(([name, v]) => `${humanLabel(name)} ${pct(v)}`).join(" · ");
  return h("div", { class: "timeline", dataset: { mixed: String(Boolean(job.mixed)) } },
    h("p", { class: "timeline-head" },
      h("strong", {}, "Timeline"), ` ${segs.length} segment${segs.length === 1 ? "" : "s"}`,
      job.mixed ? h("span", { class: "mixed-chip" }, "mixed") : null,
      legend ? h("span", { class: "timeline-legend" }, ` ${legend}`) : null),
    h("div", { class: "timeline-bar", role: "list", "aria-label": "Segments of the video" }, bars),
    h("p", { class: "timeline-scale mono", "aria-hidden": "true" },
      h("span", {}, clock(start)), h("span", {}, clock(start + total))),
    preview);
}

function result(job) {
  // "unknown": the model was not confident enough to name one (its confidence is still shown).
  const subcat = job.subcategory
    ? `${job.subcategory === "unknown" ? "unknown" : humanLabel(job.subcategory)}${job.subcategory_confidence != null ? ` (${pct(job.subcategory_confidence)})` : ""}`
    : null;
  const agreement = agreementText(job);
  return h("div", { class: "result" },
    h("p", { class: "verdict" },
      h("span", { class: "label-chip", dataset: { class: job.label || "" } }, humanLabel(job.label)),
      job.label === "mixed"
        ? h("span", { class: "confidence" }, "several classes in turn: see the timeline")
        : h("span", { class: "confidence" }, h("strong", { class: "mono" }, pct(job.confidence, 1)), " confidence"),
      job.uncertain && h("span", { class: "badge uncertain", title: "The top class is under the model's confidence threshold: treat this answer as a guess." }, "uncertain")),
    h("dl", { class: "facts" },
      subcat && [h("dt", {}, "Subcategory"), h("dd", { class: "subcategory" }, subcat)],
      agreement && [h("dt", {}, "Ensemble agreement"), h("dd", { class: "agreement" }, agreement)],
      job.model_version && [h("dt", {}, "Model"), h("dd", { class: "mono" }, String(job.model_version).slice(0, 12))]),
    timeline(job),
    job.probabilities && probabilityBars(job.probabilities, job.label),
    membersTable(job),
    thumbnails(job),
    timingsList(job));
}

// "Is this right?": the user's true label for the job (PUT /api/jobs/<id>/label), which
// `vidclass export-labels` turns into training data. handlers.onLabel(job, label or null).
function correction(job, handlers) {
  if (!handlers.onLabel) return null;
  const id = `job-${job.id}-true-label`;
  const select = h("select", { id, class: "true-label-select", dataset: { action: "true-label" } },
    h("option", { value: "" }, "— not corrected —"),
    CLASS_NAMES.map((c) => h("option", { value: c, selected: c === job.true_label }, humanLabel(c))));
  const note = job.true_label
    ? (job.true_label === job.label ? "You confirmed this label." : `You corrected this to ${humanLabel(job.true_label)}.`)
    : "Wrong? Set the right class.";
  return h("form", { class: "correction", dataset: { trueLabel: job.true_label || "" },
    onsubmit: (ev) => { ev.preventDefault(); handlers.onLabel(job, select.value || null); } },
  h("label", { for: id }, "True label"), select,
  h("button", { type: "submit", class: "secondary small", dataset: { action: "save-label" } }, "Save label"),
  h("span", { class: "hint correction-note" }, note));
}

function progressBlock(job) {
  const p = Math.round(progressOf(job));
  const id = `job-${job.id}-progress`;
  return h("div", { class: "job-progress" },
    h("div", { class: "progress-line" },
      h("span", { id: `${id}-label`, class: "stage" },
        job.recovering ? "Recovering: its worker stopped answering; another takes it over" : (STAGE_TEXT[job.status] || job.status)),
      h("span", { class: "mono" }, job.recovering ? "" : `${p}%`)),
    // While recovering the last percentage is stale: an indeterminate bar says "waiting".
    job.recovering ? h("progress", { id, max: 100, "aria-labelledby": `${id}-label` })
      : h("progress", { id, max: 100, value: p, "aria-labelledby": `${id}-label` }, `${p}%`));
}

function errorBlock(job) {
  const err = jobError(job);
  if (job.status === "cancelled" && !err) return h("p", { class: "job-note" }, "Cancelled before it finished.");
  if (!err) return h("p", { class: "job-error" }, "The job failed without a message.");
  return h("div", { class: "job-error", role: "note" },
    h("p", { class: "error-message" }, err.message || "Failed."),
    err.code ? h("p", { class: "error-code mono" }, err.code) : null);
}

// Buttons call handlers.onCancel(job) / handlers.onRetry(job) / handlers.onRemove(job).
function actions(job, handlers) {
  const buttons = [];
  if (ACTIVE.has(job.status) && handlers.onCancel) {
    buttons.push(h("button", { type: "button", class: "secondary small", dataset: { action: "cancel" },
      "aria-label": `Cancel ${sourceName(job)}`, onclick: () => handlers.onCancel(job) }, "Cancel"));
  }
  if ((job.status === "failed" || job.status === "cancelled") && handlers.onRetry) {
    buttons.push(h("button", { type: "button", class: "primary small", dataset: { action: "retry" },
      "aria-label": `Retry ${sourceName(job)}`, onclick: () => handlers.onRetry(job) }, "Retry"));
  }
  if (!ACTIVE.has(job.status) && handlers.onRemove) {
    buttons.push(h("button", { type: "button", class: "ghost small", dataset: { action: "remove" },
      "aria-label": `Remove ${sourceName(job)} from this list`, onclick: () => handlers.onRemove(job) }, "Remove"));
  }
  return buttons.length ? h("div", { class: "job-actions" }, buttons) : null;
}

function cardContent(job, handlers) {
  const titleId = `job-${job.id}-title`;
  const meta = [sourceKindText(job.source_kind), formatDate(job.created_at), job.batch_id ? `batch #${shortId(job.batch_id)}` : null]
    .filter(Boolean).join(" · ");
  return [
    h("div", { class: "job-head" },
      h("h3", { id: titleId, class: "job-title", title: job.source || "" }, sourceName(job)),
      statusBadge(job.status)),
    h("p", { class: "job-meta" }, meta, h("span", { class: "mono job-id", title: `Job ${job.id}` }, ` · #${shortId(job.id)}`)),
    ACTIVE.has(job.status) ? progressBlock(job) : null,
    job.status === "done" ? result(job) : null,
    job.status === "done" ? correction(job, handlers) : null,
    job.status === "failed" || job.status === "cancelled" ? errorBlock(job) : null,
    actions(job, handlers),
  ];
}

export function renderJob(job, handlers = {}) {
  const li = h("li", { class: "job", "aria-labelledby": `job-${job.id}-title` });
  updateJob(li, job, handlers);
  return li;
}

// Re-render a card in place, keeping keyboard focus and open <details> where they were.
export function updateJob(li, job, handlers = {}) {
  const signature = JSON.stringify(job);
  if (li.dataset.signature === signature) return false;
  const focused = li.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  const oldDetails = li.querySelector("details.members");
  const detailsOpen = oldDetails ? oldDetails.open : null;   // keep what the user chose
  li.dataset.signature = signature;
  li.dataset.id = job.id;
  li.dataset.status = job.status;
  li.replaceChildren(...cardContent(job, handlers).filter(Boolean));
  const newDetails = li.querySelector("details.members");
  if (newDetails && detailsOpen !== null) newDetails.open = detailsOpen;
  if (focused) {
    const again = li.querySelector(`[data-action="${focused}"]`) || li.querySelector("[data-action]");
    if (again) again.focus();
    else {
      li.tabIndex = -1;
      li.focus();
    }
  }
  return true;
}
