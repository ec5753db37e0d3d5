"""GET /api/openapi.json: the OpenAPI 3 description of every endpoint.

tests/test_contract.py fuzzes the running service against it (schemathesis), so it says exactly what
the server accepts: a request the document calls valid is not refused for its shape, one it calls
invalid is refused with a 4xx.
"""
from __future__ import annotations

import copy

from flask import Blueprint, current_app, jsonify

import vidclass
from api.submit import URL_PATTERN
from vidclass import CLASS_NAMES

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _located(schema: dict, description: str) -> dict:
    return {**_json(schema, description), "headers": {"Location": {
        "description": "URL of the accepted resource: poll it", "schema": {"type": "string"}}}}


ERR = _json(_ref("Error"), "Error: {code, message}")
FLAG = {"type": "string", "enum": ["", "0", "1", "false", "true"]}
TIME = {"anyOf": [{"type": "string", "enum": [""]}, {"type": "string", "format": "date"},
                  {"type": "string", "format": "date-time"}]}
JOB = _json(_ref("Job"), "The job")
LOCATED_JOB = _located(_ref("Job"), "Accepted; `Location` is the job's URL")
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}

# An accepted URL (api.submit.url_problem); maxLength is MAX_URL_LENGTH, set when served.
URL = {"type": "string", "pattern": rf"^[ \t\n\r\f\v]*{URL_PATTERN}[ \t\n\r\f\v]*$",
       "description": "an http(s) URL"}
EMPTY = {"type": "string", "enum": [""]}       # an empty form field: as if absent


def _any_case(names) -> str:
    """A pattern matching any of `names` in any letter case, surrounding spaces allowed."""
    def letters(name):
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in name)
    return r"^\s*(" + "|".join(letters(n) for n in names) + r")\s*$"


# Links from a created job or batch to the operations that take its id: a client (and the
# contract test's stateful phase) follows them.
JOB_LINKS = {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}}
             for name, op in (("GetJob", "getJob"), ("CancelJob", "cancelJob"), ("RetryJob", "retryJob"),
                              ("LabelJob", "labelJob"), ("DeleteJob", "deleteJob"))}
BATCH_LINKS = {name: {"operationId": op, "parameters": {"batch_id": "$response.body#/id"}}
               for name, op in (("GetBatch", "getBatch"), ("CancelBatch", "cancelBatch"),
                                ("RetryBatch", "retryBatch"), ("DeleteBatch", "deleteBatch"))}
MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
MODEL_LINKS = {name: {"operationId": op, "parameters": {"model_id": "$response.body#/id"}}
               for name, op in (("GetModel", "getModel"), ("PromoteModel", "promoteModel"))}
BATCH_LINKS["BatchJobs"] = {"operationId": "listJobs", "parameters": {"batch": "$response.body#/id"}}


def _linked(response: dict, links: dict) -> dict:
    return {**response, "links": links}


def _q(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SEGMENT_OPTIONS = {
    "segments": {"description": "per-segment timeline: true, false or \"auto\" (default: on for videos "
                                "longer than SEGMENT_MIN_VIDEO_S)",
                 "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["auto"]}]},
    "min_segment_s": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 3600,
                      "description": "shortest timeline segment in seconds (default SEGMENT_MIN_S)"},
}

# Form fields are text: segments as a word, min_segment_s as a decimal number.
FORM_OPTIONS = {
    "segments": {"type": "string", "enum": ["auto", "true", "false", "1", "0", "on", "off", "yes", "no"],
                 "description": SEGMENT_OPTIONS["segments"]["description"]},
    "min_segment_s": SEGMENT_OPTIONS["min_segment_s"],
}

SUBMIT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {
            "type": "object", "oneOf": [{"required": ["url"]}, {"required": ["video"]}],
            "description": "`url` or `video`, not both",
            "properties": {
                "url": URL,
                "video": {"type": "string", "pattern": r"\S",
                          "description": "test-set video name (GET /api/videos)"},
                "callback_url": URL, **SEGMENT_OPTIONS}}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"},
            "callback_url": {"anyOf": [EMPTY, URL]}, **FORM_OPTIONS}}},
    },
}

IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "maxLength": 255, "pattern": r"\S"},
               "description": "same key and body -> the same job/batch (200); same key, other body -> "
                              "422 idempotency_key_reused"}
