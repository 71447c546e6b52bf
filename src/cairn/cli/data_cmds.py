"""``cairn data …``, ``cairn dataset …``, ``cairn lineage``, ``cairn gc``, ``cairn store verify``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cairn import units
from cairn.cli import render
from cairn.cli.progress import ProgressBar

if TYPE_CHECKING:
    from cairn.entities import Datum
    from cairn.orchestration.context import Context
    from cairn.store.folders import TreeDiff

FORMATS = click.Choice(["table", "csv", "json"])
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _ctx() -> Context:
    from cairn.orchestration.context import Context

    return Context.load()


def parse_size(text: str) -> int:
    """``10KB``, ``1.5M``, ``200`` → bytes."""
    match = _SIZE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a size (e.g. 500, 10KB, 1.5MB, 2GB)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()[:1]])



# -- cairn data ---------------------------------------------------------------------------
@click.group(short_help="Datums: outputs, aliases, transfers.")
def data() -> None:
    """Datums: every output file of every execution, content-addressed (datum://ID)."""


@data.command("ls")
@click.option("--execution", "-x", "execution_ref", help="Only outputs of this execution.")
@click.option("--name", "name_glob", metavar="GLOB", help="Only names matching (e.g. '*.onnx').")
@click.option("--tag", help="Only datums with this tag.")
@click.option("--min-size", type=parse_size, help="At least this big (e.g. 10KB).")
@click.option("--max-size", type=parse_size, help="At most this big.")
@click.option("--limit", "-n", default=50, show_default=True, help="How many (0: all).")
@click.option("--format", "fmt", type=FORMATS, default="table")
def data_ls(execution_ref: str | None, name_glob: str | None, tag: str | None,
            min_size: int | None, max_size: int | None, limit: int, fmt: str) -> None:
    """List datums (by name), filtered by execution, name, tag or size."""
    ctx = _ctx()
    execution_id = None
    counters: dict[str, int] = {}
    if execution_ref:
        ex = ctx.store.get_execution(ctx.project_id, execution_ref)
        execution_id, counters[ex.id] = ex.id, ex.counter
    datums = ctx.store.list_datums(ctx.project_id, execution_id=execution_id,
                                   name_glob=name_glob, tag=tag, min_size=min_size,
                                   max_size=max_size, limit=limit or None)
    aliases = _aliases_by_datum(ctx)
    rows = []
    for d in datums:
        if d.execution_id and d.execution_id not in counters:
            counters[d.execution_id] = ctx.store.get_execution(ctx.project_id,
                                                               d.execution_id).counter
        made_by = f"#{counters[d.execution_id]}" if d.execution_id else "upload"
        rows.append([d.uri if fmt != "table" else f"datum://{d.id[:8]}", d.name,
                     render.size(d.size) if fmt == "table" else d.size, made_by,
                     ",".join(d.tags), ",".join(aliases.get(d.id, []))])
    if not rows and fmt == "table":
        click.echo("no datums match", err=True)
        return
    render.emit(["datum", "name", "size", "made by", "tags", "aliases"], rows, fmt, right=(2,))


def _aliases_by_datum(ctx: Context) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias in ctx.store.list_aliases(ctx.project_id):
        out.setdefault(alias.datum_id, []).append(alias.name)
    return out


@data.command("show")
@click.argument("uri")
def data_show(uri: str) -> None:
    """Everything about one datum: what made it, its digest, tags, aliases, who used it."""
    ctx = _ctx()
    d = ctx.store.resolve_datum(ctx.project_id, uri)
    click.echo(click.style(d.uri, bold=True) + f"  {d.name}")
    made_by = "uploaded"
    if d.execution_id:
        ex = ctx.store.get_execution(ctx.project_id, d.execution_id)
        made_by = f"#{ex.counter} {ex.step} ({ex.status.value})"
    rows = [("name", d.name),
            ("size", f"{render.size(d.size)} ({units.count(d.size, 'byte')})"),
            ("digest", f"blake3:{d.digest}"), ("made by", made_by),
            ("created", d.created_at.astimezone().isoformat(timespec="seconds")),
            ("tags", ", ".join(d.tags) or None),
            ("aliases", ", ".join(_aliases_by_datum(ctx).get(d.id, [])) or None)]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        if v:
            click.echo(f"  {k:<{width}}  {v}")
    if d.metadata:
        click.echo(click.style("\nproperties", bold=True))
        for k, v in d.metadata.items():
            click.echo(f"  {k}: {json.dumps(v)}")
    consumers = ctx.store.consumers_of_datum(ctx.project_id, d.id)
    if consumers:
        click.echo(click.style("\nused by", bold=True))
        for e in consumers:
            click.echo(f"  #{e.counter} {e.step} ({e.status.value})")


@data.command("get")
@click.argument("uri")
@click.argument("dest", required=False, type=click.Path())
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
def data_get(uri: str, dest: str | None, force: bool) -> None:
    """Copy a datum's verified bytes to DEST (a file or folder; default: its name here)."""
    from cairn.errors import InputError

    ctx = _ctx()
    d = ctx.store.resolve_datum(ctx.project_id, uri)
    target = Path(dest) if dest else Path(Path(d.name).name)
    if target.is_dir():
        target = target / Path(d.name).name
    if target.is_dir() or (not force and (target.exists() or target.is_symlink())):
        raise InputError(f"{target} exists",
                         "give another DEST" if target.is_dir() else
                         "use --force to overwrite it, or give another DEST")
    ctx.content.materialize(d.digest, target, link=False)
    click.echo(f"{d.uri} → {target} ({render.size(d.size)})", err=True)


@data.command("alias")
@click.argument("name")
@click.argument("uri", required=False)
@click.option("--delete", is_flag=True, help="Remove the alias (its history is kept).")
def data_alias(name: str, uri: str | None, delete: bool) -> None:
    """Point alias NAME at datum URI (datum://ID or another alias); without URI, show it and
    its history."""
    ctx = _ctx()
    if delete:
        ctx.store.delete_alias(ctx.project_id, name)
        click.echo(f"datum://{name} removed")
        return
    if uri:
        d = ctx.store.resolve_datum(ctx.project_id, uri)
        alias = ctx.store.set_alias(ctx.project_id, name, d.id)
        click.echo(f"{alias.uri} → {d.uri} ({d.name})")
        return
    alias = ctx.store.get_alias(ctx.project_id, name)
    current = ctx.store.resolve_datum(ctx.project_id, alias.datum_id)
    click.echo(f"{alias.uri} → {current.uri} ({current.name})")
    rows = []
    for event in ctx.store.alias_history(ctx.project_id, name):
        by = ""
        if event.execution_id:
            by = f"#{ctx.store.get_execution(ctx.project_id, event.execution_id).counter}"
        rows.append([event.at.astimezone().isoformat(timespec="seconds"),
                     f"datum://{event.previous_datum_id[:8]}" if event.previous_datum_id else "-",
                     f"datum://{event.datum_id[:8]}", by or "cli"])
    click.echo(render.table(["when", "from", "to", "by"], rows))


@data.command("aliases")
@click.option("--format", "fmt", type=FORMATS, default="table")
def data_aliases(fmt: str) -> None:
    """List aliases and where they point."""
    ctx = _ctx()
    rows = []
    for alias in ctx.store.list_aliases(ctx.project_id):
        d = ctx.store.resolve_datum(ctx.project_id, alias.datum_id)
        rows.append([alias.uri, d.uri if fmt != "table" else f"datum://{d.id[:8]}", d.name,
                     alias.updated_at.astimezone().isoformat(timespec="seconds")])
    if not rows and fmt == "table":
        click.echo("no aliases yet: `cairn data alias NAME datum://ID`", err=True)
        return
    render.emit(["alias", "datum", "name", "moved"], rows, fmt)


def _digests_of(ctx: Context, uris: tuple[str, ...]) -> tuple[list[str], int]:
    """Blob digests behind datum:// and dataset:// URIs (trees with their members)."""
    digests: list[str] = []
    total = 0
    for uri in uris:
        if uri.startswith("dataset://"):
            name, _, version = uri.removeprefix("dataset://").partition("/")
            v = ctx.store.get_dataset_version(ctx.project_id, name, version or "latest")
            digests.append(v.tree_digest)
            for entry in ctx.content.iter_tree(v.tree_digest):
                digests.append(entry.digest)
                total += entry.size
        else:
            d: Datum = ctx.store.resolve_datum(ctx.project_id, uri)
            digests.append(d.digest)
            total += d.size
    return list(dict.fromkeys(digests)), total


@data.command("push")
@click.argument("uris", nargs=-1, required=True)
@click.option("--to", "to_url", required=True, metavar="STORE_URL",
              help="Destination store, e.g. s3://bucket/prefix.")
@click.option("--workers", default=8, show_default=True)
def data_push(uris: tuple[str, ...], to_url: str, workers: int) -> None:
    """Copy datums or dataset versions (URIS) to another store (only missing blobs)."""
    from cairn.store.blobs import open_blob_store
    from cairn.store.transfer import push

    ctx = _ctx()
    digests, total = _digests_of(ctx, uris)
    with ProgressBar(f"push → {to_url}") as bar:
        result = push(digests, ctx.content.blobs, open_blob_store(to_url), workers=workers,
                      progress=bar)
        bar.close()
    click.echo(_transfer_summary(result, len(digests)), err=True)


@data.command("pull")
@click.argument("uris", nargs=-1, required=True)
@click.option("--from", "from_url", required=True, metavar="STORE_URL",
              help="Source store, e.g. s3://bucket/prefix.")
@click.option("--workers", default=8, show_default=True)
def data_pull(uris: tuple[str, ...], from_url: str, workers: int) -> None:
    """Copy datums or dataset versions (URIS) from another store (only missing blobs)."""
    from cairn.store.blobs import open_blob_store
    from cairn.store.transfer import pull

    ctx = _ctx()
    source = open_blob_store(from_url)
    # Tree manifests first: the files they list may be missing here along with them.
    trees = [ctx.store.get_dataset_version(ctx.project_id, *_split(u)).tree_digest
             for u in uris if u.startswith("dataset://")]
    pull(trees, source, ctx.content.blobs, workers=workers)
    digests, total = _digests_of(ctx, uris)
    with ProgressBar(f"pull ← {from_url}") as bar:
        result = pull(digests, source, ctx.content.blobs, workers=workers, progress=bar)
        bar.close()
    click.echo(_transfer_summary(result, len(digests)), err=True)


def _transfer_summary(result: Any, count: int) -> str:
    copied = getattr(result, "copied", None)
    if copied is None:
        return f"{units.count(count, 'blob')} checked"
    size = render.size(getattr(result, "bytes", 0))
    return (f"{copied:,} of {units.count(count, 'blob')} copied ({size}), "
            f"{count - copied:,} already there")


# -- cairn dataset ------------------------------------------------------------------------
@click.group(short_help="Dataset versions: add, list, show, diff, checkout.")
def dataset() -> None:
    """Dataset versions: immutable, named sets of files (dataset://NAME/VERSION)."""


def _split(ref: str) -> tuple[str, str]:
    ref = ref.removeprefix("dataset://")
    name, _, version = ref.partition("/")
    return name, version or "latest"


@dataset.command("add")
@click.argument("name")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--version", "version", help="Version name (default: the next vN).")
@click.option("--link", is_flag=True,
              help="Hardlink the files into the store instead of copying them (much faster "
                   "for many files, no extra space). The files in FOLDER are made "
                   "read-only and become the stored version: do not edit them in place "
                   "(an edit is detected when the version is read, and the version is "
                   "then unusable). Executables, files just modified and files on another "
                   "filesystem are copied.")
def dataset_add(name: str, folder: str, version: str | None, link: bool) -> None:
    """Version FOLDER as a new version of dataset NAME (its files are copied, or with
    --link hardlinked and made read-only)."""
    from cairn.orchestration.datasets import add_folder

    ctx = _ctx()
    with ProgressBar(f"adding {folder}") as bar:
        v, made = add_folder(ctx, name, Path(folder), version=version, progress=bar,
                             link=link)
        summary = f"{units.count(v.file_count, 'file')}, {render.size(v.size)}"
        bar.close(f"{v.uri}: {summary}" if made else
                  f"{v.uri}: unchanged ({summary}), no new version made "
                  "(--version NAME makes one anyway)")


@dataset.command("ls")
@click.argument("name", required=False)
@click.option("--format", "fmt", type=FORMATS, default="table")
def dataset_ls(name: str | None, fmt: str) -> None:
    """List datasets (or the versions of dataset NAME)."""
    ctx = _ctx()
    if name:
        rows = [[v.version, v.file_count, render.size(v.size) if fmt == "table" else v.size,
                 _source(ctx, v), v.from_version or "",
                 v.created_at.astimezone().isoformat(timespec="seconds")]
                for v in ctx.store.list_dataset_versions(ctx.project_id, name)]
        render.emit(["version", "files", "size", "made by", "from", "created"], rows, fmt,
              right=(1, 2))
        return
    rows = []
    for ds_name, count, latest in ctx.store.list_datasets(ctx.project_id):
        rows.append([ds_name, count, latest.version if latest else "",
                     latest.file_count if latest else 0,
                     (render.size(latest.size) if fmt == "table" else latest.size)
                     if latest else 0])
    if not rows and fmt == "table":
        click.echo("no datasets yet: `cairn dataset add NAME FOLDER`", err=True)
        return
    render.emit(["dataset", "versions", "latest", "files", "size"], rows, fmt, right=(1, 3, 4))


def _source(ctx: Context, v: Any) -> str:
    if v.execution_id:
        return f"#{ctx.store.get_execution(ctx.project_id, v.execution_id).counter}"
    return v.source


@dataset.command("show")
@click.argument("ref")
@click.option("--files", "-f", "show_files", default=10, show_default=True,
              help="How many file names to list.")
def dataset_show(ref: str, show_files: int) -> None:
    """A version's size, origin, and what changed against the previous version."""
    from cairn.store.folders import diff_trees

    ctx = _ctx()
    name, version = _split(ref)
    v = ctx.store.get_dataset_version(ctx.project_id, name, version)
    click.echo(click.style(v.uri, bold=True))
    rows = [("files", f"{v.file_count:,}"), ("size", render.size(v.size)),
            ("made by", _source(ctx, v)), ("from", v.from_version),
            ("created", v.created_at.astimezone().isoformat(timespec="seconds")),
            ("tree", v.tree_digest)]
    for k, val in rows:
        if val:
            click.echo(f"  {k:<8} {val}")
    versions = ctx.store.list_dataset_versions(ctx.project_id, name)
    index = next(i for i, x in enumerate(versions) if x.id == v.id)
    if index > 0:
        previous = versions[index - 1]
        diff = diff_trees(previous.tree_digest, v.tree_digest, ctx.content)
        click.echo(f"  changes  against {previous.version}: +{len(diff.added):,} added, "
                   f"-{len(diff.removed):,} removed, ~{len(diff.modified):,} modified, "
                   f"{diff.unchanged_count:,} unchanged")
    if show_files:
        from itertools import islice

        entries = islice(ctx.content.iter_tree(v.tree_digest), show_files)
        click.echo()
        click.echo(render.table(["file", "size"],
                                [(e.path, render.size(e.size)) for e in entries], right=[1]))
        if v.file_count > show_files:
            click.echo(f"… and {v.file_count - show_files:,} more (--files N lists more)")


@dataset.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--limit", "-n", default=50, show_default=True, help="Paths to list per kind.")
def dataset_diff(a: str, b: str, limit: int) -> None:
    """What changed from version A to version B (NAME/VERSION each)."""
    from cairn.orchestration.datasets import find_version
    from cairn.store.folders import diff_trees

    ctx = _ctx()
    va = find_version(ctx, *_split(a))
    vb = find_version(ctx, *_split(b))
    _print_diff(f"{va.uri} → {vb.uri}", diff_trees(va.tree_digest, vb.tree_digest, ctx.content),
                limit)


def _print_diff(head: str, diff: TreeDiff, limit: int) -> None:
    click.echo(f"{head}: +{len(diff.added):,} added, -{len(diff.removed):,} removed, "
               f"~{len(diff.modified):,} modified, {diff.unchanged_count:,} unchanged")
    for mark, color, items in (("+", "green", diff.added), ("-", "red", diff.removed),
                               ("~", "yellow", diff.modified)):
        for entry in items[:limit]:
            click.echo(click.style(f"{mark} {entry.path}", fg=color))
        if len(items) > limit:
            click.echo(f"{mark} … and {len(items) - limit:,} more")


@dataset.command("status")
@click.argument("name")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--version", "version", default="latest", show_default=True,
              help="The version to compare the folder with.")
