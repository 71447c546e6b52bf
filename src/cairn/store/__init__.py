"""Storage: metadata (SQL) and artifacts (content-addressed blobs).

``open_metadata_store(url)`` and ``open_blob_store(url)`` pick a backend by URL scheme from
their registries; an unknown scheme fails loudly.
"""

from __future__ import annotations

from cairn.store.base import MetadataStore, NewExecution
from cairn.store.blobs import BlobStore, open_blob_store
from cairn.store.cas import ContentStore

__all__ = [
    "BlobStore",
    "ContentStore",
    "MetadataStore",
    "NewExecution",
    "open_blob_store",
    "open_metadata_store",
]


def open_metadata_store(url: str) -> MetadataStore:
    """Open the metadata store at ``url`` (``sqlite:///path`` or ``postgresql://...``)."""
    from cairn.store.sql.store import SqlMetadataStore

    return SqlMetadataStore(url)
