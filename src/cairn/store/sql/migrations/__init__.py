"""Alembic migration environment of the metadata store (run by ``cairn.store.sql.schema``)."""
