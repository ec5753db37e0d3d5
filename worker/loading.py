"""The ensemble and the test-set name index, loaded once per worker process.

The ensemble loads after fork, in a thread of each pool process that serves a model queue
(worker_process_init); the name list never waits for it. This module is imported by the Celery
parent process too, so it must not import torch at module level.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from celery.signals import worker_process_init

from db import session as db_session
from worker import celery_app as names
from worker import health_keys, model_versions
from worker.celery_app import app

log = logging.getLogger(__name__)

_state: dict = {"classifier": None, "load_error": None, "loader": None, "test_set": None}
_load_lock = threading.RLock()       # the ensemble load
_names_lock = threading.Lock()       # the name index (never waits for the load)


def serves_model_queues() -> bool:
    """Whether this worker consumes a queue whose tasks need the ensemble (-Q as selected by the
    worker before its pool forked; no selection means every queue)."""
    selected = set(app.amqp.queues.consume_from or ())
    return not selected or bool(selected & set(names.MODEL_QUEUES))


@worker_process_init.connect
def _start_loading(**_):
    """Runs in every pool child after fork: fresh db connections, then, on workers that classify,
    the ensemble loads in a thread of this child (a download-only worker never imports torch).
    The child takes tasks at once: the test-set name list needs only the name index (no torch, no
    model) and answers while torch and the ensemble load (seconds, more on a busy machine); tasks
    that need the model wait for the load in _classifier()."""
    db_session.dispose_all()
    if not serves_model_queues():
        return
    loader = threading.Thread(target=_load_classifier, name="vidclass-model-load", daemon=True)
    _state["loader"] = loader
    loader.start()


def _load_classifier() -> None:
    """The ensemble, once per process, on the device CLASSIFY_DEVICE picks (worker/accel.py).
    On the CPU the shipped model runs in numpy and the nets in ONNX Runtime: no torch is imported
    unless a member or net needs it (then here, in the child, never in the parent), on one thread."""
    with _load_lock:
        if _state["classifier"] is not None:
            return
        os.environ.setdefault("VIDCLASS_TORCH_THREADS", "1")
        from vidclass.model.classify import Classifier

        from worker import accel

        classifier = Classifier()
        try:
            accel.configure(classifier)
            ensemble = classifier.ensemble
            model_versions.record_shipped(ensemble)
            health_keys.publish_model(ensemble.version, ensemble.pipeline.to_dict(),
                                      len(ensemble.members), worker_name(), runtime_of(classifier))
        except Exception as exc:      # no models yet: jobs fail with a clear reason instead
            log.error("could not load the ensemble: %s", exc)
            _state["load_error"] = exc
        _state["classifier"] = classifier


def runtime_of(classifier) -> dict:
    """Where classification runs, chosen at start (loads the nets now rather than at the first job)."""
    from vidclass.model.numpy_linear import NumpyMember

    extractor = classifier.extractor
    nets = {"backbone": extractor.backbone}
    if extractor.drawing_net is not None:
        nets["drawing_net"] = extractor.drawing_net
    return {"device": classifier.device or "cpu",
            "members": "numpy" if all(isinstance(m, NumpyMember) for m in classifier.ensemble.members) else "torch",
            **{name: net.runtime for name, net in nets.items()},
            "providers": sorted({p for net in nets.values() if getattr(net, "session", None) is not None
                                 for p in net.session.get_providers()})}


def classifier():
    """This process's classifier, on the active model version (worker/model_versions.py)."""
    loader = _state["loader"]
    if loader is not None and loader.is_alive():
        loader.join()                     # the load started at process init
    if _state["classifier"] is None:      # e.g. a solo/threads pool: no worker_process_init
        _load_classifier()
    if _state["load_error"] is not None:
        # Retry the load: the operator may have put the models in place since.
        try:
            _state["classifier"].ensemble
            _state["load_error"] = None
        except Exception:
            raise _state["load_error"]
    current = _state["classifier"]
    if model_versions.use_active(current):
        ensemble = current.ensemble
        health_keys.publish_model(ensemble.version, ensemble.pipeline.to_dict(), len(ensemble.members),
                                  worker_name(), runtime_of(current))
    return current


def test_set():
    """The test-set name index alone: no model and no torch, so names answer before the ensemble
    has loaded (and whether or not it can)."""
    with _names_lock:
        if _state["test_set"] is None:
            from vidclass.model.name_index import TestSet

            _state["test_set"] = TestSet()
        return _state["test_set"]


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