@click.option("--limit", "-n", default=50, show_default=True, help="Paths to list per kind.")
@click.option("--exit-code", is_flag=True, help="Exit with 1 when the folder differs.")
def dataset_status(name: str, folder: str, version: str, limit: int, exit_code: bool) -> int:
    """What changed in FOLDER since dataset version NAME/latest (or --version); stores
    nothing. Files the last add of FOLDER saw cost a stat; the others are hashed."""
    from cairn.orchestration.datasets import folder_status

    ctx = _ctx()
    with ProgressBar(f"comparing {folder}") as bar:
        v, diff = folder_status(ctx, name, Path(folder), version=version, progress=bar)
        bar.close()
    _print_diff(f"{v.uri} → {folder}", diff, limit)
    return 1 if exit_code and (diff.added or diff.removed or diff.modified) else 0


@dataset.command("checkout")
@click.argument("ref")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--glob", "pattern", help="Only paths matching (e.g. 'train/**/*.png').")
@click.option("--writable", is_flag=True, help="Private writable copies (default: read-only links).")
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
def dataset_checkout(ref: str, dest: str, pattern: str | None, writable: bool,
                     force: bool) -> None:
    """Materialize dataset version REF (NAME/VERSION) into DEST."""
    from cairn.orchestration.datasets import find_version
    from cairn.store.folders import checkout

    ctx = _ctx()
    v = find_version(ctx, *_split(ref))
    with ProgressBar(f"checkout {v.uri}") as bar:
        info = checkout(v.tree_digest, Path(dest), ctx.content, glob=pattern,
                        writable=writable, force=force, progress=bar)
        bar.close(f"{v.uri} → {dest}: {units.count(info.files, 'file')}, "
                  f"{render.size(info.bytes)} "
                  f"({info.method})")


