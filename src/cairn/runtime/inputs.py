"""Step inputs: resolve what a user names (paths, URLs, datums) into recorded files.

Resolution happens when an execution is created, so the record holds the digest of every
input file and a re-run gets the same bytes, whatever happens to the original later. Local
files and downloads are ingested into the content store; workspaces get links to them.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from cairn.entities import InputFile
from cairn.errors import InputError, NotFoundError
from cairn.globs import match as glob_match
from cairn.globs import static_prefix
from cairn.store.base import MetadataStore
from cairn.store.cas import ContentStore

_DOWNLOAD_TIMEOUT = 60


def resolve_input(
    input_name: str,
    uris: Sequence[str],
    *,
    content: ContentStore,
    store: MetadataStore,
    project_id: str,
    base_dir: Path,
    keep_directories: str = "none",
    filename: str | None = None,
) -> list[InputFile]:
    """Resolve every URI given for one input into files with digests (ingesting them)."""
    files: list[InputFile] = []
    by_id = _datums_by_full_id(uris, store, project_id)
    for uri in uris:
        datum = by_id.get(uri)
        if datum is not None:
            keep = keep_directories in ("full", "true")
            files.append(InputFile(input_name, datum.name if keep else posixpath.basename(datum.name),
                                   uri, datum.digest, datum.size, datum.id))
            continue
        files.extend(_resolve_one(input_name, uri, content, store, project_id, base_dir,
                                  keep_directories))
    if filename and files:
        if len(files) != 1:
            raise InputError(
                f"input '{input_name}' sets filename '{filename}' but resolved to {len(files)} files",
                "`filename` only works for an input with exactly one file",
            )
        files = [_rename(files[0], filename)]
    seen: dict[str, InputFile] = {}
    for f in files:
        other = seen.setdefault(f.name, f)
        if other.digest != f.digest:
            raise InputError(
                f"input '{input_name}' has two different files named '{f.name}' "
                f"(from {other.uri} and {f.uri})",
                "set `keep-directories: full` on the input, or give the files distinct names",
            )
    return files


def materialize_inputs(files: Sequence[InputFile], inputs_dir: Path, content: ContentStore,
                       verified: Callable[[str, Path], bool] | None = None) -> None:
    """Place input files under ``inputs_dir/<input>/<name>``, linked from the store.

    Every blob is checked against its digest first (``verified(digest, path)`` may vouch
    for a blob already checked and unchanged since), so a corrupted blob never reaches a
    step: :class:`InputError` names the input file and where it came from.
    """
    for name in {f.input_name for f in files}:
        (inputs_dir / name).mkdir(parents=True, exist_ok=True)
    prefetch = getattr(content.blobs, "prefetch", None)
    if prefetch is not None and files:  # a remote store: fetch what is missing, in parallel
        prefetch([f.digest for f in files])
    for f in files:
        source = content.blobs.local_path(f.digest)
        ok = (verified is not None and source is not None and verified(f.digest, source)) \
            or _verify(content, f.digest)
        if not ok:
            raise InputError(
                f"input '{f.input_name}': {f.name} ({f.uri}) is corrupt in the store: its "
                f"bytes no longer match digest {f.digest[:16]}",
                "run `cairn store verify`; restore the blob from another store with "
                "`cairn data pull`, or re-run the execution that made it",
            )
        target = inputs_dir / f.input_name / f.name
        if not _inside(target, inputs_dir / f.input_name):
            raise InputError(f"input '{f.input_name}': file name {f.name!r} leaves its folder",
                             "input file names must be relative paths without '..'")
        content.materialize(f.digest, target)


def _datums_by_full_id(uris: Sequence[str], store: MetadataStore, project_id: str) -> dict:
    """``datum://<full id>`` URIs looked up in one batch (a pipeline edge passes hundreds);
    prefixes, aliases and globs are resolved one by one later."""
    ids = {}
    for uri in uris:
        rest = uri[len("datum://"):] if uri.startswith("datum://") else ""
        if len(rest) == 36 and rest.count("-") == 4 and "/" not in rest:
            ids[rest] = uri
    if len(ids) < 2:
        return {}
    return {f"datum://{d.id}": d for d in store.get_datums(project_id, list(ids))}


def _verify(content: ContentStore, digest: str) -> bool:
    try:
        return content.verify(digest)
    except (OSError, NotFoundError):
        return False


def _inside(path: Path, folder: Path) -> bool:
    resolved, root = os.path.normpath(path), os.path.normpath(folder)
    return resolved.startswith(root + os.sep)


def _rename(f: InputFile, name: str) -> InputFile:
    return InputFile(f.input_name, name, f.uri, f.digest, f.size, f.datum_id)


def _resolve_one(
    input_name: str,
    uri: str,
    content: ContentStore,
    store: MetadataStore,
    project_id: str,
    base_dir: Path,
    keep: str,
) -> list[InputFile]:
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "datum":
        if "/" in uri[len("datum://"):]:
            return _resolve_execution_outputs(input_name, uri, store, project_id, keep)
        return [_resolve_datum(input_name, uri, store, project_id, keep)]
    if scheme == "dataset":
        return _resolve_dataset(input_name, uri, store, content, project_id, keep)
    if scheme in ("http", "https"):
        return [_download(input_name, uri, content)]
    if scheme in ("", "file"):
        return _ingest_path(input_name, uri, content, base_dir)
    raise InputError(
        f"input '{input_name}': cannot read {uri!r}: the {scheme}:// scheme is not supported "
        "by this store",
        "use a local path, an http(s):// URL or a datum:// URI",
    )


def _resolve_datum(input_name: str, uri: str, store: MetadataStore, project_id: str,
                   keep: str) -> InputFile:
    """``datum://ID``, ``datum://ID-PREFIX`` or ``datum://ALIAS`` (resolved now, for good)."""
    try:
        datum = store.resolve_datum(project_id, uri)
    except NotFoundError as exc:
        raise InputError(f"input '{input_name}': {exc.message}",
                         exc.hint or "list datums with `cairn data ls`") from None
    name = datum.name if keep in ("full", "true") else posixpath.basename(datum.name)
    return InputFile(input_name, name, uri, datum.digest, datum.size, datum.id)


