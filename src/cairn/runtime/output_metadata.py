"""What a step's output metadata asks for: aliases and dataset versions.

A step asks with metadata on its outputs (sidecar ``<file>.metadata.json`` or
``cairn.metadata.jsonl`` lines; the ``valohai.`` spellings work too)::

    {"cairn.alias": "best-model"}
    {"cairn.dataset-versions": ["dataset://digits/v2"]}
    {"cairn.dataset-versions": [{"uri": "dataset://digits/v3", "from": "dataset://digits/v2",
                                 "exclude": ["train/3/0012.png"]}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cairn.entities import DatasetVersion, Datum, FileEntry
from cairn.errors import CairnError, ParameterError

if TYPE_CHECKING:
    from cairn.store.base import MetadataStore
    from cairn.store.cas import ContentStore

ALIAS_KEYS = ("cairn.alias", "valohai.alias")
DATASET_KEYS = ("cairn.dataset-versions", "valohai.dataset-versions")


@dataclass
class _Request:
    uri: str
    dataset: str
    version: str
    base: str | None = None
    start_fresh: bool = False
    exclude: set[str] = field(default_factory=set)
    aliases: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    files: list[Datum] = field(default_factory=list)


def apply_output_metadata(
    store: MetadataStore,
    content: ContentStore,
    *,
    project_id: str,
    execution_id: str,
    datums: Sequence[Datum],
) -> list[str]:
    """Move aliases and create dataset versions the outputs ask for.

    Returns one message per request that could not be honoured (the execution then ends
    in error, naming them); what could be done is done.
    """
    problems: list[str] = []
    requests: dict[str, _Request] = {}
    for d in datums:
        for key in ALIAS_KEYS:
            name = d.metadata.get(key)
            if name is None:
                continue
            try:
                store.set_alias(project_id, str(name), d.id, execution_id=execution_id)
            except CairnError as exc:
                problems.append(f"alias {name!r} for {d.name}: {exc.message}")
        for key in DATASET_KEYS:
            for spec in _as_list(d.metadata.get(key)):
                try:
                    request = _parse_request(spec)
                except ParameterError as exc:
                    problems.append(f"{key} of {d.name}: {exc.message}")
                    continue
                existing = requests.setdefault(request.uri, request)
                if existing is not request:
                    existing.exclude |= request.exclude
                    existing.base = existing.base or request.base
                    existing.aliases += request.aliases
                existing.files.append(d)
    for request in requests.values():
        try:
            _create_from_outputs(store, content, project_id, execution_id, request)
        except CairnError as exc:
            problems.append(f"{request.uri}: {exc.message}")
    return problems


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _parse_request(spec: Any) -> _Request:
    if isinstance(spec, str):
        spec = {"uri": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("uri"), str):
        raise ParameterError("expected \"dataset://NAME/VERSION\" or {\"uri\": …, \"from\": …}")
    uri = spec["uri"]
    name, version = _split_uri(uri)
    base = spec.get("from")
    if base is not None:
        base_name, base_version = _split_uri(str(base))
        if base_name != name:
            raise ParameterError(f"'from' must be a version of {name}, got {base}")
        base = base_version
    exclude = spec.get("exclude") or []
    if not isinstance(exclude, list):
        raise ParameterError("'exclude' must be a list of paths")
    aliases = spec.get("targeting_aliases") or []
    return _Request(uri=f"dataset://{name}/{version}", dataset=name, version=version,
                    base=base, start_fresh=bool(spec.get("start_fresh")),
                    exclude={str(x) for x in exclude}, aliases=[str(a) for a in aliases],
                    metadata=dict(spec.get("metadata") or {}))


def _split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("dataset://"):
        raise ParameterError(f"{uri!r} is not a dataset://NAME/VERSION URI")
    name, _, version = uri.removeprefix("dataset://").partition("/")
    if not name or not version or "/" in version:
        raise ParameterError(f"{uri!r} is not a dataset://NAME/VERSION URI")
    return name, version


def _create_from_outputs(store: MetadataStore, content: ContentStore, project_id: str,
                         execution_id: str, request: _Request) -> DatasetVersion:
    from cairn.store.folders import derive_tree

    added = {d.name: FileEntry(d.name, d.digest, d.size) for d in request.files}
    if request.base and not request.start_fresh:
        base = store.get_dataset_version(project_id, request.dataset, request.base)
        tree = derive_tree(base.tree_digest, content, add=added, exclude=request.exclude)
    else:
        entries = [e for path, e in added.items() if path not in request.exclude]
        tree = content.put_tree(entries)
    count = size = 0
    for entry in content.iter_tree(tree):
        count += 1
        size += entry.size
    return store.create_dataset_version(
        project_id, request.dataset, request.version, tree_digest=tree, file_count=count,
        size=size, source="execution", execution_id=execution_id, from_version=request.base,
        metadata=request.metadata,
    )
