"""API keys, per-key rate limits, the Host check and the same-origin check, in one before_request hook.

  * Host (every request): only the names the API is served as (ALLOWED_HOSTS, the bound address,
    loopback names) are answered; others get 400 `bad_host`, so a page on a rebound host name
    cannot reach a keyless API on 127.0.0.1. With keys required and no ALLOWED_HOSTS, any Host.

Guarded: every write (POST/PUT/PATCH/DELETE under /api) and every export (GET /api/jobs?format=csv or
?download=1); and, when keys are required, every other /api read too (history, results, source
URLs, thumbnails), but for /api/health, /api/openapi.json and /api/docs. Without keys (a local
API on 127.0.0.1) reads stay open.

  * Keys are required when VIDCLASS_REQUIRE_KEYS=1 or as soon as one unrevoked key exists
    (creating the first key closes the API; no restart).
  * A browser request without a key must come from this origin: another site's page cannot make a
    visitor's browser submit or cancel jobs. A request with `Authorization` cannot be forged
    cross-site (the browser would need a CORS preflight this server never grants), so it skips it.
  * Each key gets RATE_LIMIT_PER_MIN requests per fixed minute window, counted in Redis so every
    API process shares the count; 429 with Retry-After above it.
"""
from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app, g, request
from sqlalchemy import select, update

from api.errors import ApiError
from db.models import KEY_SCOPES, ApiKey, utcnow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "vck_"
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # A random 256-bit token needs no slow hash: SHA-256 cannot be brute-forced back to it.
    return hashlib.sha256(token.encode()).hexdigest()


def keys_required(session) -> bool:
    if current_app.config.get("VIDCLASS_REQUIRE_KEYS"):
        return True
    return session.execute(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)).first() is not None


PUBLIC_READS = ("/api/health", "/api/openapi.json", "/api/docs")


def _guarded() -> str | None:
    """What a request does: "admin" (retrain, promote, roll back models), "write", "export" (a key
    or, keyless, this origin; rate-limited), "read" (a key when keys are required) or None (open)."""
    if not request.path.startswith("/api/") or request.path in PUBLIC_READS:
        return None
    if request.method in UNSAFE:
        return "admin" if request.path.startswith("/api/models") else "write"
    if request.method == "GET" and request.path == "/api/jobs":
        from api.jobs import is_export

        if is_export():
            return "export"
    return "read"


# The key scope (db.models.KEY_SCOPES) each kind of request needs: an export is a read.
NEEDED_SCOPE = {"read": "read", "export": "read", "write": "write", "admin": "admin"}


def _check_origin() -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        # Old browsers omit Origin on same-origin requests; Fetch Metadata still tells cross-site.
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise ApiError(403, "cross_origin", "cross-site request refused")
        return
    host = urlsplit(origin).netloc.lower() if origin != "null" else None
    if host != request.host.lower():
        raise ApiError(403, "cross_origin", f"request from origin {origin!r} refused: only pages served "
                                            f"by this server may submit without an API key")


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, www_authenticate=True)


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):                  # [::1]:5000
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _check_host() -> None:
    name = _host_name(request.host)
    configured, answered = current_app.extensions["vidclass_hosts"]
    if name in answered or "*" in configured:
        return
    if not configured:
        from api.store import get_session

        if keys_required(get_session()):
            return
    raise ApiError(400, "bad_host", f"this server does not answer for host {name!r}; add it to "
                                    "ALLOWED_HOSTS if it is one of this server's names")


def before_request():
    _check_host()
    kind = _guarded()
    if kind is None:
        return None
    from api.store import get_session

    token = _bearer()
    if token is None and request.headers.get("Authorization"):
        raise _unauthorized("invalid_api_key", "Authorization must be `Bearer <API key>`")
    if token is None and kind != "read":
        _check_origin()
    session = get_session()
    if token is None:
        if keys_required(session):
            raise _unauthorized("api_key_required", "this endpoint needs an API key: send "
                                                    "`Authorization: Bearer <key>` (`vidclass keys create`)")
        return None
    key = session.execute(select(ApiKey).where(ApiKey.key_hash == hash_token(token))).scalar_one_or_none()
    if key is None or key.revoked_at is not None:
        raise _unauthorized("invalid_api_key", "unknown or revoked API key")
    g.api_key_id = key.id
    if KEY_SCOPES.index(key.scope or "write") < KEY_SCOPES.index(NEEDED_SCOPE[kind]):
        raise ApiError(403, "insufficient_scope", f"this key's scope is {key.scope!r}; this request needs a "
                                                  f"{NEEDED_SCOPE[kind]!r} key (`vidclass keys create "
                                                  f"--scope {NEEDED_SCOPE[kind]}`)")
    now = utcnow()
    if key.last_used_at is None or key.last_used_at < now - timedelta(minutes=1):
        session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        session.commit()
    if kind != "read":        # reads (the UI polls them) do not count against the limit
        _rate_limit(key.id)
    return None


def _rate_limit(key_id: str) -> None:
    limit = int(current_app.config.get("RATE_LIMIT_PER_MIN") or 0)
    if limit <= 0:
        return
    from api.store import redis_client
    from worker import health_keys

    now = time.time()
    window = int(now // 60)
    name = health_keys.key(f"ratelimit:{key_id}:{window}")
    try:
        pipe = redis_client().pipeline()
        pipe.incr(name)
        pipe.expire(name, 61)
        count = pipe.execute()[0]
    except Exception as exc:      # Redis down: do not turn a broker outage into an API outage
        log.warning("rate limit not checked (Redis unavailable): %s", exc)
        return
    if count > limit:
        retry_after = max(1, math.ceil((window + 1) * 60 - now))
        raise ApiError(429, "rate_limited", f"more than {limit} requests a minute with this key "
                                            f"(RATE_LIMIT_PER_MIN); retry in {retry_after} s",
                       retry_after=retry_after)


def init_app(app) -> None:
    # (ALLOWED_HOSTS, every name answered): read from the config once, not on every request.
    configured = {h.strip().lower() for h in (app.config.get("ALLOWED_HOSTS") or "").split(",") if h.strip()}
    bound = _host_name(app.config.get("VIDCLASS_BIND_HOST") or "")
    app.extensions["vidclass_hosts"] = (configured, LOOPBACK_NAMES | configured | ({bound} if bound else set()))
    app.before_request(before_request)


# ------------------------------------------------------------------ key management (the CLI)

def create_key(session, name: str, scope: str = "write") -> tuple[ApiKey, str]:
    if scope not in KEY_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(KEY_SCOPES)}")
    token = new_token()
    key = ApiKey(name=name, prefix=token[:len(TOKEN_PREFIX) + 6], key_hash=hash_token(token),
                 created_at=utcnow(), scope=scope)
    session.add(key)
    session.flush()
    return key, token


def find_key(session, ref: str) -> list[ApiKey]:
    """Keys whose id or shown prefix starts with `ref` (the CLI's revoke argument)."""
    rows = session.execute(select(ApiKey)).scalars().all()
    return [k for k in rows if k.id.startswith(ref) or (len(ref) >= 6 and k.prefix.startswith(ref))]


def keys_required_offline(require_flag: str | None, url: str | None = None) -> bool:
    """keys_required() outside a request (the `vidclass up` start message)."""
    from db import session as db_session
    from db import settings

    if require_flag and settings._flag(require_flag):
        return True
    with db_session.session_scope(url) as s:
        return s.execute(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)).first() is not None
