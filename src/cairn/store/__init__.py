"""Storage: metadata (SQL) and artifacts (content-addressed blobs).

``open_metadata_store(url)`` and ``open_blob_store(url)`` pick a backend by URL scheme from
their registries; an unknown scheme fails loudly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cairn.store.base import MetadataStore, NewExecution
from cairn.store.blobs import BlobStore, open_blob_store
from cairn.store.cas import ContentStore

if TYPE_CHECKING:
    from cairn.entities import DatasetVersion

__all__ = [
    "BlobStore",
    "ContentStore",
    "MetadataStore",
    "NewExecution",
    "open_blob_store",
    "open_metadata_store",
    "peek_dataset_version",
]


def open_metadata_store(url: str) -> MetadataStore:
    """Open the metadata store at ``url`` (``sqlite:///path`` or ``postgresql://...``)."""
    from cairn.store.sql.store import SqlMetadataStore

    return SqlMetadataStore(url)


def peek_dataset_version(url: str, project: str, dataset: str,
                         version: str) -> DatasetVersion | None:
    """``dataset://dataset/version`` read without opening the metadata store at ``url``,
    where a backend can do that quickly; None: open the store and ask it."""
    if url.startswith("sqlite:"):
        from cairn.store.sql.quick import dataset_version

        return dataset_version(url, project, dataset, version)
    return None
