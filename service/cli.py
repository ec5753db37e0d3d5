"""Service commands of the `vidclass` CLI: db upgrade, keys, worker, api, up, flower, retrain, models,
export-labels.

The core CLI finds `register` through the `vidclass.commands` entry point. Imports stay inside
the command functions so `vidclass --help` does not load Flask or Celery.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from service.supervisor import cmd_up
from service.processes import (ALL_QUEUES, api_argv, api_env, default_concurrency, flower_argv, port_problem,
                               refuse_port, resolve_port, worker_argv)


def register(subparsers) -> None:
    db = subparsers.add_parser("db", help="job database schema (Alembic migrations)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply the migrations to DATABASE_URL")
    up.add_argument("--database-url", help="default: DATABASE_URL or instance/vidclass.db")
    up.set_defaults(func=cmd_db_upgrade)

    k = subparsers.add_parser("keys", help="API keys (write and export endpoints need one once any exists)")
    k_sub = k.add_subparsers(dest="keys_command", required=True)
    kc = k_sub.add_parser("create", help="create a key and print it (shown only this once)")
    kc.add_argument("--name", default="", help="what the key is for")
    kc.add_argument("--scope", default="write", choices=("read", "write", "admin"),
                    help="read: reads and exports; write: also submit, cancel, correct, delete (default); "
                         "admin: also retrain, promote and roll back models")
    kc.set_defaults(func=cmd_keys_create)
    kl = k_sub.add_parser("list", help="list keys (never the keys themselves)")
    kl.add_argument("--all", action="store_true", help="include revoked keys")
    kl.set_defaults(func=cmd_keys_list)
    kr = k_sub.add_parser("revoke", help="revoke a key by its id or shown prefix")
    kr.add_argument("key", help="id (or its start) or prefix, as `vidclass keys list` shows")
    kr.set_defaults(func=cmd_keys_revoke)
    for p in (kc, kl, kr):
        p.add_argument("--database-url", help="default: DATABASE_URL or instance/vidclass.db")

    w = subparsers.add_parser(
        "worker", help="run a Celery worker: --queues download (threads, no model), classify "
                       "(the model, one process per GPU or a few per CPU machine) and/or fast")
    w.add_argument("--concurrency", "-c", type=int, default=None,
                   help="threads of a download-only worker (default DOWNLOAD_CONCURRENCY), else "
                        "processes (default WORKER_CONCURRENCY)")
    w.add_argument("--queues", "-Q", default=",".join(ALL_QUEUES),
                   help=f"comma-separated queues to serve, of {', '.join(ALL_QUEUES)} "
                        f"(default all: one worker does everything)")
    w.add_argument("--pool", "-P", default=None, choices=("prefork", "threads", "solo"),
                   help="default: threads for a download-only worker, else prefork")
    w.add_argument("--name", "-n", default=None, help="Celery node name, e.g. w1@%%h")
    w.add_argument("--loglevel", "-l", default="info")
    w.set_defaults(func=cmd_worker)

    f = subparsers.add_parser("flower", help="Flower, the Celery monitoring UI for operators")
    f.add_argument("--address", default="127.0.0.1")
    f.add_argument("--port", type=int, default=5555)
    f.set_defaults(func=cmd_flower)

    a = subparsers.add_parser("api", help="serve the HTTP API and web UI with gunicorn")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=None, help="default VIDCLASS_PORT (5000)")
    a.add_argument("--processes", type=int, default=2, help="gunicorn worker processes")
    a.add_argument("--threads", type=int, default=4, help="threads per gunicorn process")
    a.set_defaults(func=cmd_api)

    u = subparsers.add_parser("up", help="everything: migrations, Redis (embedded unless REDIS_URL), "
                                         "workers and the API; Ctrl-C stops it all")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=None, help="default VIDCLASS_PORT (5000)")
    u.add_argument("--workers", type=int, default=None,
                   help="job worker processes (default WORKER_CONCURRENCY=2)")
    u.set_defaults(func=cmd_up)

    r = subparsers.add_parser(
        "retrain", help="queue a retrain from users' corrections on the workers: a candidate model version",
        description="Queue a training job (the `train` queue, served by the classification worker): the "
                    "corpus's clip vectors plus every corrected job whose features match the active model, "
                    "evaluated beside the active model on the corpus's family folds and on corrections held "
                    "out by source group. Then `vidclass models list` and `vidclass models promote ID`.")
    r.add_argument("--note", help="what this retrain is for (shown in the list)")
    r.add_argument("--wait", action="store_true", help="wait for it to finish and print its evaluation")
    r.add_argument("--database-url", help="default: DATABASE_URL or instance/vidclass.db")
    r.set_defaults(func=cmd_retrain)

    m = subparsers.add_parser("models", help="model versions: list, show, promote, rollback")
    m_sub = m.add_subparsers(dest="models_command", required=True)
    ml = m_sub.add_parser("list", help="every version with its status and evaluation beside its parent")
    ml.set_defaults(func=cmd_models_list)
    ms = m_sub.add_parser("show", help="one version's training data and evaluation (JSON)")
    ms.add_argument("id", type=int)
    ms.set_defaults(func=cmd_models_show)
    mp = m_sub.add_parser("promote", help="make a candidate the active model (workers switch before their next task)")
    mp.add_argument("id", type=int)
    mp.add_argument("--force", action="store_true", help="promote even when it is worse than the active model "
                                                         "by more than PROMOTE_MARGIN")
    mp.set_defaults(func=cmd_models_promote)
    mr = m_sub.add_parser("rollback", help="return to the version the active one replaced")
    mr.set_defaults(func=cmd_models_rollback)
    for p in (ml, ms, mp, mr):
        p.add_argument("--database-url", help="default: DATABASE_URL or instance/vidclass.db")

    e = subparsers.add_parser(
        "export-labels", help="the jobs users corrected (PUT /api/jobs/<id>/label) as a labelled set",
        description="Write the videos of corrected jobs as OUT_DIR/{Category}/user_labelled/<file> "
                    "plus OUT_DIR/MANIFEST.tsv, a data folder `vidclass extract` reads. Only uploads "
                    "whose file is still on disk can be written; URL jobs are not downloaded again and "
                    "test-set jobs are already labelled: those are listed as skipped.")
    e.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if missing)")
    e.add_argument("--database-url", help="default: DATABASE_URL or instance/vidclass.db")
    e.set_defaults(func=cmd_export_labels)


def _models_call(args, action):
    """Run api.models' `action(session)` on the database; its refusals print as messages."""
    from api.errors import ApiError
    from db import session

    session.upgrade(args.database_url)
    try:
        with session.session_scope(args.database_url) as s:
            return action(s)
    except ApiError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return None


