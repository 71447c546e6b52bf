"""Reading a project file: YAML, then the top-level list, then each item by kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.errors import Problem, ProjectError, ProjectNotFoundError
from cairn.project._check import Checker, did_you_mean
from cairn.project._yaml import compose
from cairn.project.config import ProjectConfig
from cairn.project.problems import sort_problems
from cairn.settings import PROJECT_FILES

KINDS = ("step", "pipeline", "blueprint", "task", "endpoint", "deployment")
_KIND_NAMES = {"blueprint": "pipeline"}
_TOP_HINT = "a project file is a list of items, each starting with '- ' and one key: " + ", ".join(
    k for k in KINDS if k != "blueprint"
)


def analyze(
    text: str, filename: str = "cairn.yaml", path: Path | None = None
) -> tuple[ProjectConfig, list[Problem]]:
    """Parse and validate ``text``; the config (best effort) and every problem found."""
    # The validators are imported here so that `import cairn.project` stays cheap.
    from cairn.project._validate_other import validate_deployment, validate_endpoint, validate_task
    from cairn.project._validate_pipeline import PipelineValidator
    from cairn.project._validate_step import validate_step

    config = ProjectConfig(path=path if path is not None else Path(filename))
    doc, problems = compose(text, filename)
    if doc is None:
        return config, problems
    c = Checker(doc, filename)
    c.problems.extend(problems)
    data = doc.data
    if data is None:
        c.error((), "the project file is empty", _TOP_HINT + "; `cairn init` writes a starter file")
        return config, sort_problems(c.problems)
    if not isinstance(data, list):
        hint = _TOP_HINT
        if isinstance(data, dict) and any(k in KINDS for k in data):
            hint = (
                "put '- ' in front of each item, e.g. `- step:`, "
                "and indent the item's keys under it"
            )
        c.error((), "the project file must be a list of items such as `- step:`", hint)
        return config, sort_problems(c.problems)

    items: dict[str, list[tuple[int, dict[str, Any]]]] = {k: [] for k in KINDS}
    for index, item in enumerate(data):
        found = _item(c, item, index)
        if found:
            kind, body = found
            items[_KIND_NAMES.get(kind, kind)].append((index, body))

    def add(kind: str, registry: dict[str, Any], index: int, obj: Any) -> None:
        if obj is None:
            return
        if obj.name in registry:
            c.warn(
                (index, kind, "name"),
                f"there are two {kind}s called '{obj.name}'; the later one is used",
                "give each a unique name",
            )
        registry[obj.name] = obj

    for index, body in items["step"]:
        add("step", config.steps, index, validate_step(c, body, (index, "step"), index))
    for index, body in items["task"]:
        add(
            "task",
            config.tasks,
            index,
            validate_task(c, body, (index, "task"), index, config.steps),
        )
    for index, body in items["endpoint"]:
        add(
            "endpoint",
            config.endpoints,
            index,
            validate_endpoint(c, body, (index, "endpoint"), index),
        )
    for index, body in items["deployment"]:
        add(
            "deployment",
            config.deployments,
            index,
            validate_deployment(c, body, (index, "deployment"), index),
        )
    pipelines = PipelineValidator(c, config.steps, config.tasks, config.endpoints)
    for index, body in items["pipeline"]:
        key = "pipeline" if "pipeline" in data[index] else "blueprint"
        add("pipeline", config.pipelines, index, pipelines.validate(body, (index, key), index))
    problems = sort_problems(c.problems)
    config.warnings = [p for p in problems if p.severity == "warning"]
    return config, problems


def _item(c: Checker, item: Any, index: int) -> tuple[str, dict[str, Any]] | None:
    """The kind and body of one top-level item, reporting shape and indentation problems."""
    path = (index,)
    if not isinstance(item, dict):
        c.error(
            path,
            f"item {index + 1} must be a mapping such as `step:`, got {type(item).__name__}",
            _TOP_HINT,
        )
        return None
    if not item:
        c.error(path, f"item {index + 1} is empty", _TOP_HINT)
        return None
    kinds = [k for k in item if k in KINDS]
    others = [k for k in item if k not in KINDS]
    if len(kinds) > 1:
        c.error(
            (index, kinds[1]),
            f"item {index + 1} has both '{kinds[0]}' and '{kinds[1]}'",
            "start each item with its own '- '",
            at_key=True,
        )
        return None
    if not kinds:
        key = others[0] if others else ""
        guess = did_you_mean(key, KINDS)
        if guess:
            c.error((index, key), f"unknown item kind '{key}'", guess, at_key=True)
        elif key in _step_keys():
            c.error(
                (index, key),
                f"'{key}' is a step key, but it is not inside a step",
                "check the indentation: write `- step:` and indent the step's keys under it",
                at_key=True,
            )
        else:
            c.warn(
                (index, key),
                f"no parser for '{key}' items; this item is ignored",
                _TOP_HINT,
                at_key=True,
            )
        return None
    kind = kinds[0]
    body = item[kind]
    if others:
        if body is None:
            first, last = (
                c.doc.key_position((index, others[0]))[0],
                c.doc.key_position((index, others[-1]))[0],
            )
            lines = f"line {first}" if first == last else f"lines {first}-{last}"
            c.error(
                (index, others[0]),
                f"the keys of this {_KIND_NAMES.get(kind, kind)} ({', '.join(others)}) are not "
                f"indented under `{kind}:`",
                f"check the indentation of {lines}: indent them further than `{kind}:` (e.g. by "
                "4 spaces)",
                at_key=True,
            )
            body = {k: item[k] for k in others}
            _rebase(c, index, kind, others)
        else:
            for key in others:
                c.error(
                    (index, key),
                    f"unexpected key '{key}' next to '{kind}'",
                    f"check the indentation of '{key}': if it belongs to the {kind}, line it up "
                    "with the "
                    f"{kind}'s other keys",
                    at_key=True,
                )
    if body is None:
        c.error(
            (index, kind),
            f"this {kind} is empty",
            f"give the {kind} its keys, indented under `{kind}:`",
            at_key=True,
        )
        return None
    if not isinstance(body, dict):
        c.error(
            (index, kind),
            f"the {kind} must be a mapping of keys, got {type(body).__name__}",
            f"indent the {kind}'s keys under `{kind}:`",
        )
        return None
    return kind, body


def _step_keys() -> tuple[str, ...]:
    from cairn.project._validate_step import STEP_KEYS

    return STEP_KEYS


def _rebase(c: Checker, index: int, kind: str, keys: list[str]) -> None:
    """Make positions of mis-indented keys findable under ``(index, kind, ...)`` too."""
    doc = c.doc
    tables: list[dict[Any, Any]] = [doc.starts, doc.key_starts, doc.raw]
    for table in tables:
        for path in list(table):
            if len(path) >= 2 and path[0] == index and path[1] in keys:
                table[(index, kind, *path[1:])] = table[path]
    if (index, kind) in doc.starts and (index, keys[0]) in doc.key_starts:
        doc.starts[(index, kind)] = doc.key_starts[(index, keys[0])]


def lint(text: str, filename: str = "cairn.yaml") -> list[Problem]:
    """Every error and warning in ``text``, in file order; never raises for content problems."""
    return analyze(text, filename)[1]


def parse_project(text: str, filename: str = "cairn.yaml") -> ProjectConfig:
    """The :class:`ProjectConfig` in ``text``; raises ``ProjectError`` if it has errors."""
    return _finish(*analyze(text, filename))


def find_project_file(root: Path | str, filename: str | None = None) -> Path:
    """The project file in ``root`` (``filename``, else cairn.yaml, else valohai.yaml).

    ``root`` may also be the file itself. Raises ``ProjectNotFoundError`` when there is none.
    """
    root = Path(root)
    if filename is not None:
        candidate = root / filename
        if candidate.is_file():
            return candidate
        raise ProjectNotFoundError(str(candidate))
    if root.is_file():
        return root
    for name in PROJECT_FILES:
        candidate = root / name
        if candidate.is_file():
            return candidate
    raise ProjectNotFoundError(str(root))


def load_project(root: Path | str, filename: str | None = None) -> ProjectConfig:
    """Find, parse and validate the project file in ``root`` (see :func:`find_project_file`)."""
    path = find_project_file(root, filename)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = Problem(
            str(path), 1, 1, f"the file is not UTF-8 text ({exc.reason})", "save it as UTF-8"
        )
        raise ProjectError([problem]) from None
    return _finish(*analyze(text, str(path), path))


def _finish(config: ProjectConfig, problems: list[Problem]) -> ProjectConfig:
    if any(p.severity == "error" for p in problems):
        raise ProjectError(problems)
    return config
