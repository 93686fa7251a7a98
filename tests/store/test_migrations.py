"""The schema is created, rolled back and re-created by the shipped migrations, on both stores."""

import pytest
from sqlalchemy import inspect

from syncd.store import db

TABLES = {"incident", "link", "comment", "comment_link", "timeline_entry", "outbox", "sync_cursor"}


def test_upgrade_from_empty_creates_every_table(empty_store_url):
    engine = db.open_engine(empty_store_url)
    assert db.current_revision(engine) is None
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    assert TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_downgrade_to_base_then_upgrade_again(empty_store_url):
    engine = db.open_engine(empty_store_url)
    db.upgrade(engine)
    db.downgrade(engine, "base")
    assert db.current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()


def test_an_out_of_date_schema_is_refused_unless_auto_upgrade(empty_store_url):
    engine = db.open_engine(empty_store_url)
    with pytest.raises(db.SchemaOutOfDate, match="syncd db upgrade"):
        db.ensure_schema(engine, auto_upgrade=False)
    assert db.current_revision(engine) is None      # refusing changed nothing
    db.ensure_schema(engine, auto_upgrade=True)
    assert db.current_revision(engine) == db.head_revision()
    db.ensure_schema(engine, auto_upgrade=False)    # up to date: accepted
    engine.dispose()


def test_a_schema_from_an_unknown_newer_syncd_is_refused(empty_store_url):
    engine = db.open_engine(empty_store_url)
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(db.SchemaOutOfDate, match="9999"):
        db.ensure_schema(engine, auto_upgrade=False)
    engine.dispose()


def test_the_migrations_build_exactly_the_schema_the_models_describe(empty_store_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from syncd.store.base import Base, import_all_models
    import_all_models()
    engine = db.open_engine(empty_store_url)
    db.upgrade(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == [], "models and migrations disagree: add a migration"
