// The "Your jobs" list: jobs and batches submitted from this browser, kept in localStorage so
// a reload keeps them, and refreshed by polling the API until each reaches a final status.
import { getJSON, postJSON, request, query } from "./api.js";
import { h, $, announce, pct, humanLabel, formatDate } from "./dom.js";
import { ACTIVE, TERMINAL, sourceName } from "./model.js";
import { renderJob, updateJob, shortId } from "./jobcard.js";

const STORAGE_KEY = "vidclass.live.v1";
const MAX_KEPT = 50;
const POLL_MS = 1000;
const POLL_HIDDEN_MS = 5000;
const BATCH_STATUSES = ["queued", "downloading", "extracting", "classifying", "done", "failed", "cancelled"];

export class LiveList {
  constructor({ jobsEl, batchesEl, emptyEl, onMessage }) {
    this.jobsEl = jobsEl;
    this.batchesEl = batchesEl;
    this.emptyEl = emptyEl;
    this.onMessage = onMessage || (() => {});
    this.jobs = new Map();     // id -> {job, li}
    this.batches = new Map();  // id -> {batch, jobs, el}
    this.timer = null;
    this.handlers = {
      onCancel: (job) => this.cancel(job),
      onRetry: (job) => this.retry(job),
      onRemove: (job) => this.removeJob(job.id),
      onLabel: (job, label) => this.setLabel(job, label),
    };
  }

  // ---- persistence -------------------------------------------------------------------------
  save() {
    const data = {
      jobs: Array.from(this.jobs.keys()).slice(0, MAX_KEPT),
      batches: Array.from(this.batches.keys()).slice(0, MAX_KEPT),
    };
    try { localStorage.setItem(STORAGE_KEY, JSON.stringify(data)); } catch (_) { /* private mode */ }
  }

  async restore() {
    let data = { jobs: [], batches: [] };
    try { data = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}"); } catch (_) { /* ignore */ }
    const jobIds = Array.isArray(data.jobs) ? data.jobs : [];
    const batchIds = Array.isArray(data.batches) ? data.batches : [];
    // Oldest first, so that addJob's prepend rebuilds the original order.
    for (const id of batchIds.slice().reverse()) {
      try { this.addBatch(await getJSON(`/api/batches/${encodeURIComponent(id)}`), false); } catch (_) { /* gone */ }
    }
    for (const id of jobIds.slice().reverse()) {
      try { this.addJob(await getJSON(`/api/jobs/${encodeURIComponent(id)}`), false); } catch (_) { /* gone */ }
    }
    this.save();
    this.refreshEmpty();
    this.schedule();
  }

  refreshEmpty() {
    this.emptyEl.hidden = this.jobs.size > 0 || this.batches.size > 0;
  }

  // ---- jobs --------------------------------------------------------------------------------
  addJob(job, announceIt = true) {
    if (!job || job.id === undefined) return;
    const known = this.jobs.get(job.id);
    if (known) {
      this.updateJob(job);
      return;
    }
    const li = renderJob(job, this.handlers);
    this.jobsEl.prepend(li);
    this.jobs.set(job.id, { job, li });
    if (announceIt) announce(`Submitted ${sourceName(job)}: ${job.status}.`);
    this.save();
    this.refreshEmpty();
    this.schedule();
  }

  updateJob(job) {
    const entry = this.jobs.get(job.id);
    if (!entry) return;
    const before = entry.job.status;
    entry.job = job;
    updateJob(entry.li, job, this.handlers);
    if (before !== job.status) {
      const detail = job.status === "done" ? ` ${humanLabel(job.label)}, ${pct(job.confidence)} confidence.` : ".";
      announce(`${sourceName(job)}: ${job.status}${detail}`);
    }
  }

  removeJob(id) {
    const entry = this.jobs.get(id);
    if (!entry) return;
    const next = entry.li.nextElementSibling || entry.li.previousElementSibling;
    entry.li.remove();
    this.jobs.delete(id);
    this.save();
    this.refreshEmpty();
    const focusTarget = (next && next.querySelector("button")) || $("#clear-finished");
    focusTarget.focus();
  }

