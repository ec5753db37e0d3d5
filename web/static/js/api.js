// Thin client for the vidclass JSON API. Every failure becomes an ApiError carrying the
// server's stable {code, message} so the UI can show the message and tests can match the code.

export class ApiError extends Error {
  constructor(code, message, status, details) {
    super(message);
    this.code = code;
    this.status = status;
    this.details = details || {};   // the whole error body (e.g. invalid_lines of a batch)
  }
}

async function errorFromResponse(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText || "error"}`;
  let err = null;
  try {
    const body = await response.json();
    err = body && (body.error && typeof body.error === "object" ? body.error : body);
    if (err && err.code) code = err.code;
    if (err && err.message) message = err.message;
  } catch (_) { /* not JSON: keep the HTTP status text */ }
  return new ApiError(code, message, response.status, err);
}

// The API key (when the server asks for one) lives in this browser's localStorage and goes out as
// `Authorization: Bearer` on every request. A 401 asking for a key fires "vidclass:need-key".
const KEY_STORAGE = "vidclass.apiKey";

export function apiKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch (_) { return ""; }
}

export function setApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
  } catch (_) { /* storage disabled: the key lasts until reload */ }
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function noteAuthError(err) {
  if (err.status === 401) window.dispatchEvent(new CustomEvent("vidclass:need-key", { detail: err }));
  return err;
}

export async function request(method, path, body) {
  const init = { method, headers: { Accept: "application/json", ...authHeaders() }, credentials: "same-origin" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError("network_error", "Cannot reach the vidclass server.", 0);
  }
  if (!response.ok) throw noteAuthError(await errorFromResponse(response));
  if (response.status === 204) return null;
  return response.json();
}

export const getJSON = (path) => request("GET", path);
export const postJSON = (path, body) => request("POST", path, body === undefined ? {} : body);

// Multipart upload through XMLHttpRequest, because fetch() cannot report upload progress.
// Returns {promise, abort}; onProgress(fraction 0..1 or null when the size is unknown).
export function uploadForm(path, formData, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.responseType = "text";
    xhr.upload.onprogress = (ev) => onProgress && onProgress(ev.lengthComputable ? ev.loaded / ev.total : null);
    xhr.upload.onload = () => onProgress && onProgress(1);
    xhr.onerror = () => reject(new ApiError("network_error", "Upload failed: cannot reach the server.", 0));
    xhr.onabort = () => reject(new ApiError("aborted", "Upload stopped.", 0));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* handled below */ }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
        return;
      }
      const err = body && (body.error && typeof body.error === "object" ? body.error : body);
      reject(noteAuthError(new ApiError((err && err.code) || `http_${xhr.status}`,
        (err && err.message) || `Upload failed (${xhr.status}).`, xhr.status, err)));
    };
    xhr.send(formData);
  });
  return { promise, abort: () => xhr.abort() };
}

// Query string from an object, leaving out empty values.
export function query(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    qs.set(k, String(v));
  }
  const s = qs.toString();
  return s ? `?${s}` : "";
}

// An image behind the API: with a key (the server then guards reads) <img src> cannot send it,
// so fetch the bytes with the key and show them from a blob URL; onload(url) gets that URL.
export function keyedImage(img, path, onload) {
  if (!apiKey()) {
    img.src = path;
    if (onload) onload(path);
    return img;
  }
  fetch(path, { headers: authHeaders(), credentials: "same-origin" })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(String(r.status)))))
    .then((blob) => {
      const url = URL.createObjectURL(blob);
      img.src = url;
      if (onload) onload(url);
    })
    .catch(() => { img.hidden = true; });
  return img;
}

// A download that needs the key: links cannot send headers, so fetch it and save the blob.
export async function downloadWithKey(path, filename) {
  const response = await fetch(path, { headers: authHeaders(), credentials: "same-origin" });
  if (!response.ok) throw noteAuthError(await errorFromResponse(response));
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
