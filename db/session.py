"""Engine and sessions from DATABASE_URL, and the Alembic upgrade the CLI runs."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from threading import Lock

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from db import settings

_lock = Lock()
_engines: dict[str, Engine] = {}
_makers: dict[str, sessionmaker] = {}


def database_url(url: str | None = None) -> str:
    return url or settings.get("DATABASE_URL")


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL and process (engines are not shared across fork: see dispose_all)."""
    url = database_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=settings.get("DB_POOL_SIZE"),
                             max_overflow=settings.get("DB_MAX_OVERFLOW"))
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):
        # WAL lets the API read while workers write; NORMAL sync is durable across process
        # crashes (not power loss) and keeps a commit well under a millisecond.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def get_sessionmaker(url: str | None = None) -> sessionmaker:
    url = database_url(url)
    with _lock:
        maker = _makers.get(url)
    if maker is None:
        maker = sessionmaker(bind=get_engine(url), expire_on_commit=False)
        with _lock:
            _makers[url] = maker
    return maker


@contextmanager
def session_scope(url: str | None = None):
    """A session committed on success and rolled back on error."""
    session: Session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all() -> None:
    """Drop pooled connections inherited across fork (Celery calls this in each child)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()
        _makers.clear()


def alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config(str(settings.REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(settings.REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply the Alembic migrations: the only way the schema is created or changed."""
    import logging

    # Alembic's per-plugin INFO lines (logged at import) are noise at every `vidclass up`.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command

    url = database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The schema revision the database is at (for /api/health)."""
    from sqlalchemy import text

    with get_engine(url).connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:
            return None