  clearFinished() {
    for (const [id, entry] of Array.from(this.jobs)) {
      if (TERMINAL.has(entry.job.status)) { entry.li.remove(); this.jobs.delete(id); }
    }
    for (const [id, entry] of Array.from(this.batches)) {
      if (batchFinished(entry.batch)) { entry.el.remove(); this.batches.delete(id); }
    }
    this.save();
    this.refreshEmpty();
  }

  async cancel(job) {
    try {
      this.updateJob(await postJSON(`/api/jobs/${encodeURIComponent(job.id)}/cancel`));
    } catch (e) {
      this.onMessage(`Could not cancel: ${e.message}`, "error");
    }
  }

  async setLabel(job, label) {
    try {
      this.updateJob(await setTrueLabel(job.id, label));
      announce(label ? `Saved: ${humanLabel(label)} is the true label.` : "Correction removed.");
    } catch (e) {
      this.onMessage(`Could not save the label: ${e.message}`, "error");
    }
  }

  async retry(job) {
    try {
      const again = await postJSON(`/api/jobs/${encodeURIComponent(job.id)}/retry`);
      if (again && again.id !== undefined && String(again.id) !== String(job.id)) this.addJob(again);
      else if (again) {
        this.updateJob(again);
        this.schedule();
      }
    } catch (e) {
      this.onMessage(`Could not retry: ${e.message}`, "error");
    }
  }

  // ---- batches -----------------------------------------------------------------------------
  addBatch(batch, announceIt = true) {
    if (!batch || batch.id === undefined) return;
    if (this.batches.has(batch.id)) { this.updateBatch(batch); return; }
    const el = h("article", { class: "batch", "aria-labelledby": `batch-${batch.id}-title`, dataset: { id: batch.id } });
    this.batchesEl.prepend(el);
    const entry = { batch, jobs: Array.isArray(batch.jobs) ? batch.jobs : null, el };
    this.batches.set(batch.id, entry);
    renderBatch(entry, this.batchActions());
    if (announceIt) announce(`${batchName(batch)} submitted with ${batchTotal(batch)} videos.`);
    this.save();
    this.refreshEmpty();
    this.schedule();
    this.pollBatch(entry).catch(() => {});
  }

  updateBatch(batch) {
    const entry = this.batches.get(batch.id);
    if (!entry) return;
    const wasFinished = batchFinished(entry.batch);
    entry.batch = Object.assign({}, entry.batch, batch);
    if (Array.isArray(batch.jobs)) entry.jobs = batch.jobs;
    renderBatch(entry, this.batchActions());
    if (!wasFinished && batchFinished(entry.batch)) announce(`${batchName(entry.batch)} finished.`);
  }

  // Cancel / Retry failed for batch cards; `after` runs once the server answered (a refresh).
  batchActions(after) {
    return batchActions(this.onMessage, async (batch) => {
      const entry = this.batches.get(batch.id);
      if (entry) await this.pollBatch(entry);
      this.schedule();
      if (after) after();
    });
  }

  async pollBatch(entry) {
    const id = encodeURIComponent(entry.batch.id);
    const batch = await getJSON(`/api/batches/${id}`);
    if (!Array.isArray(batch.jobs)) {
      const page = await getJSON(`/api/jobs${query({ batch: entry.batch.id, per_page: 100, sort: "created_at", order: "asc" })}`);
      batch.jobs = jobsOf(page);
    }
    this.updateBatch(batch);
  }

  // ---- polling -----------------------------------------------------------------------------
  hasActive() {
    for (const { job } of this.jobs.values()) if (ACTIVE.has(job.status)) return true;
    for (const { batch } of this.batches.values()) if (!batchFinished(batch)) return true;
    return false;
  }