# Write and export endpoints: 401 without a valid key once keys are on, 403 cross-site, 429 over
# RATE_LIMIT_PER_MIN (with Retry-After).
GUARDED = {"401": ERR, "403": ERR, "429": ERR}

SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "vidclass", "version": vidclass.__version__,
             "description": "Video content-type classification jobs (Animation, Flat_Content, "
                            "Gaming, Natural_Content). Every error body is {code, message}. A NUL "
                            "character in any text (query, form field, JSON string) is refused: 400 "
                            "bad_character."},
    "paths": {
        "/api/jobs": {
            "post": {"summary": "Submit a job (URL, test-set name or upload)", "operationId": "createJob",
                     "parameters": [IDEMPOTENCY],
                     "requestBody": SUBMIT_BODY,
                     "responses": {"202": _linked(LOCATED_JOB, JOB_LINKS), "200": _linked(JOB, JOB_LINKS), "400": ERR, "404": ERR, "413": ERR, "415": ERR,
                                   "422": ERR, **GUARDED}},
            "get": {"summary": "Job history with filters, sort, pages; CSV export", "operationId": "listJobs",
                    "parameters": [
                        _q("status", {"type": "string"}, "comma-separated statuses"),
                        _q("label", {"type": "string"}, "comma-separated class names, any case "
                                                        "(400 bad_filter for an unknown one)"),
                        _q("subcategory", {"type": "string"}, "comma-separated subcategories (e.g. racing)"),
                        _q("segment_label", {"type": "string"},
                           "comma-separated class names: jobs with a timeline segment of one of them"),
                        _q("batch", {"type": "string"}, "batch id"),
                        _q("model_version", {"type": "string"}, "comma-separated model digests (a job's model_version)"),
                        _q("model", {"anyOf": [EMPTY, {"type": "string", "pattern": "^[0-9]+$"}]},
                           "a model version's number (GET /api/models): the jobs it classified"),
                        _q("source_kind", {"type": "string", "enum": ["", "url", "upload", "test-set"]}, ""),
                        _q("q", {"type": "string"}, "substring of the source (URL, file or video name)"),
                        _q("created_from", TIME, "ISO date or RFC 3339 date-time, UTC without an offset (inclusive)"),
                        _q("created_to", TIME, "ISO date (whole day) or RFC 3339 date-time (inclusive)"),
                        _q("min_confidence", {"anyOf": [EMPTY, {"type": "number", "minimum": 0, "maximum": 1}]},
                           "a fraction: 0.9 for 90% (400 bad_filter outside 0..1)"),
                        _q("corrected", FLAG, "1: jobs a user gave a true label (PUT .../label); 0: the others"),
                        _q("disagrees", FLAG,
                           "1: corrected jobs whose true label is not the model's; 0: corrected and agreeing"),
                        _q("uncertain", FLAG,
                           "1: only results under the model's confidence threshold; 0: only the others"),
                        _q("sort", {"type": "string", "enum": ["created_at", "confidence", "label", "status", "review"]},
                           "review: the results most worth a correction first (uncertain, members "
                           "disagreeing, a mixed timeline, low confidence; with order=desc)"),
                        _q("order", {"type": "string", "enum": ["asc", "desc"]}, "default desc"),
                        _q("page", {"type": "integer", "minimum": 1, "maximum": 10**7},
                           "offset pages, up to MAX_HISTORY_OFFSET rows deep (then 400 offset_too_large); "
                           "not with `cursor`"),
                        _q("cursor", {"type": "string"}, "keyset page: the next_cursor of the previous "
                                                         "page (same sort and order); any depth"),
                        _q("per_page", {"type": "integer", "minimum": 1, "maximum": 500}, "default 50"),
                        _q("format", {"type": "string", "enum": ["", "json", "csv"]},
                           "csv: every matching row, streamed as an attachment (a column per class "
                           "probability p_<class> and per stage <stage>_s)"),
                        _q("download", FLAG,
                           "1 (with format=json): every matching row, streamed as an attachment: "
                           "{jobs: [...], total}")],
                    "responses": {"200": {"description": "A page of jobs, the JSON export or CSV", "content": {
                        "application/json": {"schema": {"oneOf": [_ref("JobPage"), _ref("JobExport")]}},
                        "text/csv": {"schema": {"type": "string"}}}}, "400": ERR, **GUARDED}},
        },
        "/api/jobs/{job_id}": {
            "get": {"summary": "One job", "operationId": "getJob", "parameters": [JOB_ID],
                    "responses": {"200": JOB, "404": ERR, "401": ERR}},
            "delete": {"summary": "Delete a job with its stored upload or download and its thumbnails",
                       "operationId": "deleteJob",
                       "parameters": [JOB_ID],
                       "responses": {"204": {"description": "Deleted"}, "404": ERR, **GUARDED}}},
        "/api/jobs/{job_id}/cancel": {
            "post": {"summary": "Cancel a queued or running job", "operationId": "cancelJob", "parameters": [JOB_ID],
                     "responses": {"200": JOB, "404": ERR, "409": ERR, **GUARDED}}},
        "/api/jobs/{job_id}/retry": {
            "post": {"summary": "Run a failed or cancelled job again", "operationId": "retryJob", "parameters": [JOB_ID],
                     "responses": {"202": LOCATED_JOB, "404": ERR, "409": ERR, **GUARDED}}},
        "/api/jobs/{job_id}/label": {
            "put": {"summary": "Correct a result: set the job's true label (null clears it)",
                    "operationId": "labelJob", "parameters": [JOB_ID],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["label"], "properties": {
                            "label": {"type": "string", "nullable": True, "pattern": _any_case(CLASS_NAMES),
                                      "description": "a class name (any case) or null"}}}}}},
                    "responses": {"200": JOB, "400": ERR, "404": ERR,
                                  "409": _json(_ref("Error"), "The job has no result to correct (job_not_done)"),
                                  **GUARDED}}},
        "/api/jobs/{job_id}/segments/{n}.jpg": {
            "get": {"summary": "The thumbnail of the n-th timeline segment of a job",
                    "parameters": [JOB_ID, {"name": "n", "in": "path", "required": True,
                                            "schema": {"type": "integer", "minimum": 0}}],
                    "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                                  "404": ERR}}},
        "/api/jobs/{job_id}/thumbnails/{n}.jpg": {
            "get": {"summary": "The n-th sampled-frame thumbnail of a job",
                    "parameters": [JOB_ID, {"name": "n", "in": "path", "required": True,
                                            "schema": {"type": "integer", "minimum": 0}}],
                    "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}},
                                  "404": ERR}}},
        "/api/batches": {
            "get": {"summary": "Batches, newest first, with counts per status and label and progress",
                    "operationId": "listBatches",
                    "parameters": [_q("page", {"type": "integer", "minimum": 1, "maximum": 10**6}, ""),
                                   _q("per_page", {"type": "integer", "minimum": 1, "maximum": 200}, "default 20")],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "batches": {"type": "array", "items": _ref("Batch")}, "page": {"type": "integer"},
                        "per_page": {"type": "integer"}, "total": {"type": "integer"},
                        "pages": {"type": "integer"}}}, "A page of batches"), "400": ERR}},
            "post": {"summary": "Submit up to MAX_BATCH_URLS URLs (JSON list, pasted text or text/CSV file)",
                     "operationId": "createBatch", "parameters": [IDEMPOTENCY],
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": {
                             "type": "object", "anyOf": [{"required": ["urls"]}, {"required": ["text"]}],
                             "description": "`urls`, or `text` (used when `urls` is absent). Lines that are "
                                            "not URLs are reported in `invalid_lines`; none valid: 422 "
                                            "no_valid_urls",
                             "properties": {
                             "urls": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                             "text": {"type": "string", "description": "instead of urls: the list as typed, "
                                      "one URL a line; blank lines and lines starting with # are skipped, "
                                      "rejected lines keep the text's own line numbers"},
                             "name": {"type": "string"}, "callback_url": URL,
                             **SEGMENT_OPTIONS}}},
                         "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                             "file": {"type": "string", "format": "binary",
                                      "description": "one URL a line (blank and # lines skipped, as `text`); "
                                                     "CSV: `url` column or the first"},
                             "name": {"type": "string"}, "callback_url": {"anyOf": [EMPTY, URL]},
                             **FORM_OPTIONS}}}}},
                     "responses": {"202": _linked(_located(_ref("Batch"), "The batch; bad lines in invalid_lines"),
                                                  BATCH_LINKS),
                                   "200": _linked(_json(_ref("Batch"), "The batch made earlier with this "
                                                                       "Idempotency-Key"), BATCH_LINKS),
                                   "400": ERR, "413": ERR, "415": ERR, "422": ERR, **GUARDED}}},
        "/api/batches/{batch_id}": {
            "get": {"summary": "A batch with counts per status and progress", "operationId": "getBatch",
                    "parameters": [BATCH_ID],
                    "responses": {"200": _json(_ref("Batch"), "The batch"), "404": ERR}},
            "delete": {"summary": "Delete a batch with its jobs and their stored files", "operationId": "deleteBatch",
                       "parameters": [BATCH_ID],
                       "responses": {"204": {"description": "Deleted"}, "404": ERR, **GUARDED}}},
        "/api/batches/{batch_id}/cancel": {
            "post": {"summary": "Cancel the batch's queued and running jobs (finished ones stay)",
                     "operationId": "cancelBatch",
                     "parameters": [BATCH_ID],
                     "responses": {"200": _json(_ref("Batch"), "The batch, with `cancelled`: jobs cancelled now"),
                                   "404": ERR, **GUARDED}}},
        "/api/batches/{batch_id}/retry": {
            "post": {"summary": "Run the batch's failed jobs again", "operationId": "retryBatch",
                     "parameters": [BATCH_ID],
                     "responses": {"202": _located(_ref("Batch"), "The batch, with `retried`: jobs queued again"),
                                   "404": ERR, **GUARDED}}},
        "/api/models": {
            "get": {"summary": "Model versions, newest first: status, training data, evaluation beside the "
                               "parent; the active one; corrections a retrain would learn from",
                    "operationId": "listModels",
                    "responses": {"200": _json({"type": "object", "required": ["models", "active_id"], "properties": {
                        "models": {"type": "array", "items": _ref("ModelVersion")},
                        "active_id": {"type": "integer", "nullable": True},
                        "corrections": {"type": "integer"}, "promote_margin": {"type": "number"}}},
                        "The versions"), **GUARDED}},
            "post": {"summary": "Retrain from users' corrections: a queued job on the workers (admin key)",
                     "operationId": "createModel",
                     "requestBody": {"required": False, "content": {"application/json": {"schema": {
                         "type": "object", "properties": {"note": {"type": "string"}}}}}},
                     "responses": {"202": _linked(_located(_ref("ModelVersion"), "The `training` version; poll it"),
                                                  MODEL_LINKS),
                                   "400": ERR, "409": _json(_ref("Error"), "no_active_model, no_corrections or "
                                                                           "retrain_running"),
                                   "413": ERR, "415": ERR, "503": ERR, **GUARDED}}},
        "/api/models/{model_id}": {
            "get": {"summary": "A model version with its full evaluation (corpus folds, held-out corrections, "
                               "flips, gate)", "operationId": "getModel", "parameters": [MODEL_ID],
                    "responses": {"200": _json(_ref("ModelVersion"), "The version"), "404": ERR, **GUARDED}}},
        "/api/models/{model_id}/promote": {
            "post": {"summary": "Make a candidate the active model; workers switch before their next task "
                                "(admin key)", "operationId": "promoteModel", "parameters": [MODEL_ID],
                     "requestBody": {"required": False, "content": {"application/json": {"schema": {
                         "type": "object", "properties": {"force": {"type": "boolean", "description":
                             "promote even when worse than the active model by more than PROMOTE_MARGIN"}}}}}},
                     "responses": {"200": _json(_ref("ModelVersion"), "The now active version"), "400": ERR,
                                   "404": ERR, "409": _json(_ref("Error"), "not_a_candidate or worse_than_active"),
                                   "413": ERR, "415": ERR, **GUARDED}}},
        "/api/models/rollback": {
            "post": {"summary": "Return to the version the active one replaced (admin key)",
                     "operationId": "rollbackModel",
                     "responses": {"200": _json(_ref("ModelVersion"), "The now active version"),
                                   "409": _json(_ref("Error"), "nothing_to_roll_back"), **GUARDED}}},
        "/api/videos": {
            "get": {"summary": "Test-set video names by category (original API)",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "categories": {"type": "object", "additionalProperties": {
                            "type": "array", "items": {"type": "string"}}},
                        "count": {"type": "integer"}}}, "Names"), "503": ERR}}},
        "/api/classify": {
            "post": {"summary": "Classify synchronously (original API): a test-set name answers at "
                                "once; a URL or upload is queued and awaited up to `wait` seconds",
                     "parameters": [_q("wait", {"type": "number", "minimum": 0, "maximum": 300},
                                       "seconds to wait for a URL/upload job (default SYNC_WAIT_S)")],
                     "requestBody": SUBMIT_BODY,
                     "responses": {"200": _json(_ref("Result"), "The classification"),
                                   "202": _linked(LOCATED_JOB, JOB_LINKS), "400": ERR, "404": ERR, "413": ERR,
                                   "415": ERR,
                                   "422": _json({"allOf": [_ref("Error"), {"type": "object", "properties": {
                                       "job": _ref("Job")}}]}, "The job failed: its error, and the job"),
                                   "503": ERR, **GUARDED}}},
        "/api/health": {
            "get": {"summary": "Versions and reachability of database, queue and model; whether API "
                                "keys are required; `vidclass up`'s restarts (no connection URLs)",
                    "responses": {"200": _json({"type": "object"}, "Healthy"),
                                  "503": _json({"type": "object"}, "Database or queue unreachable")}}},
        "/api/dashboard": {
            "get": {"summary": "Workers and queue at a glance: queue depth per queue, live workers and "
                               "their model version, running jobs and their worker, jobs finished per "
                               "minute over the last hour, median time per stage (last 200 done jobs), "
                               "an ETA per unfinished batch (remaining x median job time / jobs in parallel)",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "queues": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "workers": {"type": "array", "items": {"type": "object"}},
                        "running": {"type": "array", "items": {"type": "object"}},
                        "throughput": {"type": "object", "properties": {
                            "per_minute": {"type": "array", "items": {"type": "integer"},
                                           "description": "60 counts, oldest minute first"},
                            "last_hour": {"type": "integer"}}},
                        "stage_medians_s": {"type": "object", "additionalProperties": {"type": "number"}},
                        "batches": {"type": "array", "items": {"type": "object", "properties": {
                            "id": {"type": "string"}, "remaining": {"type": "integer"},
                            "eta_s": {"type": "number", "nullable": True}}}}}}, "The dashboard")}}},
        "/api/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3")}}},
        "/api/docs": {
            "get": {"summary": "This document as a web page (served by this server, no external requests)",
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
        "/metrics": {
            "get": {"summary": "Prometheus metrics: jobs by status, stage durations, queue depth",
                    "responses": {"200": {"description": "Prometheus text format",
                                          "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                  "description": "`vidclass keys create`"}},
                   "schemas": {
        "Error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}}},
        "Job": {"type": "object", "properties": {
            "id": {"type": "string"}, "batch_id": {"type": "string", "nullable": True},
            "source_kind": {"type": "string", "enum": ["url", "upload", "test-set"]},
            "source": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "downloading", "extracting", "classifying",
                                                  "done", "failed", "cancelled"]},
            "progress": {"type": "integer"}, "stage_timings": {"type": "object"},
            "label": {"type": "string", "nullable": True,
                      "description": "a class, or `mixed` when the timeline has no dominant class"},
            "confidence": {"type": "number", "nullable": True},
            "probabilities": {"type": "object", "nullable": True},
            "subcategory": {"type": "string", "nullable": True},
            "members": {"type": "array", "nullable": True, "items": {"type": "object"}},
            "agreement": {"type": "number", "nullable": True},
            "model_version": {"type": "string", "nullable": True},
            "pipeline_version": {"type": "string", "nullable": True},
            "error": {"nullable": True, "allOf": [_ref("Error")]},
            "attempts": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": "string", "nullable": True},
            "finished_at": {"type": "string", "nullable": True},
            "thumbnails": {"type": "array", "items": {"type": "string"}},
            "true_label": {"type": "string", "nullable": True,
                           "description": "the label a user says is right (PUT /api/jobs/{job_id}/label)"},
            "labelled_at": {"type": "string", "nullable": True},
            "options": {"type": "object", "properties": SEGMENT_OPTIONS},
            "segments": {"type": "array", "nullable": True, "items": _ref("Segment")},
            "mixed": {"type": "boolean", "nullable": True,
                      "description": "no class labels SEGMENT_MIXED_SHARE of the duration"},
            "label_shares": {"type": "object", "nullable": True,
                             "additionalProperties": {"type": "number"}},
            "uncertain": {"type": "boolean", "nullable": True,
                          "description": "top-class confidence under the model's threshold"},
            "subcategory_confidence": {"type": "number", "nullable": True},
            "callback_url": {"type": "string", "nullable": True},
            "callback_status": {"type": "string", "nullable": True},
            "callback_error": {"type": "string", "nullable": True,
                               "description": "why the last callback attempt failed"},
            "whole_video": {"type": "object", "nullable": True,
                            "description": "with a timeline: the whole video's own result (label, "
                                           "confidence, probabilities, ...); the job's label is the "
                                           "timeline's, `mixed` when no class dominates"}}},
        "Segment": {"type": "object", "properties": {
            "start": {"type": "number"}, "end": {"type": "number"}, "label": {"type": "string"},
            "confidence": {"type": "number"},
            "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
            "thumbnail": {"type": "string", "nullable": True},
            "start_timecode": {"type": "string", "description": "HH:MM:SS.mmm from the first frame"},
            "end_timecode": {"type": "string"},
            "start_frame": {"type": "integer", "description": "0-based, when the frame rate is known"},
            "end_frame": {"type": "integer", "description": "the segment's last frame"},
            "shots": {"type": "array", "items": {"type": "number"},
                      "description": "shot boundaries inside the segment (seconds)"},
            "subcategory": {"type": "string", "nullable": True},
            "subcategory_confidence": {"type": "number", "nullable": True}}},
        "JobExport": {"type": "object", "required": ["jobs", "total"], "additionalProperties": False,
                      "properties": {
            "jobs": {"type": "array", "items": _ref("Job")},
            "total": {"type": "integer", "description": "rows in jobs"}}},
        "JobPage": {"type": "object", "required": ["jobs", "per_page", "total", "pages", "next_cursor"],
                    "properties": {
            "jobs": {"type": "array", "items": _ref("Job")}, "page": {"type": "integer"},
            "per_page": {"type": "integer"}, "total": {"type": "integer"}, "pages": {"type": "integer"},
            "next_cursor": {"type": "string", "nullable": True,
                            "description": "pass as `cursor` for the next page; null on the last"}}},
        "Batch": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string", "nullable": True},
            "created_at": {"type": "string"}, "total": {"type": "integer"},
            "invalid_lines": {"type": "array", "items": {"type": "object", "properties": {
                "line": {"type": "integer"}, "value": {"type": "string"}, "code": {"type": "string"},
                "message": {"type": "string"}}},
                "description": "The first 100 rejected lines (values cut to 200 characters)"},
            "invalid_count": {"type": "integer", "description": "All rejected lines"},
            "status_counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "label_counts": {"type": "object", "additionalProperties": {"type": "integer"},
                             "description": "done jobs per label"},
            "finished": {"type": "integer"}, "done": {"type": "boolean"},
            "progress": {"type": "number"}}},
        "ModelVersion": {"type": "object", "properties": {
            "id": {"type": "integer"}, "digest": {"type": "string", "nullable": True,
                                                  "description": "what jobs record as model_version"},
            "parent_id": {"type": "integer", "nullable": True},
            "status": {"type": "string", "enum": ["training", "candidate", "active", "retired", "failed"]},
            "created_at": {"type": "string", "nullable": True}, "finished_at": {"type": "string", "nullable": True},
            "promoted_at": {"type": "string", "nullable": True}, "progress": {"type": "integer"},
            "pipeline_version": {"type": "string", "nullable": True},
            "training": {"type": "object", "description": "corpus clips and sources, corrections and their "
                                                          "source groups, per class"},
            "note": {"type": "string", "nullable": True}, "error": {"type": "string", "nullable": True},
            "replaced_id": {"type": "integer", "nullable": True},
            "metrics": {"type": "object", "nullable": True,
                        "description": "corpus (active/candidate: accuracy, recall, ece on the family folds), "
                                       "corrections (held out by source group), flips, gate"},
            "gate": {"type": "object", "nullable": True}, "corrections_held_out": {"type": "object", "nullable": True},
            "flips": {"type": "object", "nullable": True}}},
        "Result": {"type": "object", "properties": {
            "label": {"type": "string"}, "confidence": {"type": "number"},
            "probabilities": {"type": "object"}, "members": {"type": "array", "items": {"type": "object"}},
            "agreement": {"type": "number"}, "model_version": {"type": "string"}}},
    }},
}


@bp.get("/api/openapi.json")
def openapi():
    # deepcopy keeps shared sub-schemas shared: URL is set once for every place that uses it.
    spec, url = copy.deepcopy((SPEC, URL))
    url["maxLength"] = current_app.config["MAX_URL_LENGTH"]
    return jsonify(spec)
