"""The web UI: one page at `/` plus its static files from `web/`.

The page is plain HTML, CSS and vanilla JavaScript (no build step) and talks only to the
JSON API of this same server. A strict Content-Security-Policy on the page makes the
"no external network requests" rule something the browser enforces, not just a promise.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, render_template, url_for

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_DIR = WEB_DIR / "static"

# `/assets`, not `/static`: the app's own static route (if it has one) owns `/static`.
bp = Blueprint(
    "ui",
    __name__,
    static_folder=str(STATIC_DIR),
    static_url_path="/assets",
    template_folder=str(WEB_DIR / "templates"),
)

# Module scripts import each other without version queries, so make browsers revalidate every
# static file (a cheap 304) instead of guessing a freshness lifetime from Last-Modified.
bp.get_send_file_max_age = lambda filename: 0  # type: ignore[method-assign]

# Everything from this origin only; data:/blob: images for the inline favicon and file previews.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def asset_url(name: str) -> str:
    """URL of a static file with its modification time as a cache-busting query."""
    path = STATIC_DIR / name
    version = int(path.stat().st_mtime) if path.exists() else 0
    return url_for("ui.static", filename=name, v=version)


@bp.app_template_global("ui_asset")
def _ui_asset(name: str) -> str:
    return asset_url(name)


def _page(template: str) -> Response:
    response = Response(render_template(template))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    # The page is tiny and its assets are versioned; always serve the current page.
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/")
def index() -> Response:
    return _page("vidclass_index.html")


@bp.get("/api/docs")
def api_docs() -> Response:
    """/api/openapi.json rendered for people by web/static/js/apidocs.js (no CDN, same CSP)."""
    return _page("vidclass_apidocs.html")
