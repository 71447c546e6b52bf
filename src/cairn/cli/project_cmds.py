"""``cairn init``, ``cairn lint`` and ``cairn db``."""

from __future__ import annotations

from pathlib import Path

import click

from cairn.cli import render


@click.command(short_help="Write a starter cairn.yaml.")
@click.option("--force", is_flag=True, help="Overwrite an existing cairn.yaml.")
def init(force: bool) -> None:
    """Write a commented starter cairn.yaml in this folder."""
    from cairn.project import starter_yaml

    target = Path("cairn.yaml")
    if target.exists() and not force:
        raise click.ClickException("cairn.yaml already exists here; use --force to overwrite it")
    if Path("valohai.yaml").exists() and not force:
        raise click.ClickException(
            "valohai.yaml is here already and cairn reads it as it is; "
            "use --force to write a cairn.yaml anyway")
    target.write_text(starter_yaml())
    click.echo("wrote cairn.yaml: edit its step, then `cairn lint` and `cairn run train`")


@click.command(short_help="Check the project file.")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
def lint(files: tuple[str, ...]) -> int:
    """Check cairn.yaml / valohai.yaml (or FILES): every problem with file:line:column."""
    from cairn.errors import ProjectNotFoundError
    from cairn.project import lint as lint_text
    from cairn.settings import PROJECT_FILES, find_project_root

    paths = [Path(f) for f in files]
    if not paths:
        root = find_project_root(Path.cwd())
        paths = [root / name for name in PROJECT_FILES if (root / name).is_file()][:1]
        if not paths:
            raise ProjectNotFoundError(str(Path.cwd()))
    errors = warnings = 0
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
        for problem in lint_text(text, str(path)):
            click.echo(render.problem(problem))
            errors += problem.severity == "error"
            warnings += problem.severity != "error"
    summary = f"{len(paths)} file(s): {errors} error(s), {warnings} warning(s)"
    click.echo(click.style(summary, fg="red" if errors else "green"), err=True)
    return 1 if errors else 0


@click.group(short_help="Database maintenance.")
def db() -> None:
    """Database maintenance."""


@db.command()
def upgrade() -> None:
    """Migrate the project's database to this cairn's schema."""
    from cairn.settings import Settings
    from cairn.store.sql.schema import upgrade as do_upgrade

    settings = Settings.load()
    do_upgrade(settings.database_url)
    click.echo(f"database at {settings.database_url} is up to date")