# -- lineage, gc, verify -----------------------------------------------------------------
@click.command(short_help="Where something came from and what used it.")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["tree", "dot", "json"]), default="tree")
@click.option("--depth", default=8, show_default=True, help="How many steps to follow.")
def lineage(ref: str, fmt: str, depth: int) -> None:
    """Lineage of REF: datum://ID-or-ALIAS, dataset://NAME/VERSION, or an execution number."""
    from cairn.orchestration.lineage import LineageBuilder, render_dot, render_tree

    ctx = _ctx()
    result = LineageBuilder(ctx, depth=depth).build(ref)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif fmt == "dot":
        click.echo(render_dot(result))
    else:
        click.echo("\n".join(render_tree(result)))


@click.command(short_help="Remove blobs nothing references.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option("--grace", default="1h", show_default=True,
              help="Keep anything written more recently than this (e.g. 30m, 2h, 0s).")
def gc(dry_run: bool, grace: str) -> None:
    """Remove blobs that no execution, datum, alias or dataset version references."""
    from cairn.orchestration.maintenance import collect_garbage
    from cairn.project.durations import parse_duration

    ctx = _ctx()
    seconds = 0.0 if grace.strip() in ("0", "0s") else parse_duration(grace)
    with ProgressBar("gc") as bar:
        report = collect_garbage(ctx, dry_run=dry_run, grace_seconds=seconds, progress=bar)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{units.count(report.blobs_seen, 'blob')}, {report.referenced:,} referenced; "
               f"{verb} {report.removed:,} ({render.size(report.removed_bytes)}); kept "
               f"{report.kept_recent:,} recent unreferenced"
               + (f"; swept {report.temporary_removed:,} leftover temp files"
                  if report.temporary_removed else ""))


