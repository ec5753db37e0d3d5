// Entry point: wires the views together. Five views, chosen by the URL hash (#classify, #batches,
// #history, #dashboard, #models),
// so links such as "#history?batch=3" open History with a filter and Back works.
import { getJSON, apiKey, setApiKey, downloadWithKey } from "./api.js";
import { $, $$ } from "./dom.js";
import { LiveList, batchActions } from "./live.js";
import { BatchesView } from "./batches.js";
import { DashboardView } from "./dashboard.js";
import { ModelsView } from "./models.js";
import { setupSubmit } from "./submit.js";
import { History } from "./history.js";

function showMessage(text, kind = "info") {
  const el = $("#message");
  if (!text) { el.hidden = true; $("#message-text").textContent = ""; return; }
  el.dataset.kind = kind;
  $("#message-text").textContent = text;
  el.hidden = false;
}

function currentView() {
  if (location.hash.startsWith("#history")) return "history";
  if (location.hash.startsWith("#dashboard")) return "dashboard";
  if (location.hash.startsWith("#models")) return "models";
  return location.hash.startsWith("#batches") ? "batches" : "classify";
}

function setupViews(history, batches, dashboard, models) {
  const tabs = $$(".view-tabs [role=tab]");
  const show = (view, focusTab) => {
    for (const t of tabs) {
      const on = t.dataset.view === view;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      if (on && focusTab) t.focus();
    }
    // A message belongs to the view it came from (e.g. "Batch ... submitted; 1 line was
    // rejected"): switching views clears it.
    if (document.body.dataset.view && document.body.dataset.view !== view) showMessage(null);
    document.body.dataset.view = view;
    if (view === "history") history.show();
    if (view === "batches") batches.show(); else batches.hide();
    if (view === "dashboard") dashboard.show(); else dashboard.hide();
    if (view === "models") models.show(); else models.hide();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => {
      // History comes back with the filters it had (kept in its hash).
      const target = tab.dataset.view === "history" ? history.lastHash || "#history" : `#${tab.dataset.view}`;
      if (location.hash !== target && !(target === "#classify" && currentView() === "classify")) location.hash = target;
      else show(tab.dataset.view, true);
    });
    tab.addEventListener("keydown", (ev) => {
      if (!["ArrowLeft", "ArrowRight", "Home", "End"].includes(ev.key)) return;
      ev.preventDefault();
      const next = ev.key === "Home" ? tabs[0] : ev.key === "End" ? tabs[tabs.length - 1]
        : tabs[(i + (ev.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      next.focus();
      next.click();
    });
  });
  window.addEventListener("hashchange", () => show(currentView(), false));
  show(currentView(), false);
}

// The key input shows when the server needs a key (health says so, or a request got a 401).
function setupKey() {
  const form = $("#key-form");
  const change = $("#key-change");
  const input = $("#key-input");
  const ask = (why) => {
    form.hidden = false;
    change.hidden = true;
    if (why) showMessage(why, "error");
    input.focus();
  };
  const settle = () => { form.hidden = true; change.hidden = !apiKey(); };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    setApiKey(input.value.trim());
    input.value = "";
    settle();
    showMessage(apiKey() ? "API key saved in this browser. Try again." : "API key removed.");
  });
  change.addEventListener("click", () => ask(null));
  window.addEventListener("vidclass:need-key", (ev) => {
    const err = ev.detail || {};
    ask(err.code === "invalid_api_key" ? "That API key was refused. Enter a valid key."
      : "This server needs an API key for that. Enter it above.");
  });
  // Export links cannot carry the key: with one set, download through fetch instead.
  for (const id of ["#export-csv", "#export-json"]) {
    $(id).addEventListener("click", (ev) => {
      if (!apiKey()) return;
      ev.preventDefault();
      const link = ev.currentTarget;
      downloadWithKey(link.getAttribute("href"), link.getAttribute("download") || "vidclass-jobs")
        .catch((e) => showMessage(e.message, "error"));
    });
  }
  settle();
  return { needed: (required) => { if (required && !apiKey()) ask(null); } };
}

let keyUi = null;

async function checkHealth() {
  const el = $("#health");
  const text = el.querySelector(".health-text");
  try {
    const h = await getJSON("/api/health");
    const status = String(h.status || "ok");
    const ok = ["ok", "healthy", "ready"].includes(status);
    el.dataset.state = ok ? "ok" : "degraded";
    const workers = Array.isArray(h.workers) ? h.workers.length : h.workers;
    const parts = [ok ? "Service ready" : `Service ${status}`];
    if (typeof workers === "number") parts.push(`${workers} worker${workers === 1 ? "" : "s"}`);
    if (h.model && h.model.model_version) el.title = `Model ${h.model.model_version}`;
    if (keyUi && h.auth) keyUi.needed(h.auth.keys_required);
    text.textContent = parts.join(" · ");
  } catch (e) {
    // 503 carries the same health body: say which part is down (database or queue).
    const d = e.details || {};
    const broken = [d.database && d.database.ok === false ? "database" : null,
      d.queue && d.queue.ok === false ? "queue" : null].filter(Boolean);
    el.dataset.state = e.code === "network_error" ? "down" : "degraded";
    el.title = [d.database && d.database.error, d.queue && d.queue.error].filter(Boolean).join("; ");
    text.textContent = e.code === "network_error" ? "Server unreachable"
      : broken.length ? `Service degraded: ${broken.join(" and ")} unavailable` : `Service problem: ${e.message}`;
  }
}

function main() {
  const live = new LiveList({
    jobsEl: $("#jobs"), batchesEl: $("#batches"), emptyEl: $("#jobs-empty"), onMessage: showMessage,
  });
  keyUi = setupKey();
  setupSubmit(live, showMessage);
  const history = new History(showMessage);
  const batches = new BatchesView(showMessage, (refresh) => batchActions(showMessage, refresh));
  setupViews(history, batches, new DashboardView(), new ModelsView(showMessage));
  $("#clear-finished").addEventListener("click", () => live.clearFinished());
  $("#message-close").addEventListener("click", () => showMessage(null));
  live.restore();
  checkHealth();
  setInterval(checkHealth, 30000);
  document.body.dataset.ready = "true";
}

main();
