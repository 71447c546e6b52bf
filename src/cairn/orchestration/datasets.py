"""Dataset versions from folders: ``cairn dataset add`` and ``cairn dataset status``.

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
    from cairn.store.folders import Rewalk, TreeDiff

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
               progress: Progress | None = None,
               link: bool = False) -> tuple[DatasetVersion, bool]:
    """Version a folder as ``dataset://name/version`` (next vN when not named).

    Returns the version and whether it is new: without ``version``, a folder that holds
    what the dataset's latest version holds makes no new version (that one is returned).
    ``link`` hardlinks the files into the store instead of copying them, making the
    originals read-only (see :func:`cairn.store.folders.version_folder`).
    """
    from cairn.orchestration import overlap
    from cairn.store import add_dataset_version_quickly, can_add_quickly, peek_dataset_version
    from cairn.store.sql.names import check_dataset_names

    check_dataset_names(name, version or "v1")  # before hashing what could not be named
    url, project = ctx.settings.database_url, ctx.settings.project_name
    opened = "store" in ctx.__dict__
    walked = None
    if version is None and not opened:
        # Most often a folder is added again unchanged, and then nothing is to be written:
        # compare it with the latest version by a stat walk, before (and mostly instead
        # of) opening the metadata store.
        latest = _peek_latest(ctx, name)
        if latest is not None:
            walked = _rewalk(ctx, folder, latest.tree_digest, progress)
            if walked is not None and walked.unchanged:
                return latest, False
    metadata = {"folder": str(folder.resolve()), **({"linked": True} if link else {})}
    if not opened and can_add_quickly(url, project) and (
            version is None or peek_dataset_version(url, project, name, version) is None):
        # The database takes the version without SQLAlchemy (the embedded SQLite of a
        # project made before): nothing to overlap, the folder is versioned here.
        info = _version(ctx, folder, progress, link, walked)
        added = add_dataset_version_quickly(
            url, project, name, version, tree_digest=info.tree_digest,
            file_count=info.file_count, size=info.size, metadata=metadata)
        if added is not None:
            return added
        store = ctx.store
        _check_name_early(store, ctx.project_id, name, version)
    else:
        job = None
        if not opened and overlap.can_fork():
            # Hash and store the files in a child while this process imports the database
            # layer and opens the store, on another core.
            try:
                job = overlap.start(lambda check: _version(
                    ctx, folder, _checked(progress, check), link, walked))
            except OSError:  # no process to spare (fork refused): do it all here
                job = None
        if job is None:
            store = ctx.store
            _check_name_early(store, ctx.project_id, name, version)
            info = _version(ctx, folder, progress, link, walked)
        else:
            with job:
                store = ctx.store
                _check_name_early(store, ctx.project_id, name, version)  # cancels the child
                info = job.result()
            if progress is not None:  # the child drew the bar: draw its last state here too
                progress(info.file_count, info.file_count, info.size, info.size)
    latest = _latest(store, ctx.project_id, name)
    if version is None and latest is not None and latest.tree_digest == info.tree_digest:
        return latest, False
    made = store.create_dataset_version(
        ctx.project_id, name, version or store.next_version_name(ctx.project_id, name),
        tree_digest=info.tree_digest, file_count=info.file_count, size=info.size,
        source="upload", from_version=latest.version if latest else None, metadata=metadata)
    return made, True


def folder_status(ctx: Context, name: str, folder: Path, *, version: str = "latest",
                  progress: Progress | None = None) -> tuple[DatasetVersion, TreeDiff]:
    """What changed in ``folder`` since ``dataset://name/version``; stores nothing.

    Files the last add of this folder saw unchanged cost a ``stat`` (the hash cache
    vouches for them); the others are hashed.
    """
    from cairn.store.folders import folder_diff
    from cairn.store.hashcache import HashCache

    v = find_version(ctx, name, version)
    with HashCache(ctx.settings.cache_dir / "hashes") as cache:
        return v, folder_diff(v.tree_digest, folder, ctx.content, cache, progress)


def _peek_latest(ctx: Context, name: str) -> DatasetVersion | None:
    from cairn.store import peek_dataset_version

    return peek_dataset_version(ctx.settings.database_url, ctx.settings.project_name, name,
                                "latest")


def _rewalk(ctx: Context, folder: Path, tree: str, progress: Progress | None) -> Rewalk | None:
    """The folder compared with ``tree``, if it was last versioned as that tree."""
    import os

    from cairn.store.folders import rewalk
    from cairn.store.hashcache import HashCache

    cache = HashCache(ctx.settings.cache_dir / "hashes")
    last = cache.last_tree(os.path.realpath(folder))
    if last is None or last.tree != tree:
        return None
    return rewalk(folder, ctx.content, cache, progress)


def _version(ctx: Context, folder: Path, progress: Progress | None, link: bool,
             walked: Rewalk | None = None) -> TreeInfo:
    from cairn.store.folders import version_folder
    from cairn.store.hashcache import HashCache

    with HashCache(ctx.settings.cache_dir / "hashes") as cache:
        return version_folder(folder, ctx.content, progress=progress, hash_cache=cache,
                              link=link, walked=walked)


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
