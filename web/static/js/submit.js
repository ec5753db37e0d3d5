// The four ways to submit: a link, a file (uploaded with progress), a test-set video picked
// from a searchable list, or a bulk list of links (pasted or uploaded as a text file).
import { getJSON, postJSON, uploadForm, ApiError } from "./api.js";
import { h, $, $$, announce, humanBytes, humanLabel } from "./dom.js";
import { classIndex } from "./model.js";

export function setupSubmit(live, showMessage) {
  setupSourceTabs();
  setupUrl(live, showMessage);
  setupFile(live, showMessage);
  setupVideos(live, showMessage);
  setupBulk(live, showMessage);
}

// ---- source tabs (WAI-ARIA tabs pattern: arrows move, Enter/Space or click selects) ----------
function setupSourceTabs() {
  const tabs = $$(".source-tabs [role=tab]");
  const select = (tab, focus) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab, true));
    tab.addEventListener("keydown", (ev) => {
      const k = ev.key;
      let next = null;
      if (k === "ArrowRight" || k === "ArrowDown") next = tabs[(i + 1) % tabs.length];
      else if (k === "ArrowLeft" || k === "ArrowUp") next = tabs[(i - 1 + tabs.length) % tabs.length];
      else if (k === "Home") next = tabs[0];
      else if (k === "End") next = tabs[tabs.length - 1];
      if (next) { ev.preventDefault(); select(next, true); }
    });
  });
}

function busy(form, on) {
  for (const b of form.querySelectorAll("button[type=submit]")) b.disabled = on;
  form.setAttribute("aria-busy", String(on));
}

function errorText(e) {
  return e instanceof ApiError ? `${e.message}${e.code ? ` (${e.code})` : ""}` : String(e.message || e);
}

// ---- link ------------------------------------------------------------------------------------
function setupUrl(live, showMessage) {
  const form = $("#form-url");
  const input = $("#url-input");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const url = input.value.trim();
    if (!url) { showMessage("Paste a video link first.", "error"); input.focus(); return; }
    if (!/^https?:\/\//i.test(url)) { showMessage("The link must start with http:// or https://.", "error"); input.focus(); return; }
    busy(form, true);
    try {
      live.addJob(await postJSON("/api/jobs", { url }));
      showMessage(null);
      input.value = "";
    } catch (e) {
      showMessage(`Could not submit the link: ${errorText(e)}`, "error");
      input.focus();
    } finally {
      busy(form, false);
    }
  });
}

// ---- file upload -----------------------------------------------------------------------------
function setupFile(live, showMessage) {
  const form = $("#form-file");
  const input = $("#file-input");
  const zone = $("#drop-zone");
  const chosen = $("#file-chosen");
  const status = $("#upload-status");
  const bar = $("#upload-progress");
  const percent = $("#upload-percent");
  const label = $("#upload-label");
  const abortButton = $("#upload-abort");
  let dropped = null;
  let current = null;

  const file = () => dropped || (input.files && input.files[0]) || null;
  const showChosen = () => {
    const f = file();
    chosen.textContent = f ? `${f.name} — ${humanBytes(f.size)}` : "No file chosen.";
    zone.classList.toggle("has-file", Boolean(f));
  };
  input.addEventListener("change", () => { dropped = null; showChosen(); });

  for (const evName of ["dragenter", "dragover"]) {
    zone.addEventListener(evName, (ev) => { ev.preventDefault(); zone.classList.add("dragging"); });
  }
  for (const evName of ["dragleave", "dragend"]) {
    zone.addEventListener(evName, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("dragging");
    const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (f) { dropped = f; showChosen(); $("#upload-button").focus(); }
  });

  const setProgress = (fraction) => {
    if (fraction === null) { bar.removeAttribute("value"); percent.textContent = "…"; return; }
    const p = Math.round(fraction * 100);
    bar.value = p;
    percent.textContent = `${p}%`;
    if (p === 100) label.textContent = "Uploaded; queuing the job…";
  };

  abortButton.addEventListener("click", () => current && current.abort());

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = file();
    if (!f) { showMessage("Choose or drop a video file first.", "error"); input.focus(); return; }
    const data = new FormData();
    data.append("file", f, f.name);
    busy(form, true);
    status.hidden = false;
    abortButton.hidden = false;
    label.textContent = `Uploading ${f.name}…`;
    setProgress(0);
    announce(`Uploading ${f.name}.`);
    current = uploadForm("/api/jobs", data, setProgress);
    try {
      live.addJob(await current.promise);
      showMessage(null);
      label.textContent = `Uploaded ${f.name}.`;
      dropped = null;
      input.value = "";
      showChosen();
    } catch (e) {
      label.textContent = "Upload failed.";
      showMessage(e.code === "aborted" ? "Upload stopped." : `Could not upload the file: ${errorText(e)}`,
        e.code === "aborted" ? "info" : "error");
    } finally {
      current = null;
      abortButton.hidden = true;
      busy(form, false);
    }
  });
}