def _pct(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "-"


def cmd_retrain(args) -> int:
    import time

    from api import models
    from db import session
    from db.models import ModelVersion
    from worker.celery_app import make_app

    row = _models_call(args, lambda s: models.queue_retrain(s, make_app(), args.note).to_dict())
    if row is None:
        return 1
    print(f"model version {row['id']} queued (retrain from version {row['parent_id']}); "
          f"`vidclass models show {row['id']}` follows it")
    if not args.wait:
        return 0
    while True:
        with session.session_scope(args.database_url) as s:
            now = s.get(ModelVersion, row["id"]).to_dict()
        if now["status"] != "training":
            break
        print(f"\r{now['progress']:3d}%", end="", file=sys.stderr, flush=True)
        time.sleep(2)
    print(file=sys.stderr)
    if now["status"] == "failed":
        print(f"failed: {now['error']}", file=sys.stderr)
        return 1
    gate = now["metrics"]["gate"]
    print(f"candidate {now['id']}: corpus family folds {_pct(gate['candidate_accuracy'])} "
          f"(active {_pct(gate['active_accuracy'])}); "
          + ("may be promoted" if gate["passes"] else "worse than the active model by more than PROMOTE_MARGIN"))
    return 0


def cmd_models_list(args) -> int:
    from sqlalchemy import select

    from db.models import ModelVersion

    def listing(s):
        return [r.to_dict() for r in s.execute(select(ModelVersion).order_by(ModelVersion.id)).scalars()]
    rows = _models_call(args, listing)
    if rows is None:
        return 1
    print(f"{'id':>3}  {'status':9}  {'digest':12}  {'parent':>6}  {'corrections':>11}  {'folds':>6}  "
          f"{'parent':>6}  {'held-out':>8}  created")
    for r in rows:
        m = r.get("metrics") or {}
        gate, corr = m.get("gate") or {}, (m.get("corrections") or {}).get("candidate") or {}
        print(f"{r['id']:>3}  {r['status']:9}  {(r['digest'] or '-'):12}  {r['parent_id'] or '-':>6}  "
              f"{r['training'].get('corrections', '-'):>11}  {_pct(gate.get('candidate_accuracy')):>6}  "
              f"{_pct(gate.get('active_accuracy')):>6}  {_pct(corr.get('accuracy')):>8}  {r['created_at']}")
    print("folds: accuracy on the corpus's family folds, parent: the active model's on the same folds; "
          "held-out: on corrections held out by source group")
    return 0


def cmd_models_show(args) -> int:
    from api import models

    row = _models_call(args, lambda s: models.load_version(s, args.id).to_dict())
    if row is None:
        return 1
    print(json.dumps(row, indent=1))
    return 0


def cmd_models_promote(args) -> int:
    from api import models

    row = _models_call(args, lambda s: models.promote(s, args.id, args.force).to_dict())
    if row is None:
        return 1
    print(f"model version {row['id']} ({row['digest']}) is active; workers switch before their next task")
    return 0


def cmd_models_rollback(args) -> int:
    from api import models

    row = _models_call(args, lambda s: models.rollback(s).to_dict())
    if row is None:
        return 1
    print(f"rolled back: model version {row['id']} ({row['digest']}) is active again")
    return 0


def cmd_db_upgrade(args) -> int:
    from db import session

    session.upgrade(args.database_url)
    print(f"database at revision {session.current_revision(args.database_url)}")
    return 0


def cmd_keys_create(args) -> int:
    from api import auth
    from db import session

    session.upgrade(args.database_url)
    with session.session_scope(args.database_url) as s:
        key, token = auth.create_key(s, args.name, args.scope)
        key_id = key.id
    print(token)
    print(f"key {key_id} created; it is shown only now. Send it as `Authorization: Bearer <key>`. "
          f"Write and export endpoints now need a key.", file=sys.stderr)
    return 0


def cmd_keys_list(args) -> int:
    from sqlalchemy import select

    from db import session
    from db.models import ApiKey

    session.upgrade(args.database_url)
    with session.session_scope(args.database_url) as s:
        keys = s.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars().all()
        hidden = sum(1 for k in keys if k.revoked_at) if not args.all else 0
        print(f"{'id':36}  {'prefix':10}  {'scope':5}  {'created':19}  {'last used':19}  {'state':7}  name")
        for k in keys:
            if k.revoked_at and not args.all:
                continue
            when = lambda t: t.isoformat(sep=" ", timespec="seconds") if t else "-"  # noqa: E731
            print(f"{k.id:36}  {k.prefix:10}  {k.scope:5}  {when(k.created_at):19}  {when(k.last_used_at):19}  "
                  f"{'revoked' if k.revoked_at else 'active':7}  {k.name}")
    if hidden:
        print(f"({hidden} revoked key{'s' if hidden != 1 else ''} not shown: `vidclass keys list --all`)")
    return 0


def cmd_keys_revoke(args) -> int:
    from api import auth
    from db import session
    from db.models import utcnow

    session.upgrade(args.database_url)
    with session.session_scope(args.database_url) as s:
        matches = auth.find_key(s, args.key)
        found = [k for k in matches if k.revoked_at is None]
        if not found:
            why = (f"key {matches[0].id} is already revoked" if matches else
                   f"no key has an id or prefix starting with {args.key!r} (`vidclass keys list --all`)")
            print(why, file=sys.stderr)
            return 1
        if len(found) > 1:
            print(f"{len(found)} active keys match {args.key!r}; give more of the id", file=sys.stderr)
            return 1
        found[0].revoked_at = utcnow()
        print(f"key {found[0].id} revoked")
    return 0


def cmd_worker(args) -> int:
    concurrency = args.concurrency or default_concurrency(args.queues)
    argv = worker_argv(concurrency, args.queues, args.name, args.loglevel, args.pool)
    # exec: signals (Ctrl-C, SIGTERM for a warm shutdown) go straight to Celery.
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_flower(args) -> int:
    os.execv(sys.executable, flower_argv(args.address, args.port))
    return 0  # not reached


def cmd_api(args) -> int:
    from db import session

    port = resolve_port(args)
    problem = port_problem(args.host, port)
    if problem:
        return refuse_port(args.host, port, problem)
    # A database that was never migrated would answer every request with "no such table":
    # bring it to the current schema first, as `vidclass up` does.
    before = session.current_revision()
    session.upgrade()
    after = session.current_revision()
    if before != after:
        print(f"database {session.database_url()} migrated from {before or 'empty'} to {after}", flush=True)
    session.dispose_all()         # no pooled connections inherited across exec
    env = api_env(args.host, os.environ)
    if env.get("VIDCLASS_REQUIRE_KEYS") != os.environ.get("VIDCLASS_REQUIRE_KEYS"):
        print(f"API keys: required: {args.host} is reachable from other hosts (`vidclass keys create` "
              f"makes one; serve on 127.0.0.1 for a keyless local API)", flush=True)
    os.environ.update(env)
    os.execv(sys.executable, api_argv(args.host, port, args.processes, args.threads))
    return 0  # not reached


MANIFEST_COLUMNS = ("path", "category", "subcategory", "source", "group", "origin", "license")


USER_SUBCATEGORY = "user_labelled"


def cmd_export_labels(args) -> int:
    """Corrected jobs -> OUT_DIR/{Category}/user_labelled/<job id>_<file> and MANIFEST.tsv."""
    import csv
    import shutil

    from sqlalchemy import select
    from werkzeug.utils import secure_filename

    from db import session
    from db.models import Job

    out = Path(args.out_dir)
    written, skipped = [], []
    with session.session_scope(args.database_url) as s:
        jobs = s.execute(select(Job).where(Job.true_label.is_not(None))
                         .order_by(Job.labelled_at, Job.id)).scalars().all()
        for job in jobs:
            if job.status != "done":      # a failed job's file may be no video at all
                skipped.append((job, f"the job is {job.status}: only finished jobs teach a label"))
                continue
            if job.source_kind == "url":
                skipped.append((job, "a URL job: its video is not downloaded again"))
                continue
            if job.source_kind != "upload":
                skipped.append((job, f"a {job.source_kind} job: already part of a labelled set"))
                continue
            if not job.file_path or not Path(job.file_path).is_file():
                skipped.append((job, "its uploaded file was deleted when the job finished (the job "
                                     "keeps its clip features, features_pipeline)"))
                continue
            name = f"{job.id[:8]}_{secure_filename(job.source) or 'upload.bin'}"
            rel = Path(job.true_label) / USER_SUBCATEGORY / name
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(job.file_path, out / rel)
            # Each upload its own group: nothing tells two uploads came from one source.
            written.append({"path": rel.as_posix(), "category": job.true_label, "subcategory": USER_SUBCATEGORY,
                            "source": job.source, "group": f"user_upload_{job.id[:8]}",
                            "origin": "user_label", "license": ""})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "MANIFEST.tsv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, MANIFEST_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(written)
    for job, why in skipped:
        print(f"skipped job {job.id} ({job.source}): {why}", file=sys.stderr)
    print(f"{len(written)} corrected video{'' if len(written) == 1 else 's'} written to {out} "
          f"(MANIFEST.tsv); {len(skipped)} skipped. Next: vidclass extract {out} --out FEATURES_DIR")
    return 0