  schedule() {
    if (this.timer || !this.hasActive()) return;
    this.timer = setTimeout(() => this.tick(), document.hidden ? POLL_HIDDEN_MS : POLL_MS);
  }

  async tick() {
    const requests = [];
    for (const { job } of this.jobs.values()) {
      if (!ACTIVE.has(job.status)) continue;
      requests.push(getJSON(`/api/jobs/${encodeURIComponent(job.id)}`).then((j) => this.updateJob(j)));
    }
    for (const entry of this.batches.values()) {
      if (!batchFinished(entry.batch)) requests.push(this.pollBatch(entry));
    }
    const results = await Promise.allSettled(requests);
    const failed = results.find((r) => r.status === "rejected");
    this.timer = null;
    if (failed && failed.reason && failed.reason.code === "network_error") {
      this.onMessage("Lost contact with the server; retrying…", "warning");
      this.timer = setTimeout(() => { this.timer = null; this.tick(); }, POLL_HIDDEN_MS);
      return;
    }
    this.schedule();
  }
}

export function batchActions(onMessage, after) {
  const act = (verb, done) => async (batch) => {
    try {
      const state = await postJSON(`/api/batches/${encodeURIComponent(batch.id)}/${verb}`);
      announce(done(state));
      await after(batch);
    } catch (e) {
      onMessage(`Could not ${verb} the batch: ${e.message}`, "error");
    }
  };
  return {
    onCancel: act("cancel", (st) => `${st.cancelled} job${st.cancelled === 1 ? "" : "s"} cancelled.`),
    onRetry: act("retry", (st) => `${st.retried} failed job${st.retried === 1 ? "" : "s"} queued again.`),
  };
}

export function setTrueLabel(id, label) {
  return request("PUT", `/api/jobs/${encodeURIComponent(id)}/label`, { label });
}

// ---- batch helpers ---------------------------------------------------------------------------
export function jobsOf(page) {
  if (Array.isArray(page)) return page;
  return (page && (page.items || page.jobs || page.results || page.data)) || [];
}

function batchCounts(batch) {
  const counts = Object.assign({}, batch.counts || batch.status_counts || {});
  return counts;
}

function batchTotal(batch) {
  if (Number.isFinite(Number(batch.total))) return Number(batch.total);
  if (Array.isArray(batch.job_ids)) return batch.job_ids.length;
  if (Array.isArray(batch.jobs)) return batch.jobs.length;
  return Object.values(batchCounts(batch)).reduce((a, b) => a + Number(b || 0), 0);
}

function batchFinishedCount(batch) {
  const c = batchCounts(batch);
  return Number(c.done || 0) + Number(c.failed || 0) + Number(c.cancelled || 0);
}

function batchFinished(batch) {
  if (typeof batch.done === "boolean") return batch.done;
  if (batch.status && TERMINAL.has(batch.status)) return true;
  const total = batchTotal(batch);
  return total === 0 || batchFinishedCount(batch) >= total;
}

function batchProgress(batch) {
  const p = Number(batch.progress);
  if (Number.isFinite(p)) return Math.max(0, Math.min(100, p));
  const total = batchTotal(batch);
  return total ? (100 * batchFinishedCount(batch)) / total : 100;
}

function batchErrors(batch) {
  const list = batch.invalid_lines || batch.errors || batch.rejected || batch.line_errors || [];
  return Array.isArray(list) ? list : [];
}

function batchName(batch) {
  return batch.name ? `Batch ${batch.name}` : `Batch #${shortId(batch.id)}`;
}

