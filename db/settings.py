"""Every environment variable the service reads, in one list (docs/CONFIG.md is its table).

The API, the workers and the CLI all read configuration through `get()`, at call time, so a
test or an operator can change the environment before starting a process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = REPO_ROOT / "instance"


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    type: type
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'vidclass.db'}", str,
            "SQLAlchemy URL of the job database (SQLite file or postgresql+psycopg://...)."),
    Setting("REDIS_URL", "", str,
            "Redis broker/result URL. Empty: `vidclass up` starts an embedded redis-server; "
            "`vidclass api`/`worker` fall back to redis://127.0.0.1:6379/0."),
    Setting("REDIS_PREFIX", "", str,
            "Prefix of every Redis key (queues, results, heartbeats): several deployments or test "
            "runs can share one Redis."),
    Setting("UPLOAD_DIR", str(INSTANCE_DIR / "uploads"), str,
            "Where uploaded videos are stored; every worker must be able to read it."),
    Setting("DOWNLOAD_DIR", "", str,
            "Where download workers put the videos they fetched for the classification workers "
            "(DOWNLOAD_DIR/<job_id>/); shared storage that every worker can read, like UPLOAD_DIR. "
            "Empty: UPLOAD_DIR/downloads. A file is deleted when its job ends."),
    Setting("THUMBNAIL_DIR", str(INSTANCE_DIR / "thumbnails"), str,
            "Where per-job JPEG thumbnails are written (THUMBNAIL_DIR/<job_id>/<n>.jpg)."),
    Setting("MAX_UPLOAD_MB", 500, int, "Largest accepted upload (HTTP 413 above)."),
    Setting("THUMBNAIL_RETENTION_DAYS", 0.0, float,
            "How long a finished job keeps its frame and segment thumbnails: 0 keeps them as long as "
            "the job; N deletes them N days after the job ended (the result stays)."),
    Setting("FEATURE_RETENTION_DAYS", 0.0, float,
            "How long a finished job keeps its clip features (the pooled vector a correction is "
            "learned from, ~12 KB): 0 keeps them as long as the job; N clears them N days after the "
            "job ended, unless a user corrected its label."),
    Setting("MODEL_STORE_DIR", str(INSTANCE_DIR / "models"), str,
            "Where retrained model versions are written (MODEL_STORE_DIR/v<id>/); shared storage "
            "that every classification worker can read, like UPLOAD_DIR."),
    Setting("PROMOTE_MARGIN", 0.01, float,
            "A candidate model whose accuracy on the corpus's family folds is below the active "
            "model's by more than this (0.01 = 1 point) is not promoted unless forced."),
    Setting("UPLOAD_RETENTION_H", 24.0, float,
            "Uploads of failed or cancelled jobs are kept this many hours after the job ended, so "
            "the job can be retried, then deleted (0 = keep them). Uploads of done jobs are "
            "deleted at once."),
    Setting("MAX_DOWNLOAD_MB", 500, int, "Largest video a worker downloads from a URL."),
    Setting("MAX_VIDEO_SECONDS", 3600, int,
            "Longest video (by its reported duration) a worker classifies, from any source: URL "
            "downloads, yt-dlp pages and uploads (code too_long)."),
    Setting("MAX_JSON_MB", 8, float,
            "Largest accepted JSON request body (HTTP 413 json_too_large above; a 10,000-URL batch "
            "of 800-character URLs fits). JSON nested too deeply to parse is a 400 bad_json."),
    Setting("MAX_URL_LENGTH", 2048, int, "Longest accepted URL."),
    Setting("MAX_BATCH_URLS", 10000, int, "Most URLs in one batch."),
    Setting("JOB_TIMEOUT_S", 1800, int, "Hard time limit of one job; the broker's visibility timeout is longer."),
    Setting("MAX_ATTEMPTS", 3, int, "A job delivered more often than this fails with code too_many_attempts."),
    Setting("DOWNLOAD_TIMEOUT_S", 30, int, "Socket timeout of downloads."),
    Setting("DOWNLOAD_RETRIES", 3, int, "Retries (exponential backoff) of transient download errors."),
    Setting("DOWNLOAD_DEADLINE_S", 600, float,
            "Total time one download may take, retries and redirects included (a server sending "
            "1 byte/s is cut off here, not at JOB_TIMEOUT_S); the job fails with download_timeout."),
    Setting("BLOCK_PRIVATE_URLS", True, _flag,
            "Workers refuse to connect to loopback, private, link-local, multicast, unspecified, "
            "reserved and other non-public addresses (IPv4-mapped, NAT64 and 6to4 IPv6 forms are "
            "judged by their IPv4 address), checked on the resolved address of every connection a "
            "download, redirect, yt-dlp request or callback opens; the job fails with blocked_url. "
            "Allow your own networks with ALLOWED_PRIVATE_NETWORKS rather than turning this off (0)."),
    Setting("ALLOWED_PRIVATE_NETWORKS", "", str,
            "Comma-separated CIDRs, addresses or host names, each optionally with `:port`, that "
            "workers may connect to despite BLOCK_PRIVATE_URLS, e.g. `192.168.1.0/24,nas.lan:8000` "
            "to classify videos from your own network, or `127.0.0.1` for a server on the same "
            "machine."),
    Setting("CALLBACK_SECRET", "", str,
            "HMAC-SHA256 key signing callbacks: header X-Vidclass-Signature: sha256=<hex of "
            "HMAC(secret, timestamp + \".\" + body)>, with the Unix time in X-Vidclass-Timestamp "
            "(receivers refuse old timestamps to stop replays)."),
    Setting("CALLBACK_RETRIES", 5, int,
            "Retries (exponential backoff, at most 5 minutes apart) of a failed callback POST; then "
            "the callback is `failed`. Callbacks are kept in the database until delivered."),
    Setting("SYNC_WAIT_S", 30, float, "Default wait of POST /api/classify for a URL or upload."),
    Setting("THUMBNAILS_PER_JOB", 4, int, "Sampled frames saved as JPEG thumbnails per job (0 = none)."),
    Setting("SEGMENT_MIN_VIDEO_S", 60.0, float,
            "Videos longer than this get a per-segment timeline unless the job says `segments: "
            "false` (shorter ones only with `segments: true`)."),
    Setting("SEGMENT_MIN_S", 2.0, float,
            "Default shortest timeline segment (s); shorter shots are merged into a neighbour. A "
            "job may set its own `min_segment_s`."),
    Setting("SEGMENT_MAX_S", 60.0, float,
            "Longest timeline segment classified as one (s): longer shots are split, then merged "
            "back where the parts get the same label."),
    Setting("SEGMENT_MAX_FRAMES", 480, int,
            "Frames sampled per video for the timeline: one a second up to this many (the spacing "
            "grows on longer videos; boundaries are still refined to within 1 s)."),
    Setting("SEGMENT_MIXED_SHARE", 0.8, float,
            "A video is `mixed` when no class labels at least this share of its duration."),
    Setting("HEARTBEAT_S", 5, float, "How often a running job refreshes its heartbeat."),
    Setting("HEARTBEAT_STALE_S", 60, float,
            "A running job whose heartbeat is older than this is re-queued. Sooner when its worker "
            "process was on the reconciler's machine and is gone (two missed beats); from three "
            "missed beats the job shows `recovering: true`."),
    Setting("QUEUED_STALE_S", 900, float,
            "A queued job not picked up for this long is published again (duplicates are no-ops)."),
    Setting("RECONCILE_INTERVAL_S", 10, float, "How often a worker's reconciler looks for lost jobs."),
    Setting("OUTBOX_INTERVAL_S", 2, float,
            "How often workers publish jobs the API committed but could not publish (it died or the "
            "broker was down) and deliver due callbacks."),
    Setting("VIDCLASS_REQUIRE_KEYS", False, _flag,
            "1: every write and export endpoint needs `Authorization: Bearer <key>` (keys from "
            "`vidclass keys create`). Keys are required anyway as soon as one exists. Off: the API "
            "is open, which only suits 127.0.0.1 (`vidclass up` on another address turns it on)."),
    Setting("ALLOWED_HOSTS", "", str,
            "Comma-separated host names (as in the Host header, without the port; `*` for any) the API "
            "answers besides localhost, 127.0.0.1, ::1 and the address it was started on "
            "(VIDCLASS_BIND_HOST, set by `vidclass api` and `vidclass up`). Any other Host gets 400 "
            "`bad_host`, so a page on a host name that resolves to 127.0.0.1 (DNS rebinding) cannot "
            "use a keyless API. When keys are required and this is empty, every Host is answered."),
    Setting("VIDCLASS_BIND_HOST", "", str,
            "The address the API was started on (set by `vidclass api` / `vidclass up`); its Host is allowed."),
    Setting("RATE_LIMIT_PER_MIN", 600, int,
            "Write and export requests per minute and API key (HTTP 429 with Retry-After above; "
            "0 = no limit). Counted in Redis, so shared by every API process."),
    Setting("MAX_HISTORY_OFFSET", 10000, int,
            "Deepest `page` offset (rows) of GET /api/jobs; deeper pages answer 400 "
            "`offset_too_large`: use the `cursor` (next_cursor) instead."),
    Setting("WORKER_CONCURRENCY", 2, int,
            "Classification worker processes (each loads the model) of `vidclass worker` / "
            "`vidclass up --workers`."),
    Setting("VIDCLASS_PORT", 5000, int,
            "Port of `vidclass up` and `vidclass api` when `--port` is not given (`make run PORT=5001` "
            "passes `--port`). Both check that it is free before starting anything."),
    Setting("DOWNLOAD_CONCURRENCY", 4, int,
            "Download threads of a `vidclass worker --queues download` (no model loaded; I/O bound, "
            "so many more than CPU cores is fine) and of the download worker `vidclass up` starts."),
    Setting("CLASSIFY_DEVICE", "auto", str,
            "Where classification workers run the backbone and the ensemble: `auto` (CUDA when "
            "torch sees a GPU, else CPU), `cuda`, `cuda:N` or `cpu`. Nothing requires a GPU."),
    Setting("GPU_BATCH_SIZE", 128, int,
            "Frames per backbone batch on a GPU (CPU batches stay small); lower it if the GPU runs "
            "out of memory."),
    Setting("DB_POOL_SIZE", 5, int,
            "Connections kept open per process to PostgreSQL (SQLAlchemy pool_size); size "
            "max_connections for every API and worker process (see docs/deployment.md)."),
    Setting("DB_MAX_OVERFLOW", 10, int, "Extra PostgreSQL connections a process may open above DB_POOL_SIZE under load."),
    Setting("VIDCLASS_MODELS_DIR", "", str, "Ensemble checkpoints (default models_enhanced/)."),
    Setting("VIDCLASS_UNCERTAIN_BELOW", "", str,
            "Results whose top-class confidence is under this (0-1) say `uncertain: true`. Empty: the "
            "threshold the model was trained with (models_enhanced/manifest.json, 0.6)."),
    Setting("VIDCLASS_FEATURES_DIR", "", str, "Test-set features files (default features_enhanced/)."),
    Setting("VIDCLASS_PROCESSED_DIR", "", str, "Test-set name index (default data/processed/test/)."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def get(name: str):
    """The value of one setting: environment variable if set and non-empty, else its default."""
    setting = _BY_NAME[name]
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return setting.default
    try:
        return setting.type(raw)
    except ValueError as exc:
        kind = "flag (1/0, true/false)" if setting.type is _flag else setting.type.__name__
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {kind}") from exc


def load() -> dict:
    """All settings as a dict (the Flask app's config starts from this)."""
    return {s.name: get(s.name) for s in SETTINGS}


def download_dir() -> str:
    return get("DOWNLOAD_DIR") or str(Path(get("UPLOAD_DIR")) / "downloads")


def redis_url() -> str:
    return get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def markdown_table() -> str:
    """The table in docs/CONFIG.md, generated from SETTINGS so the two cannot drift."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = str(s.default).replace(str(REPO_ROOT), "<repo>") if s.default != "" else "(empty)"
        lines.append(f"| `{s.name}` | `{default}` | {s.help} |")
    return "\n".join(lines)
