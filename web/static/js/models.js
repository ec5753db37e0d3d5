// Models view (#models): model versions from GET /api/models, retraining from the corrections users
// made (POST /api/models), each candidate beside the model it would replace (corpus family folds,
// corrections held out by source group, jobs that flip), promote and roll back. Polls while a
// version trains.
import { getJSON, postJSON } from "./api.js";
import { h, $, announce, pct, formatDate } from "./dom.js";

const POLL_MS = 2000;

function side(m, key) {
  const v = m && m[key];
  return v == null ? "–" : pct(v, 1);
}

export class ModelsView {
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.timer = null;
    this.visible = false;
    $("#models-retrain").addEventListener("click", () => this.act(() => postJSON("/api/models", {}),
      (m) => `Retraining: version ${m.id} is training on the workers.`));
    $("#models-rollback").addEventListener("click", () => this.act(() => postJSON("/api/models/rollback"),
      (m) => `Rolled back: version ${m.id} is active again.`));
  }

  show() {
    this.visible = true;
    announce("Models view.");
    this.load();
  }

  hide() {
    this.visible = false;
    clearTimeout(this.timer);
  }

  async act(call, said) {
    try {
      const m = await call();
      this.onMessage(said(m));
    } catch (e) {
      this.onMessage(e.message, "error");
    }
    this.load();
  }

  async load() {
    clearTimeout(this.timer);
    let d;
    try {
      d = await getJSON("/api/models");
    } catch (e) {
      $("#models-list").replaceChildren(h("p", { class: "empty" }, `Could not load the models: ${e.message}`));
      return;
    }
    if (!this.visible) return;
    this.render(d);
    if (d.models.some((m) => m.status === "training")) this.timer = setTimeout(() => this.load(), POLL_MS);
  }

  render(d) {
    const active = d.models.find((m) => m.id === d.active_id);
    const training = d.models.some((m) => m.status === "training");
    $("#models-summary").textContent = (active ? `Active: version ${active.id} (${active.digest}). ` : "No active model yet. ")
      + `${d.corrections} correction${d.corrections === 1 ? "" : "s"} a retrain would learn from.`;
    $("#models-retrain").disabled = training || !d.corrections;
    $("#models-rollback").disabled = !(active && active.replaced_id);
    if (!d.models.length) {
      $("#models-list").replaceChildren(h("p", { class: "empty" }, "No model version recorded yet: a classification worker records the shipped model when it starts."));
      return;
    }
    const rows = d.models.map((m) => {
      const gate = m.gate || {};
      const held = m.corrections_held_out || {};
      const status = m.status === "training" ? `training ${m.progress}%` : m.status;
      const actions = [];
      if (m.status === "candidate") {
        const label = gate.passes === false ? "Promote anyway" : "Promote";
        actions.push(h("button", { type: "button", class: "small", dataset: { promote: m.id },
          onclick: () => {
            if (gate.passes === false && !window.confirm(`Version ${m.id} scores worse than the active model on the corpus folds. Promote it anyway?`)) return;
            this.act(() => postJSON(`/api/models/${m.id}/promote`, { force: gate.passes === false }),
              (x) => `Version ${x.id} is active; workers switch before their next job.`);
          } }, label));
      }
      return h("tr", { dataset: { model: m.id, status: m.status } },
        h("td", { class: "mono" }, `${m.id}`, m.note ? h("span", { class: "hint" }, ` ${m.note}`) : null),
        h("td", {}, h("span", { class: `badge model-${m.status}` }, status), m.error ? h("div", { class: "hint" }, m.error) : null),
        h("td", { class: "mono" }, m.digest || "–"),
        h("td", { class: "nowrap" }, formatDate(m.created_at)),
        h("td", { class: "num mono" }, m.training && m.training.corrections != null
          ? `${m.training.corrections} (${m.training.correction_groups} group${m.training.correction_groups === 1 ? "" : "s"})` : "–"),
        h("td", { class: "num mono", dataset: { metric: "folds" } }, gate.candidate_accuracy != null
          ? `${pct(gate.candidate_accuracy, 1)} vs ${pct(gate.active_accuracy, 1)}` : "–"),
        h("td", { class: "num mono" }, m.corrections_held_out ? `${side(held, "candidate")} vs ${side(held, "active")}` : "–"),
        h("td", { class: "num mono" }, m.flips ? `+${m.flips.to_right || 0} / −${m.flips.to_wrong || 0}` : "–"),
        h("td", {}, actions));
    });
    $("#models-list").replaceChildren(h("div", { class: "table-scroll" }, h("table", { class: "history-table" },
      h("caption", { class: "visually-hidden" }, "Model versions"),
      h("thead", {}, h("tr", {}, ["Version", "Status", "Digest", "Created", "Corrections", "Folds", "Held out",
        "Flips", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows))),
    h("p", { class: "hint" }, "Folds: accuracy on the corpus's family folds (sources the model never saw); held out: "
      + "on corrections held out by source group; each beside the parent, the model it would replace. Flips: "
      + "corrected jobs that go from wrong to right (+) and from right to wrong (−)."));
  }
}