@click.group(short_help="Blob store checks.")
def store() -> None:
    """Blob store checks."""


@store.command("verify")
def store_verify() -> int:
    """Rehash every blob and report any whose bytes no longer match their digest."""
    from cairn.orchestration.maintenance import verify_store

    ctx = _ctx()
    with ProgressBar("verifying") as bar:
        report = verify_store(ctx, progress=bar)
        bar.close(f"{units.count(report.checked, 'blob')} checked ({render.size(report.bytes)})")
    if not report.corrupt:
        click.echo(click.style("all blobs match their digests", fg="green"))
        return 0
    corrupt = set(report.corrupt)
    by_digest: dict[str, list[Any]] = {}
    for d in ctx.store.list_datums(ctx.project_id):  # a rare path: a full scan is fine
        if d.digest in corrupt:
            by_digest.setdefault(d.digest, []).append(d)
    for digest in report.corrupt:
        users = by_digest.get(digest, [])
        named = ", ".join(d.uri + " " + d.name for d in users) or "no datum (code, log or tree)"
        click.echo(click.style(f"corrupt: {digest}", fg="red") + f"  {named}")
    click.echo(f"{len(report.corrupt)} corrupt blob(s): restore them from a backup or another "
               "store (`cairn data pull`), or re-run the executions that made them", err=True)
    return 1
