// History view: filters, sortable and paginated table of jobs, CSV/JSON export links that carry
// the same filters, a chart of labels per day or per batch, and a detail card for one job.
import { getJSON, postJSON, query } from "./api.js";
import { h, $, $$, announce, pct, formatDate, humanLabel, localDay, parseDate } from "./dom.js";
import { CLASS_NAMES, sourceName } from "./model.js";
import { renderJob } from "./jobcard.js";
import { jobsOf, setTrueLabel } from "./live.js";
import { drawChart } from "./chart.js";

const FILTERS = ["q", "status", "label", "batch", "corrected", "created_from", "created_to", "min_confidence", "uncertain", "per_page"];
const DEFAULTS = { sort: "created_at", order: "desc", page: 1, per_page: 20, min_confidence: 0 };
const CHART_PAGE = 500;     // jobs per request when collecting chart data (the API's maximum)
const CHART_MAX_PAGES = 4;  // at most 2000 jobs in the chart

export class History {
  constructor(showMessage) {
    this.showMessage = showMessage;
    this.state = Object.assign({}, DEFAULTS);
    this.chartMode = "day";
    this.form = $("#history-filters");
    this.body = $("#history-body");
    this.loadSeq = 0;
    this.setup();
  }

  setup() {
    const labelSelect = $("#f-label");
    for (const c of CLASS_NAMES) labelSelect.append(h("option", { value: c }, humanLabel(c)));

    const conf = $("#f-minconf");
    const confOut = $("#f-minconf-out");
    conf.addEventListener("input", () => { confOut.textContent = `${conf.value}%`; });

    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.readForm();
      this.state.page = 1;
      this.apply();
    });
    this.form.addEventListener("reset", () => {
      setTimeout(() => {
        confOut.textContent = "0%";
        this.state = Object.assign({}, DEFAULTS);
        this.writeForm();
        this.apply();
      });
    });
    // Selects apply immediately; text fields on submit (Enter) so typing does not spam the API.
    for (const id of ["#f-status", "#f-label", "#f-corrected", "#f-perpage", "#f-from", "#f-to", "#f-uncertain"]) {
      $(id).addEventListener("change", () => { this.readForm(); this.state.page = 1; this.apply(); });
    }
    conf.addEventListener("change", () => { this.readForm(); this.state.page = 1; this.apply(); });

    for (const th of $$("#history-table th[data-sort]")) {
      th.querySelector("button").addEventListener("click", () => {
        const key = th.dataset.sort;
        if (this.state.sort === key) this.state.order = this.state.order === "asc" ? "desc" : "asc";
        else { this.state.sort = key; this.state.order = key === "created_at" || key === "confidence" ? "desc" : "asc"; }
        this.state.page = 1;
        this.apply();
      });
    }
    // The review queue: the results most worth a correction first (sort=review, highest first).
    $("#review-first").addEventListener("click", () => {
      this.state.sort = "review";
      this.state.order = "desc";
      this.state.page = 1;
      this.apply();
    });
    $("#page-prev").addEventListener("click", () => { if (this.state.page > 1) { this.state.page--; this.apply(); } });
    $("#page-next").addEventListener("click", () => { this.state.page++; this.apply(); });

    for (const b of $$(".chart-modes button")) {
      b.addEventListener("click", () => {
        this.chartMode = b.dataset.chart;
        for (const o of $$(".chart-modes button")) o.setAttribute("aria-pressed", String(o === b));
        this.loadChart();
      });
    }
    $("#detail-close").addEventListener("click", () => this.closeDetail());
    // The chart is drawn at the container's pixel width so its text stays legible on phones.
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => this.redrawChart(), 150);
    });
  }

  readForm() {
    const data = new FormData(this.form);
    for (const k of FILTERS) {
      const v = data.get(k);
      this.state[k] = v === null ? "" : String(v).trim();
    }
    this.state.min_confidence = Number(this.state.min_confidence || 0);
    this.state.per_page = Number(this.state.per_page || DEFAULTS.per_page);
  }

  writeForm() {
    for (const k of FILTERS) {
      const el = this.form.elements.namedItem(k);
      if (el) el.value = this.state[k] ?? "";
    }
    $("#f-minconf-out").textContent = `${Number(this.state.min_confidence || 0)}%`;
  }

  // "#history?batch=3&status=done" -> filters (used by the batch cards' links).
  fromHash(hash) {
    const i = hash.indexOf("?");
    this.state = Object.assign({}, DEFAULTS);
    if (i >= 0) {
      const qs = new URLSearchParams(hash.slice(i + 1));
      for (const [k, v] of qs) if (k in this.state || FILTERS.includes(k)) this.state[k] = v;
      this.state.page = Number(this.state.page) || 1;
      this.state.per_page = Number(this.state.per_page) || DEFAULTS.per_page;
      this.state.min_confidence = Number(this.state.min_confidence) || 0;
    }
    this.writeForm();
  }

  // Filters as the API expects them (confidence as a fraction).
  filterParams() {
    const st = this.state;
    return {
      q: st.q, status: st.status, label: st.label, batch: st.batch,
      corrected: st.corrected === "yes" ? 1 : "", disagrees: st.corrected === "wrong" ? 1 : "",
      created_from: st.created_from, created_to: st.created_to, uncertain: st.uncertain,
      min_confidence: st.min_confidence ? (Number(st.min_confidence) / 100).toFixed(2) : "",
    };
  }

  hashFor() {
    const st = this.state;
    const params = Object.assign(this.filterParams(), {
      corrected: st.corrected, disagrees: "",
      min_confidence: st.min_confidence || "",
      sort: st.sort !== DEFAULTS.sort ? st.sort : "",
      order: st.order !== DEFAULTS.order ? st.order : "",
      page: st.page > 1 ? st.page : "",
      per_page: st.per_page !== DEFAULTS.per_page ? st.per_page : "",
    });
    return `#history${query(params)}`;
  }

  apply() {
    const hash = this.hashFor();
    this.lastHash = hash;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    this.load();
    this.loadChart();
  }

  updateExportLinks() {
    const base = Object.assign(this.filterParams(), { sort: this.state.sort, order: this.state.order });
    $("#export-csv").href = `/api/jobs${query(Object.assign({}, base, { format: "csv" }))}`;
    $("#export-json").href = `/api/jobs${query(Object.assign({}, base, { format: "json", download: 1 }))}`;
  }

  updateSortHeaders() {
    for (const th of $$("#history-table th[data-sort]")) {
      if (th.dataset.sort === this.state.sort) th.setAttribute("aria-sort", this.state.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  async load() {
    const seq = ++this.loadSeq;
    this.updateExportLinks();
    this.updateSortHeaders();
    const params = Object.assign(this.filterParams(), {
      sort: this.state.sort, order: this.state.order, page: this.state.page, per_page: this.state.per_page,
    });
    $("#history-table").setAttribute("aria-busy", "true");
    let page;
    try {
      page = await getJSON(`/api/jobs${query(params)}`);
    } catch (e) {
      if (seq !== this.loadSeq) return;
      $("#history-table").setAttribute("aria-busy", "false");
      this.body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty" }, `Could not load jobs: ${e.message}`)));
      return;
    }
    if (seq !== this.loadSeq) return;  // a newer request is on its way
    $("#history-table").setAttribute("aria-busy", "false");
    const jobs = jobsOf(page);
    const total = Number(page.total ?? jobs.length);
    const perPage = Number(page.per_page ?? this.state.per_page);
    const pages = Math.max(1, Number(page.pages ?? Math.ceil(total / perPage)));
    if (this.state.page > pages && total > 0) { this.state.page = pages; this.apply(); return; }

    this.body.replaceChildren(...(jobs.length ? jobs.map((j) => this.row(j))
      : [h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No jobs match these filters."))]));
    const first = total ? (this.state.page - 1) * perPage + 1 : 0;
    const last = Math.min(total, first + jobs.length - 1);
    $("#history-summary").textContent = total ? `Showing ${first}–${last} of ${total} jobs.` : "No jobs match.";
    $("#page-info").textContent = `Page ${this.state.page} of ${pages}`;
    $("#page-prev").disabled = this.state.page <= 1;
    $("#page-next").disabled = this.state.page >= pages;
  }

  row(job) {
    const err = job.error && job.error.message ? job.error.message : job.error_message;
    return h("tr", { dataset: { id: job.id, status: job.status } },
      h("td", { class: "c-created nowrap" }, formatDate(job.created_at)),
      h("td", { class: "c-source", title: job.source || "" }, sourceName(job)),
      h("td", { class: "c-status" }, h("span", { class: `badge status-${job.status}` }, job.status),
        err ? h("span", { class: "visually-hidden" }, `: ${err}`) : null),
      h("td", { class: "c-label" }, job.label ? h("span", { class: "label-chip small", dataset: { class: job.label } }, humanLabel(job.label)) : "–"),
      h("td", { class: "c-conf num mono" }, job.confidence != null ? pct(job.confidence, 1) : "–"),
      h("td", { class: "c-batch" }, job.batch_id != null
        ? h("a", { href: `#history?batch=${encodeURIComponent(job.batch_id)}`, title: `Batch ${job.batch_id}` },
          `#${String(job.batch_id).slice(0, 8)}`) : "–"),
      h("td", { class: "c-actions" }, h("button", { type: "button", class: "ghost small", "aria-label": `Details of ${sourceName(job)}`,
        onclick: () => this.openDetail(job.id) }, "Details")));
  }

  async openDetail(id) {
    const section = $("#history-detail");
    let job;
    try {
      job = await getJSON(`/api/jobs/${encodeURIComponent(id)}`);
    } catch (e) {
      this.showMessage(`Could not load job ${id}: ${e.message}`, "error");
      return;
    }
    // The detail card is a snapshot: after cancel/retry it is reloaded, and the table with it.
    const act = (verb) => async (j) => {
      try {
        const again = await postJSON(`/api/jobs/${encodeURIComponent(j.id)}/${verb}`);
        this.openDetail(again && again.id !== undefined ? again.id : j.id);
      } catch (e) {
        this.showMessage(`Could not ${verb} job ${j.id}: ${e.message}`, "error");
        this.openDetail(j.id);
      }
      this.load();
    };
    const handlers = {
      onCancel: act("cancel"), onRetry: act("retry"),
      onLabel: async (j, label) => {
        try {
          await setTrueLabel(j.id, label);
        } catch (e) {
          this.showMessage(`Could not save the label: ${e.message}`, "error");
        }
        this.openDetail(j.id);
        this.load();
      },
    };
    $("#detail-body").replaceChildren(renderJob(job, handlers));
    $("#detail-heading").textContent = `Job #${job.id}`;
    section.hidden = false;
    section.focus();
    section.scrollIntoView({ block: "nearest" });
  }

  closeDetail() {
    $("#history-detail").hidden = true;
    const btn = this.body.querySelector("button");
    if (btn) btn.focus();
  }

  // ---- chart -------------------------------------------------------------------------------
  async loadChart() {
    const seq = (this.chartSeq = (this.chartSeq || 0) + 1);
    const filters = this.filterParams();
    if (!filters.status) filters.status = "done";
    const jobs = [];
    try {
      for (let page = 1; page <= CHART_MAX_PAGES; page++) {
        const res = await getJSON(`/api/jobs${query(Object.assign({}, filters,
          { sort: "created_at", order: "asc", page, per_page: CHART_PAGE }))}`);
        const list = jobsOf(res);
        jobs.push(...list);
        const total = Number(res.total ?? 0);
        if (list.length < CHART_PAGE || jobs.length >= total) break;
      }
    } catch (e) {
      if (seq === this.chartSeq) $("#chart").replaceChildren(h("p", { class: "empty" }, `Could not load the chart: ${e.message}`));
      return;
    }
    if (seq !== this.chartSeq) return;
    const labelled = jobs.filter((j) => j.label);
    let mode = this.chartMode;
    // "Over time" uses hours when everything happened within two days (a new install), else days.
    if (mode === "day" && new Set(labelled.map((j) => localDay(j.created_at))).size <= 2) mode = "hour";
    this.chartGroups = groupJobs(labelled, mode);
    $("#chart-caption").textContent = mode === "batch" ? "Labels per batch"
      : `Labels over time (per ${mode === "hour" ? "hour" : "day"})`;
    this.redrawChart();
  }

  redrawChart() {
    if (this.chartGroups) drawChart($("#chart"), this.chartGroups, CLASS_NAMES.slice());
  }

  show() {
    this.fromHash(location.hash);
    this.lastHash = location.hash;
    this.load();
    this.loadChart();
    announce("History view.");
  }
}

export function groupJobs(jobs, mode) {
  const groups = new Map();
  for (const j of jobs) {
    let key;
    let label;
    let short;
    if (mode === "batch") {
      key = j.batch_id != null ? `b${j.batch_id}` : "single";
      label = j.batch_id != null ? `Batch #${j.batch_id}` : "Single jobs";
      short = j.batch_id != null ? `#${j.batch_id}` : "single";
    } else if (mode === "hour") {
      const d = parseDate(j.created_at);
      const hour = d ? String(d.getHours()).padStart(2, "0") : "??";
      key = `${localDay(j.created_at)} ${hour}`;
      label = `${localDay(j.created_at)} ${hour}:00`;
      short = `${hour}:00`;
    } else {
      key = localDay(j.created_at) || "unknown";
      label = key;
      short = key.slice(5);
    }
    if (!groups.has(key)) groups.set(key, { key, label, short, counts: {} });
    const g = groups.get(key);
    g.counts[j.label] = (g.counts[j.label] || 0) + 1;
  }
  const list = Array.from(groups.values());
  if (mode === "day") list.sort((a, b) => a.key.localeCompare(b.key));
  return list;
}
