"""Web API: Flask app factory, one blueprint per resource. Never imports torch.

Jobs are committed to the database first, then published by task name to the workers; reads
come from the database. Test-set names and synchronous classify-by-name go to the FAST queue.
"""
from __future__ import annotations

import logging


def create_app(config: dict | None = None):
    from flask import Flask

    from api import auth, batches, compat, dashboard, errors, health, jobs, models, openapi, store
    from db import settings

    app = Flask(__name__, static_folder=None)
    app.config.update(settings.load())
    app.config.update(config or {})
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_UPLOAD_MB"]) * 1024 * 1024 + 64 * 1024
    app.json.sort_keys = False

    errors.register(app)
    store.init_app(app)
    auth.init_app(app)
    for module in (jobs, batches, compat, health, dashboard, models, openapi):
        app.register_blueprint(module.bp)
    try:
        from api import ui   # the web UI (owned elsewhere): `/` and web/ static files
    except ImportError:
        ui = None
    if ui is not None:
        app.register_blueprint(ui.bp)
    logging.getLogger(__name__).debug("vidclass API ready")
    return app
