"""Storage: metadata (SQL) and artifacts (content-addressed blobs).

``open_metadata_store(url)`` and ``open_blob_store(url)`` pick a backend by URL scheme from
their registries; an unknown scheme fails loudly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    "add_dataset_version_quickly",
    "can_add_quickly",
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


def can_add_quickly(url: str, project: str) -> bool:
    """Whether :func:`add_dataset_version_quickly` can most likely record a version of
    ``project`` in the metadata store at ``url`` (decided without opening the store)."""
    if url.startswith("sqlite:"):
        from cairn.store.sql.quick import project_id

        return project_id(url, project) is not None
    return False


def add_dataset_version_quickly(url: str, project: str, dataset: str, version: str | None,
                                **fields: Any) -> tuple[DatasetVersion, bool] | None:
    """Record an uploaded folder's version without opening the metadata store at ``url``,
    where a backend can do that quickly; None: open it and record the version there.
    See :func:`cairn.store.sql.quick.add_dataset_version`."""
    if url.startswith("sqlite:"):
        from cairn.store.sql.quick import add_dataset_version

        return add_dataset_version(url, project, dataset, version, **fields)
    return None
