// Batches view (#batches): every batch on the server, newest first, each with its progress,
// counts per status and label, its jobs, and Cancel / Retry failed buttons. Polls while shown
// and any batch is still running.
import { getJSON, query } from "./api.js";
import { h, $, announce } from "./dom.js";
import { jobsOf, renderBatch } from "./live.js";

const PER_PAGE = 20;
const POLL_MS = 2000;

export class BatchesView {
  constructor(showMessage, actions) {
    this.showMessage = showMessage;
    this.actions = actions;
    this.list = $("#batch-list");
    this.entries = new Map();
    this.timer = null;
    this.visible = false;
    this.seq = 0;
  }

  show() {
    this.visible = true;
    announce("Batches view.");
    this.load();
  }

  hide() {
    this.visible = false;
    clearTimeout(this.timer);
    this.timer = null;
  }

  async load() {
    const seq = ++this.seq;
    clearTimeout(this.timer);
    let page;
    try {
      page = await getJSON(`/api/batches${query({ per_page: PER_PAGE })}`);
      await Promise.all(page.batches.map(async (b) => {
        const known = this.entries.get(b.id);
        // A finished batch's jobs do not change: fetch them once.
        if (known && known.jobs && known.batch.done && b.done) { b.jobs = known.jobs; return; }
        b.jobs = jobsOf(await getJSON(`/api/jobs${query({ batch: b.id, per_page: 100, sort: "created_at", order: "asc" })}`));
      }));
    } catch (e) {
      if (seq === this.seq) this.list.replaceChildren(h("p", { class: "empty" }, `Could not load batches: ${e.message}`));
      return;
    }
    if (seq !== this.seq || !this.visible) return;
    $("#batches-summary").textContent = page.total
      ? `${page.total} batch${page.total === 1 ? "" : "es"}${page.total > PER_PAGE ? `; the newest ${PER_PAGE} are shown` : ""}.`
      : "No batches yet. Submit a bulk list from the Classify view.";
    const els = page.batches.map((b) => {
      let entry = this.entries.get(b.id);
      if (!entry) {
        entry = { el: h("article", { class: "batch", "aria-labelledby": `batch-${b.id}-title`, dataset: { id: b.id } }) };
        this.entries.set(b.id, entry);
      }
      entry.batch = b;
      entry.jobs = b.jobs;
      renderBatch(entry, this.actions(() => this.load()));
      return entry.el;
    });
    this.list.replaceChildren(...els);
    if (page.batches.some((b) => !b.done)) this.timer = setTimeout(() => this.load(), POLL_MS);
  }
}
