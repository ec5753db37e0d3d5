"""Schema through Alembic only, on SQLite and PostgreSQL (fresh schema): tables, indexes,
constraints, JSON round trips."""
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

import servicekit as kit
from db import session as db_session
from db.models import Batch, Job, new_id, new_ids


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'x' / 'vidclass.db'}"
        return
    pg = kit.postgres_schema_url()
    if pg is None:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    url, schema = pg
    yield url
    db_session.get_engine(url).dispose()
    kit.drop_postgres_schema(schema)


def test_migrations_create_the_schema(database_url):
    assert db_session.current_revision(database_url) is None
    db_session.upgrade(database_url)
    db_session.upgrade(database_url)          # idempotent
    assert db_session.current_revision(database_url) == "0007_model_versions"
    insp = inspect(db_session.get_engine(database_url))
    assert {"jobs", "batches", "api_keys", "callbacks", "alembic_version"} <= set(insp.get_table_names())
    indexes = {i["name"] for i in insp.get_indexes("jobs")}
    # (sort column, id) for every history sort, for keyset pages.
    assert {"ix_jobs_created_id", "ix_jobs_confidence_id", "ix_jobs_label_id", "ix_jobs_status_id",
            "ix_jobs_status_created", "ix_jobs_label_created", "ix_jobs_batch_status"} <= indexes
    columns = {c["name"] for c in insp.get_columns("jobs")}
    for needed in ("batch_id", "source_kind", "source", "status", "progress", "stage_timings", "label",
                   "confidence", "probabilities", "subcategory", "member_probabilities", "agreement",
                   "model_version", "pipeline_version", "error_code", "error_message", "attempts",
                   "created_at", "started_at", "finished_at", "idempotency_key", "callback_url",
                   "thumbnails_count", "thumbnail_paths", "heartbeat_at"):
        assert needed in columns


def test_rows_round_trip_and_idempotency_key_is_unique(database_url):
    db_session.upgrade(database_url)
    batch_id, job_id = new_id(), new_id()
    with db_session.session_scope(database_url) as s:
        s.add(Batch(id=batch_id, total=1, invalid_lines=[{"line": 2, "value": "x", "code": "bad_url",
                                                          "message": "no"}]))
        s.flush()
        s.add(Job(id=job_id, batch_id=batch_id, source_kind="url", source="https://e.org/a.mp4",
                  idempotency_key="key-1", probabilities={"Gaming": 0.75, "Animation": 0.25},
                  member_probabilities=[{"Gaming": 0.5}], stage_timings={"download_s": 0.5}))
    with db_session.session_scope(database_url) as s:
        job = s.get(Job, job_id)
        assert job.status == "queued" and job.attempts == 0 and job.progress == 0
        assert job.probabilities == {"Gaming": 0.75, "Animation": 0.25}
        assert job.to_dict()["stage_timings"] == {"download_s": 0.5}
        assert s.get(Batch, batch_id).invalid_lines[0]["code"] == "bad_url"
    with pytest.raises(IntegrityError):
        with db_session.session_scope(database_url) as s:
            s.add(Job(source_kind="url", source="https://e.org/b.mp4", idempotency_key="key-1"))
    with db_session.session_scope(database_url) as s:
        assert s.execute(select(Job).where(Job.idempotency_key == "key-1")).scalar_one().id == job_id


def test_new_ids_are_unique_uuid4():
    import uuid

    ids = new_ids(1000)
    assert len(set(ids)) == 1000 and all(uuid.UUID(i).version == 4 for i in ids)


def test_config_doc_lists_every_setting():
    """docs/CONFIG.md holds settings.markdown_table() verbatim (regenerate it when this fails)."""
    from db import settings

    doc = (Path(__file__).resolve().parent.parent / "docs" / "CONFIG.md").read_text()
    assert settings.markdown_table() in doc
