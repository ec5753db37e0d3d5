// Small DOM and formatting helpers. Elements are built with h(), never from HTML strings,
// so text from the server (URLs, file names, error messages) can never inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    // Through CSSOM, not a style attribute: the page's CSP forbids inline style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  appendAll(el, children);
  return el;
}

function appendAll(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) appendAll(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// SVG elements need their namespace.
export function s(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// Politely tell screen-reader users about a change (one shared live region).
let lastAnnouncement = "";
export function announce(text) {
  const el = document.getElementById("announcer");
  if (!el || text === lastAnnouncement) return;
  lastAnnouncement = text;
  el.textContent = text;
}

export function pct(x, digits = 0) {
  if (x === undefined || x === null || Number.isNaN(Number(x))) return "–";
  return `${(Number(x) * 100).toFixed(digits)}%`;
}

export function seconds(x) {
  if (x === undefined || x === null || Number.isNaN(Number(x))) return "–";
  const v = Number(x);
  if (v < 1) return `${Math.round(v * 1000)} ms`;
  if (v < 120) return `${v.toFixed(v < 10 ? 2 : 1)} s`;
  return `${Math.floor(v / 60)} min ${Math.round(v % 60)} s`;
}

export function parseDate(value) {
  if (!value) return null;
  // Server timestamps without a zone are UTC.
  const text = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`;
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function formatDate(value) {
  const d = parseDate(value);
  if (!d) return "–";
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit" });
}

export function localDay(value) {
  const d = parseDate(value);
  if (!d) return null;
  const m = String(d.getMonth() + 1).padStart(2, "0");
  const day = String(d.getDate()).padStart(2, "0");
  return `${d.getFullYear()}-${m}-${day}`;
}

export function humanLabel(label) {
  return label ? String(label).replace(/_/g, " ") : "–";
}

export function humanBytes(n) {
  if (!n && n !== 0) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}