// ---- test-set videos -------------------------------------------------------------------------
// /api/videos lists names by category; accept {categories: {cat: [names]}}, {cat: [names]},
// or a list of {name, category, subcategory}.
export function normaliseVideos(payload) {
  const out = [];
  const push = (name, category, subcategory) => out.push({ name: String(name), category: category || "", subcategory: subcategory || "" });
  const body = payload && (payload.categories || payload.videos || payload.items || payload);
  if (Array.isArray(body)) {
    for (const v of body) {
      if (typeof v === "string") push(v, "");
      else if (v) push(v.name || v.filename, v.category || v.label, v.subcategory);
    }
  } else if (body && typeof body === "object") {
    for (const [category, list] of Object.entries(body)) {
      if (Array.isArray(list)) {
        for (const v of list) push(typeof v === "string" ? v : v.name || v.filename, category, v && v.subcategory);
      } else if (list && typeof list === "object") {
        // {category: {subcategory: [names]}}
        for (const [sub, names] of Object.entries(list)) {
          if (Array.isArray(names)) for (const n of names) push(typeof n === "string" ? n : n.name, category, sub);
        }
      }
    }
  }
  return out.sort((a, b) => classIndex(a.category) - classIndex(b.category) || a.name.localeCompare(b.name));
}

function setupVideos(live, showMessage) {
  const form = $("#form-video");
  const search = $("#video-search");
  const select = $("#video-select");
  const count = $("#video-count");
  let videos = [];
  let loaded = false;

  const render = () => {
    const terms = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const matches = videos.filter((v) => {
      const hay = `${v.name} ${v.category} ${v.subcategory}`.toLowerCase().replace(/_/g, " ");
      const hay2 = `${v.name} ${v.category} ${v.subcategory}`.toLowerCase();
      return terms.every((t) => hay.includes(t) || hay2.includes(t));
    });
    const previous = select.value;
    const groups = new Map();
    for (const v of matches) {
      const key = v.category || "Other";
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(v);
    }
    select.replaceChildren(...Array.from(groups, ([cat, list]) =>
      h("optgroup", { label: `${humanLabel(cat)} (${list.length})` },
        list.map((v) => h("option", { value: v.name, selected: v.name === previous },
          v.subcategory ? `${v.name} — ${humanLabel(v.subcategory)}` : v.name)))));
    if (!loaded) return;
    count.textContent = videos.length === 0
      ? "No test-set videos are installed on this server."
      : `${matches.length} of ${videos.length} videos match.`;
  };

  const load = async () => {
    try {
      videos = normaliseVideos(await getJSON("/api/videos"));
      loaded = true;
      render();
    } catch (e) {
      count.textContent = `Could not load the test-set list: ${errorText(e)}`;
    }
  };
  // Load when the tab is first opened (the list can be long), or at once if it is visible.
  $("#src-tab-video").addEventListener("click", () => { if (!loaded) load(); }, { once: true });
  $("#src-tab-video").addEventListener("focus", () => { if (!loaded) load(); }, { once: true });

  search.addEventListener("input", render);
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown" && select.options.length) {
      ev.preventDefault();
      if (select.selectedIndex < 0) select.selectedIndex = 0;
      select.focus();
    } else if (ev.key === "Enter") {
      ev.preventDefault();
      if (select.options.length === 1) select.selectedIndex = 0;
      if (select.value) form.requestSubmit();
    }
  });
  select.addEventListener("dblclick", () => select.value && form.requestSubmit());
  select.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); if (select.value) form.requestSubmit(); }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const video = select.value;
    if (!video) { showMessage("Pick a video from the list first.", "error"); search.focus(); return; }
    busy(form, true);
    try {
      live.addJob(await postJSON("/api/jobs", { video }));
      showMessage(null);
    } catch (e) {
      showMessage(`Could not submit ${video}: ${errorText(e)}`, "error");
    } finally {
      busy(form, false);
    }
  });
}

// ---- bulk list -------------------------------------------------------------------------------
function setupBulk(live, showMessage) {
  const form = $("#form-bulk");
  const text = $("#bulk-text");
  const fileInput = $("#bulk-file");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = fileInput.files && fileInput.files[0];
    // The raw text or file goes to the server, which parses both the same way (blank and #
    // lines skipped) and reports rejected lines by the numbers the user sees.
    if (!f && !text.value.trim()) { showMessage("Paste at least one link, or choose a text file.", "error"); text.focus(); return; }
    busy(form, true);
    try {
      let batch;
      if (f) {
        const data = new FormData();
        data.append("file", f, f.name);
        batch = await uploadForm("/api/batches", data, null).promise;
      } else {
        batch = await postJSON("/api/batches", { text: text.value });
      }
      live.addBatch(batch);
      const rejected = Number(batch.invalid_count ?? (batch.invalid_lines || []).length);
      showMessage(rejected ? `Batch #${batch.id} submitted; ${rejected} line(s) were rejected — see below.` : null,
        rejected ? "warning" : "info");
      text.value = "";
      fileInput.value = "";
    } catch (e) {
      const lines = (e.details && e.details.invalid_lines) || [];
      const shown = lines.slice(0, 5).map((l) => `line ${l.line}: ${l.message}`).join("; ");
      const more = lines.length > 5 ? ` (and ${lines.length - 5} more)` : "";
      showMessage(`Could not submit the list: ${errorText(e)}${shown ? ` — ${shown}${more}` : ""}`, "error");
    } finally {
      busy(form, false);
    }
  });
}
