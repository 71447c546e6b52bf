"""Dataset versions from folders: ``cairn dataset add``.

Versions made by steps come from their output metadata: see
:mod:`cairn.runtime.output_metadata`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cairn.entities import DatasetVersion

if TYPE_CHECKING:
    from cairn.orchestration.context import Context
    from cairn.store.base import MetadataStore
    from cairn.store.cas import TreeInfo

Progress = Callable[[int, int | None, int, int | None], None]


def find_version(ctx: Context, dataset: str, version: str) -> DatasetVersion:
    """``dataset://dataset/version`` (``latest``: the newest), read without opening the
    metadata store where the backend allows (see :func:`cairn.store.peek_dataset_version`)."""
    if "store" not in ctx.__dict__:
        from cairn.store import peek_dataset_version

        found = peek_dataset_version(ctx.settings.database_url, ctx.settings.project_name,
                                     dataset, version)
        if found is not None:
            return found
    return ctx.store.get_dataset_version(ctx.project_id, dataset, version)


def add_folder(ctx: Context, name: str, folder: Path, *, version: str | None = None,
               progress: Progress | None = None, link: bool = False) -> DatasetVersion:
    """Version a folder as ``dataset://name/version`` (next vN when not named).

    ``link`` hardlinks the files into the store instead of copying them, making the
    originals read-only (see :func:`cairn.store.folders.version_folder`).
    """
    from cairn.orchestration import overlap

    job = None
    if "store" not in ctx.__dict__ and overlap.can_fork():
        # Hash and store the files in a child while this process imports the database
        # layer and opens the store, on another core.
        try:
            job = overlap.start(lambda check: _version(ctx, folder, _checked(progress, check),
                                                       link))
        except OSError:  # no process to spare (fork refused): do it all here
            job = None
    if job is None:
        store = ctx.store
        _check_name_early(store, ctx.project_id, name, version)
        info = _version(ctx, folder, progress, link)
    else:
        with job:
            store = ctx.store
            _check_name_early(store, ctx.project_id, name, version)  # cancels the child
            info = job.result()
        if progress is not None:  # the child drew the bar: draw its last state here too
            progress(info.file_count, info.file_count, info.size, info.size)
    version = version or store.next_version_name(ctx.project_id, name)
    latest = _latest(store, ctx.project_id, name)
    return store.create_dataset_version(
        ctx.project_id, name, version, tree_digest=info.tree_digest,
        file_count=info.file_count, size=info.size, source="upload",
        from_version=latest.version if latest else None,
        metadata={"folder": str(folder.resolve()), **({"linked": True} if link else {})},
    )


def _version(ctx: Context, folder: Path, progress: Progress | None, link: bool) -> TreeInfo:
    from cairn.store.folders import version_folder
    from cairn.store.hashcache import HashCache

    with HashCache(ctx.settings.cache_dir / "hashes") as cache:
        return version_folder(folder, ctx.content, progress=progress, hash_cache=cache,
                              link=link)


def _checked(progress: Progress | None, check: Callable[[], None]) -> Progress:
    """``progress`` that first runs ``check`` (which stops an orphaned child)."""
    def report(files: int, files_total: int | None, done: int, total: int | None) -> None:
        check()
        if progress is not None:
            progress(files, files_total, done, total)
    return report


def _check_name_early(store: MetadataStore, project_id: str, name: str,
                      version: str | None) -> None:
    """Refuse an existing version before spending time hashing a big folder."""
    if version is None:
        return
    from cairn.errors import ConflictError, NotFoundError

    try:
        store.get_dataset_version(project_id, name, version)
    except NotFoundError:
        return
    raise ConflictError(f"dataset version {name}/{version} already exists",
                        "versions are immutable: pick a new version name")


def _latest(store: MetadataStore, project_id: str, name: str) -> DatasetVersion | None:
    from cairn.errors import NotFoundError

    try:
        return store.get_dataset_version(project_id, name, "latest")
    except NotFoundError:
        return None
