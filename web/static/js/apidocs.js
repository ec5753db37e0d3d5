// /api/docs: the OpenAPI document of this server (/api/openapi.json) rendered for people.
// A small renderer of the parts the document uses: paths, parameters, bodies, responses, schemas.
import { getJSON } from "./api.js";
import { h, $ } from "./dom.js";

const METHODS = ["get", "post", "put", "patch", "delete"];

function refName(ref) {
  return String(ref).split("/").pop();
}

// A schema in one line: "string (uri)", "array of Job", "Job", "one of: JobPage, JobExport".
function typeText(schema) {
  if (!schema) return "";
  if (schema.$ref) return h("a", { href: `#schema-${refName(schema.$ref)}` }, refName(schema.$ref));
  if (schema.oneOf) return h("span", {}, "one of: ", schema.oneOf.map((s, i) => [i ? ", " : "", typeText(s)]));
  if (schema.allOf) return h("span", {}, schema.allOf.map((s, i) => [i ? " & " : "", typeText(s)]));
  let text = schema.type || "object";
  if (schema.type === "array") return h("span", {}, "array of ", typeText(schema.items || {}));
  if (schema.format) text += ` (${schema.format})`;
  if (schema.enum) text += `: ${schema.enum.map((v) => (v === null ? "null" : v)).join(" | ")}`;
  const limits = [];
  if (schema.minimum !== undefined) limits.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) limits.push(`≤ ${schema.maximum}`);
  if (schema.maxLength !== undefined) limits.push(`at most ${schema.maxLength} characters`);
  if (limits.length) text += `, ${limits.join(", ")}`;
  if (schema.nullable) text += ", or null";
  return text;
}

function propertiesTable(schema) {
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const names = Object.keys(props);
  if (!names.length) return h("p", { class: "hint" }, typeText(schema));
  return h("table", { class: "doc-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Type"),
      h("th", { scope: "col" }, "Description"))),
    h("tbody", {}, names.map((name) => h("tr", {},
      h("td", { class: "mono" }, name, required.has(name) ? h("span", { class: "doc-required" }, " required") : null),
      h("td", {}, typeText(props[name])),
      h("td", {}, props[name].description || "")))));
}

function parametersTable(params) {
  return h("table", { class: "doc-table doc-params" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Parameter"), h("th", { scope: "col" }, "In"),
      h("th", { scope: "col" }, "Type"), h("th", { scope: "col" }, "Description"))),
    h("tbody", {}, params.map((p) => h("tr", {},
      h("td", { class: "mono" }, p.name, p.required ? h("span", { class: "doc-required" }, " required") : null),
      h("td", {}, p.in), h("td", {}, typeText(p.schema)), h("td", {}, p.description || "")))));
}

function body(requestBody) {
  return Object.entries(requestBody.content || {}).map(([type, media]) =>
    h("div", { class: "doc-body" }, h("h5", {}, h("code", {}, type)), propertiesTable(media.schema || {})));
}

function responses(list) {
  return h("dl", { class: "doc-responses" }, Object.entries(list).map(([code, r]) => [
    h("dt", { class: "mono" }, code),
    h("dd", {}, r.description || "",
      Object.entries(r.content || {}).map(([type, media]) =>
        h("span", { class: "hint" }, " — ", h("code", {}, type), media.schema ? [" ", typeText(media.schema)] : null)),
      r.headers ? h("span", { class: "hint" }, ` — headers: ${Object.keys(r.headers).join(", ")}`) : null),
  ]));
}

function operationId(method, path) {
  return `op-${method}-${path.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, "")}`;
}

function operation(method, path, op) {
  return h("article", { class: "card doc-op", id: operationId(method, path), dataset: { method, path } },
    h("h3", {}, h("span", { class: `doc-method doc-${method}` }, method.toUpperCase()), " ", h("code", {}, path)),
    h("p", {}, op.summary || ""),
    op.parameters && op.parameters.length ? [h("h4", {}, "Parameters"), parametersTable(op.parameters)] : null,
    op.requestBody ? [h("h4", {}, "Request body"), body(op.requestBody)] : null,
    op.responses ? [h("h4", {}, "Responses"), responses(op.responses)] : null);
}

async function main() {
  let spec;
  try {
    spec = await getJSON("/api/openapi.json");
  } catch (e) {
    $("#doc-description").textContent = `Could not load /api/openapi.json: ${e.message}`;
    return;
  }
  const info = spec.info || {};
  $("#doc-title").textContent = `${info.title || "API"} ${info.version || ""}`.trim();
  $("#doc-description").textContent = info.description || "";
  const toc = [];
  const ops = [];
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      toc.push(h("li", {}, h("a", { href: `#${operationId(method, path)}` },
        h("span", { class: `doc-method doc-${method}` }, method.toUpperCase()), " ", h("code", {}, path)),
        " — ", item[method].summary || ""));
      ops.push(operation(method, path, item[method]));
    }
  }
  $("#doc-toc").replaceChildren(...toc);
  $("#doc-endpoints").replaceChildren(...ops);
  const schemas = ((spec.components || {}).schemas) || {};
  $("#doc-schemas").replaceChildren(...Object.entries(schemas).map(([name, schema]) =>
    h("section", { id: `schema-${name}`, class: "doc-schema" }, h("h3", {}, name), propertiesTable(schema))));
  document.body.dataset.ready = "true";
  if (location.hash) {
    const target = document.getElementById(location.hash.slice(1));
    if (target) target.scrollIntoView();
  }
}

main();
