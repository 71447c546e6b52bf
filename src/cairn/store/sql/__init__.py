"""The SQL metadata store (SQLite by default, PostgreSQL for teams).

``SqlMetadataStore`` lives in :mod:`cairn.store.sql.store`; it is imported from there
(not here) so that ``cairn.store.sql.schema`` stays importable without the store.
"""
