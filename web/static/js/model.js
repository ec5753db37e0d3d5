// What the UI knows about jobs: statuses, stages, class colours, and a normaliser that
// accepts the API's job object and fills the few fields the views rely on.

export const CLASS_NAMES = ["Animation", "Flat_Content", "Gaming", "Natural_Content"];

export const ACTIVE = new Set(["queued", "downloading", "extracting", "classifying"]);
export const TERMINAL = new Set(["done", "failed", "cancelled"]);

export const STAGE_TEXT = {
  queued: "Waiting in the queue",
  downloading: "Downloading the video",
  extracting: "Sampling frames and extracting features",
  classifying: "Running the ensemble",
  done: "Finished",
  failed: "Failed",
  cancelled: "Cancelled",
};

export function classIndex(name) {
  const i = CLASS_NAMES.indexOf(name);
  return i < 0 ? CLASS_NAMES.length : i;
}

// The job's error as {code, message} whichever shape the server used.
export function jobError(job) {
  if (job.error && typeof job.error === "object") return job.error;
  if (job.error_code || job.error_message || typeof job.error === "string") {
    return { code: job.error_code || "", message: job.error_message || job.error || "" };
  }
  return null;
}

// Short name for where the video came from.
export function sourceName(job) {
  const src = job.source_name || job.filename || job.source || job.url || job.video || "";
  if (job.source_kind === "url" || /^https?:\/\//.test(src)) {
    try {
      const u = new URL(src);
      const last = u.pathname.split("/").filter(Boolean).pop();
      return last ? `${decodeURIComponent(last)} (${u.host})` : u.host;
    } catch (_) { return src; }
  }
  return src || `Job ${job.id}`;
}

export function sourceKindText(kind) {
  return { url: "Link", upload: "Upload", file: "Upload", "test-set": "Test set", video: "Test set", name: "Test set" }[kind] || kind || "";
}

// Thumbnail URLs: the server gives a list of URLs, a list of indices, or a count.
export function thumbnailUrls(job) {
  const t = job.thumbnails;
  const base = `/api/jobs/${encodeURIComponent(job.id)}/thumbnails/`;
  if (Array.isArray(t)) {
    return t.map((x, i) => (typeof x === "string" ? x : (x && x.url) || `${base}${typeof x === "number" ? x : i}.jpg`));
  }
  if (typeof t === "number") return Array.from({ length: t }, (_, i) => `${base}${i}.jpg`);
  return [];
}

export function progressOf(job) {
  if (job.status === "done") return 100;
  const p = Number(job.progress);
  return Number.isFinite(p) ? Math.max(0, Math.min(100, p)) : 0;
}

// Ensemble members as [{name, probabilities}] from [{class: p}] or [{probabilities: {...}}].
export function members(job) {
  const list = Array.isArray(job.members) ? job.members : [];
  return list.map((m, i) => {
    const probs = m && m.probabilities ? m.probabilities : m;
    return { name: (m && (m.name || m.model)) || `Model ${i + 1}`, probabilities: probs || {} };
  });
}

export function sortedClasses(probabilities) {
  const names = Object.keys(probabilities || {});
  const all = names.length ? names : CLASS_NAMES;
  return all.slice().sort((a, b) => classIndex(a) - classIndex(b));
}