export function renderBatch(entry, actions = {}) {
  const { batch, el } = entry;
  const id = batch.id;
  const total = batchTotal(batch);
  const counts = batchCounts(batch);
  const progress = Math.round(batchProgress(batch));
  const errors = batchErrors(batch);
  const finished = batchFinished(batch);
  el.dataset.status = finished ? "finished" : "running";

  const chips = BATCH_STATUSES.filter((st) => Number(counts[st] || 0) > 0).map((st) =>
    h("li", { class: `count-chip status-${st}`, dataset: { status: st } },
      h("span", { class: "count-name" }, st), " ", h("strong", { class: "mono count-value" }, String(counts[st]))));

  const labels = batch.label_counts || {};
  const labelChips = Object.keys(labels).sort().map((l) => h("li", { class: "count-chip", dataset: { label: l } },
    h("span", { class: "label-chip small", dataset: { class: l } }, humanLabel(l)), " ",
    h("strong", { class: "mono count-value" }, String(labels[l]))));
  const buttons = [];
  if (!finished && actions.onCancel) {
    buttons.push(h("button", { type: "button", class: "secondary small", dataset: { action: "cancel-batch" },
      "aria-label": `Cancel ${batchName(batch)}`, onclick: () => actions.onCancel(batch) }, "Cancel batch"));
  }
  if (Number(counts.failed || 0) > 0 && actions.onRetry) {
    buttons.push(h("button", { type: "button", class: "primary small", dataset: { action: "retry-batch" },
      "aria-label": `Retry the failed jobs of ${batchName(batch)}`, onclick: () => actions.onRetry(batch) },
    `Retry ${counts.failed} failed`));
  }
  const jobRows = (entry.jobs || []).map((j) => h("li", { class: "batch-job", dataset: { id: j.id, status: j.status } },
    h("span", { class: "batch-job-source", title: j.source || "" }, sourceName(j)),
    h("span", { class: `badge status-${j.status}` }, j.status),
    j.status === "done"
      ? h("span", { class: "batch-job-label" }, h("span", { class: "label-chip small", dataset: { class: j.label || "" } }, humanLabel(j.label)),
        " ", h("span", { class: "mono" }, pct(j.confidence)))
      : h("span", { class: "batch-job-label hint" }, j.error && j.error.message ? j.error.message : (j.error_message || ""))));

  // replaceChildren() would print a null as the text "null": keep only real nodes.
  el.replaceChildren(...[
    h("div", { class: "job-head" },
      h("h3", { id: `batch-${id}-title`, class: "job-title", title: `Batch ${id}` }, batchName(batch)),
      h("span", { class: `badge ${finished ? "status-done" : "status-classifying"}` }, finished ? "Finished" : "Running")),
    h("p", { class: "job-meta" }, `${total} video${total === 1 ? "" : "s"}`,
      batch.created_at ? ` · ${formatDate(batch.created_at)}` : ""),
    h("div", { class: "job-progress" },
      h("div", { class: "progress-line" },
        h("span", { id: `batch-${id}-plabel` }, `${batchFinishedCount(batch)} of ${total} finished`),
        h("span", { class: "mono" }, `${progress}%`)),
      h("progress", { max: 100, value: progress, "aria-labelledby": `batch-${id}-plabel` }, `${progress}%`)),
    chips.length ? h("ul", { class: "counts", "aria-label": "Jobs per status" }, chips) : null,
    errors.length ? h("details", { class: "batch-errors", open: true },
      h("summary", {}, `${errors.length} line${errors.length === 1 ? " was" : "s were"} rejected`),
      h("ul", {}, errors.map((e) => h("li", {},
        h("span", { class: "mono" }, `Line ${e.line ?? e.line_number ?? "?"}`), ": ",
        h("code", {}, String(e.value ?? e.url ?? e.text ?? "")), " — ", e.message || e.code || "rejected")))) : null,
    jobRows.length ? h("details", { class: "batch-jobs", open: jobRows.length <= 10 },
      h("summary", {}, "Jobs in this batch"), h("ul", { class: "batch-job-list" }, jobRows)) : null,
    labelChips.length ? h("ul", { class: "counts label-counts", "aria-label": "Results per label" }, labelChips) : null,
    buttons.length ? h("div", { class: "job-actions" }, buttons) : null,
    h("p", {}, h("a", { href: `#history?batch=${encodeURIComponent(id)}` }, "Open this batch in History")),
  ].filter(Boolean));
}
