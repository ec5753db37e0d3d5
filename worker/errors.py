"""Why a job failed, as a stable code and a plain sentence for users (details go to the log)."""
from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded

from db import settings

log = logging.getLogger(__name__)


# Failures whose message is written for users (no server paths, no library text).
_CODES = {"VideoError": "bad_video", "NotAVideo": "not_a_video", "TooLong": "too_long",
          "UnknownVideo": "unknown_video", "NoModelsError": "no_models",
          "PipelineMismatch": "pipeline_mismatch", "FileNotFoundError": "file_missing",
          "CheckpointError": "bad_model"}


def error_of(exc: BaseException) -> tuple[str, str]:
    """(stable code, plain message) for the reasons a job can fail; details go to the log."""
    from vidclass.media.download import DownloadError

    if isinstance(exc, DownloadError):
        return exc.code, str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return "timeout", f"the job ran longer than JOB_TIMEOUT_S={settings.get('JOB_TIMEOUT_S')} s"
    kind = type(exc).__name__
    if kind in _CODES:
        if getattr(exc, "detail", None):
            log.info("%s: %s", kind, exc.detail)
        return _CODES[kind], str(exc) or kind
    # Anything else is a bug or an unforeseen failure: its text may hold paths or library
    # internals, so users get a sentence and the log gets the traceback.
    log.error("unexpected %s", kind, exc_info=exc)
    return "internal_error", "An internal error stopped this job; the worker's log has the details."
