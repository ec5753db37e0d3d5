"""The Celery application. Importing it imports neither torch nor the tasks' ML code.

The API publishes by task NAME (`send_task`), so it never imports worker.tasks either. Queues:
  download  URL jobs not yet downloaded: I/O bound, served by many threads, no model loaded. The
            file goes to DOWNLOAD_DIR (shared storage), then the job is published to `classify`.
  classify  jobs whose video is on shared storage (downloads, uploads) and test-set names: the
            ensemble is loaded once per worker process (one per GPU, a few per CPU machine).
  fast      requests someone waits on: test-set names, classify-by-name, the model version
  train     retraining a model version from users' corrections (worker/retrain.py): a minute or
            two of CPU in a child process, served by the classification worker.
  jobs      the single queue of older versions; a message left there is routed to its stage.
"""
from __future__ import annotations

from celery import Celery

from db import settings

DOWNLOAD_QUEUE = "download"
CLASSIFY_QUEUE = "classify"
FAST_QUEUE = "fast"
TRAIN_QUEUE = "train"
JOBS_QUEUE = "jobs"          # legacy: drained by workers that serve it (the default set does)
QUEUES = (DOWNLOAD_QUEUE, CLASSIFY_QUEUE, FAST_QUEUE, TRAIN_QUEUE, JOBS_QUEUE)
# Queues whose tasks need the ensemble: a worker serving none of them never imports torch.
MODEL_QUEUES = (CLASSIFY_QUEUE, FAST_QUEUE)

DOWNLOAD_JOB = "vidclass.download_job"
CLASSIFY_JOB = "vidclass.classify_job"
PROCESS_JOB = "vidclass.process_job"       # legacy name: routes the job to its stage's queue
SEND_CALLBACK = "vidclass.send_callback"
CLASSIFY_NAME = "vidclass.fast.classify_name"
LIST_VIDEOS = "vidclass.fast.list_videos"
MODEL_INFO = "vidclass.fast.model_info"
RETRAIN_MODEL = "vidclass.retrain_model"


def visibility_timeout_s() -> int:
    """Longer than the longest allowed job, so Redis never re-delivers a job that is still running."""
    return int(settings.get("JOB_TIMEOUT_S")) * 2 + 600


def make_app(broker_url: str | None = None) -> Celery:
    url = broker_url or settings.redis_url()
    app = Celery("vidclass")
    transport = {"visibility_timeout": visibility_timeout_s()}
    if settings.get("REDIS_PREFIX"):
        transport["global_keyprefix"] = settings.get("REDIS_PREFIX")
    app.conf.update(
        broker_url=url,
        result_backend=url,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        # A job is acknowledged only when it ends; a SIGKILLed worker process's job is re-queued.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=CLASSIFY_QUEUE,
        task_routes={DOWNLOAD_JOB: {"queue": DOWNLOAD_QUEUE}, CLASSIFY_JOB: {"queue": CLASSIFY_QUEUE},
                     PROCESS_JOB: {"queue": JOBS_QUEUE}, SEND_CALLBACK: {"queue": DOWNLOAD_QUEUE},
                     RETRAIN_MODEL: {"queue": TRAIN_QUEUE},
                     "vidclass.fast.*": {"queue": FAST_QUEUE}},
        result_expires=3600,
        # Loading the ensemble in worker_process_init takes seconds; Celery's default is 4 s.
        worker_proc_alive_timeout=300,
        worker_hijack_root_logger=False,
        imports=("worker.tasks", "worker.retrain"),
    )
    return app


app = make_app()
