"""A project's working context: settings, metadata store, content store, project file."""

from __future__ import annotations

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

        return open_metadata_store(self.settings.database_url)

    @cached_property
    def content(self) -> ContentStore:
        from cairn.store import ContentStore, open_blob_store

        return ContentStore(open_blob_store(self.settings.store_url))

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
