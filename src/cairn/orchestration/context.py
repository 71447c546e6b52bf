"""A project's working context: settings, metadata store, content store, project file."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from cairn.settings import Settings

if TYPE_CHECKING:
    from cairn.entities import Project
    from cairn.project import ProjectConfig
    from cairn.store.base import MetadataStore
    from cairn.store.cas import ContentStore


class Context:
    """Everything a command needs, opened lazily so cheap commands stay cheap."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def load(cls, project_root: Path | str | None = None, **overrides: object) -> Context:
        return cls(Settings.load(project_root, **overrides))

    @cached_property
    def store(self) -> MetadataStore:
        from cairn.store import open_metadata_store

        self._prepare_data_dir()
        return open_metadata_store(self.settings.database_url)

    def _prepare_data_dir(self) -> None:
        """Create the data folder, ignored by git so snapshots and commits never hold it."""
        data_dir = self.settings.data_dir
        ignore = data_dir / ".gitignore"
        if ignore.exists():
            return
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            config = data_dir / "config.toml"
            if not config.exists():
                # Pin the project's name so that renaming the folder keeps its history.
                config.write_text(f"project_name = {json.dumps(self.settings.project_name)}\n")
            ignore.write_text("# cairn's data: metadata, blobs, logs. Not for git.\n*\n")
        except OSError as exc:
            from cairn.errors import StoreNotWritableError

            raise StoreNotWritableError(
                f"cannot write the cairn data folder {data_dir}: {exc.strerror or exc}",
                "check the folder's permissions, or set CAIRN_DATA_DIR to a writable folder",
            ) from exc

    @cached_property
    def content(self) -> ContentStore:
        from cairn.store import ContentStore, open_blob_store

        return ContentStore(open_blob_store(
            self.settings.store_url, cache_dir=self.settings.cache_dir / "blobs",
            cache_max_bytes=self.settings.cache_max_bytes))

    @cached_property
    def project(self) -> Project:
        return self.store.ensure_project(self.settings.project_name)

    @property
    def project_id(self) -> str:
        return self.project.id

    @cached_property
    def config(self) -> ProjectConfig:
        """The parsed project file (raises ProjectError / ProjectNotFoundError)."""
        from cairn.project import load_project

        return load_project(self.settings.project_root)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
