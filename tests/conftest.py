"""Shared fixtures: a fresh store per test on SQLite and on PostgreSQL, and a movable clock.

PostgreSQL comes from SYNCD_TEST_PG_URL (default: the local server CI runs). Each test gets its own
schema. Without a reachable server the PostgreSQL cases skip with one clear reason, except under
CI=true, where they fail: CI must test both stores.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from syncd.clock import ManualClock
from syncd.store import db

PG_URL = os.environ.get("SYNCD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_problem: str | None = None
_pg_checked = False


def _postgres_unavailable() -> str | None:
    global _pg_problem, _pg_checked
    if not _pg_checked:
        _pg_checked = True
        try:
            engine = db.open_engine(PG_URL, pool_size=1)
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:  # any failure to connect means "no server here"
            _pg_problem = f"PostgreSQL at {PG_URL} is not reachable ({type(exc).__name__}); set SYNCD_TEST_PG_URL"
    return _pg_problem


class StoreHandle:
    """A migrated, empty store: its URL, engine and session factory."""

    def __init__(self, url: str, engine, kind: str):
        self.url = url
        self.engine = engine
        self.kind = kind
        self.sessions = db.session_factory(engine)

    def transaction(self):
        return db.transaction(self.sessions)


def _pg_schema_url(schema: str) -> str:
    separator = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{separator}options=-csearch_path%3D{schema}"


@contextmanager
def _empty_database(kind: str, tmp_path):
    """A URL to an empty database of the given kind (no schema yet), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'syncd.db'}"
        return
    problem = _postgres_unavailable()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = db.open_engine(PG_URL, pool_size=1)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def _migrated_store(url: str):
    engine = db.open_engine(url, pool_size=5)
    db.upgrade(engine)
    try:
        yield StoreHandle(url, engine, engine.dialect.name)
    finally:
        engine.dispose()


@pytest.fixture
def empty_store_url(request, tmp_path):
    """A URL to an empty database, on SQLite and on PostgreSQL (parametrized)."""
    with _empty_database(request.param, tmp_path) as url:
        yield url


def pytest_generate_tests(metafunc):
    if "empty_store_url" in metafunc.fixturenames:
        metafunc.parametrize("empty_store_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def store(empty_store_url):
    """A migrated store, on SQLite and on PostgreSQL."""
    with _migrated_store(empty_store_url) as handle:
        yield handle


@pytest.fixture
def postgres_store(tmp_path):
    """A migrated store on PostgreSQL only, for what only PostgreSQL does (replicas, locks)."""
    with _empty_database("postgresql", tmp_path) as url, _migrated_store(url) as handle:
        yield handle


@pytest.fixture
def clock():
    return ManualClock()