def _placed(path: str, keep: str, pattern: str) -> str:
    """Where a matched file lands under the input folder, per ``keep-directories``."""
    if keep in ("full", "true"):
        return path
    if keep == "suffix":
        prefix = static_prefix(pattern)
        return path[len(prefix):] if prefix and path.startswith(prefix) else path
    return posixpath.basename(path)


def _resolve_execution_outputs(input_name: str, uri: str, store: MetadataStore,
                               project_id: str, keep: str) -> list[InputFile]:
    """``datum://EXECUTION/GLOB``: the outputs of one execution whose names match."""
    ref, _, pattern = uri[len("datum://"):].partition("/")
    try:
        execution = store.get_execution(project_id, ref)
    except NotFoundError as exc:
        raise InputError(f"input '{input_name}': {uri}: {exc.message}",
                         "datum://EXECUTION/GLOB takes an execution number or id, "
                         "e.g. datum://12/images/**/*.png") from None
    pattern = pattern or "**"
    datums = [d for d in store.list_datums(project_id, execution_id=execution.id)
              if glob_match(pattern, d.name)]
    if not datums:
        raise InputError(f"input '{input_name}': no output of #{execution.counter} matches "
                         f"'{pattern}'", f"see them with `cairn outputs {execution.counter}`")
    return [InputFile(input_name, _placed(d.name, keep, pattern), f"datum://{d.id}",
                      d.digest, d.size, d.id) for d in datums]


def _resolve_dataset(input_name: str, uri: str, store: MetadataStore, content: ContentStore,
                     project_id: str, keep: str) -> list[InputFile]:
    """``dataset://NAME/VERSION[/GLOB]`` (VERSION may be ``latest``, resolved now)."""
    parts = uri[len("dataset://"):].split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise InputError(f"input '{input_name}': {uri!r} is not dataset://NAME/VERSION[/GLOB]",
                         "e.g. dataset://images/v3 or dataset://images/latest/train/*.png")
    name, version_name = parts[0], parts[1]
    pattern = parts[2] if len(parts) > 2 and parts[2] else None
    try:
        version = store.get_dataset_version(project_id, name, version_name)
    except NotFoundError as exc:
        raise InputError(f"input '{input_name}': {exc.message}",
                         exc.hint or "list datasets with `cairn dataset ls`") from None
    files = []
    for entry in content.iter_tree(version.tree_digest):
        if pattern is not None and not glob_match(pattern, entry.path):
            continue
        # A whole version keeps its folders; a glob follows `keep-directories`.
        placed = entry.path if pattern is None else _placed(entry.path, keep, pattern)
        files.append(InputFile(input_name, placed, f"{version.uri}/{entry.path}",
                               entry.digest, entry.size))
    if not files:
        raise InputError(f"input '{input_name}': nothing in {version.uri} matches '{pattern}'",
                         f"see its files with `cairn dataset show {name}/{version.version}`")
    return files


def _ingest_path(input_name: str, uri: str, content: ContentStore, base_dir: Path) -> list[InputFile]:
    raw = uri[len("file://"):] if uri.startswith("file://") else uri
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if path.is_file():
        digest, size = content.put_file(path)
        return [InputFile(input_name, path.name, uri, digest, size)]
    if path.is_dir():
        files = []
        for folder, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(names):
                full = Path(folder) / name
                if not full.is_file():
                    continue
                digest, size = content.put_file(full)
                rel = full.relative_to(path).as_posix()
                files.append(InputFile(input_name, rel, uri, digest, size))
        if not files:
            raise InputError(f"input '{input_name}': folder {path} has no files",
                             "point the input at a folder with files in it")
        return files
    raise InputError(
        f"input '{input_name}': no such file or folder: {path}",
        "check the path; relative paths are read from the folder you run cairn in",
    )


def _download(input_name: str, url: str, content: ContentStore) -> InputFile:
    import urllib.error  # imported here: urllib.request costs ~20 ms at start-up
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlsplit(url)
    name = posixpath.basename(urllib.parse.unquote(parsed.path)) or "download"
    tmp_dir = Path(tempfile.mkdtemp(prefix="cairn-download-"))
    target = tmp_dir / name
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "cairn"})
        with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT) as response, \
                open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        digest, size = content.put_file(target, move=True)
    except urllib.error.HTTPError as exc:
        raise InputError(f"input '{input_name}': {url} answered HTTP {exc.code} {exc.reason}",
                         "check that the URL exists and is readable without logging in") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"input '{input_name}': cannot download {url}: {reason}",
                         "check the URL and your network connection") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return InputFile(input_name, name, url, digest, size)
