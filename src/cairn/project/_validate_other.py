"""Validation of ``task``, ``endpoint`` and ``deployment`` items."""

from __future__ import annotations

import re
from typing import Any

from cairn.project._check import Checker, describe, did_you_mean, is_number
from cairn.project._validate_step import resources_spec
from cairn.project._yaml import PathKey
from cairn.project.blueprints import (
    ON_CHILD_ERROR,
    PRUNERS,
    TASK_TYPES,
    VARIANT_STYLES,
    Deployment,
    Endpoint,
    EndpointFile,
    Task,
    VariantParameter,
)
from cairn.project.step import Step

TASK_KEYS = (
    "name",
    "description",
    "step",
    "type",
    "parameters",
    "parameter-sets",
    "execution-count",
    "execution-batch-size",
    "maximum-queued-executions",
    "optimization-target-metric",
    "optimization-target-value",
    "engine",
    "on-child-error",
    "stop-condition",
    "reuse-children",
    "prune",  # cairn: stop trials that fall behind (median rule, successive halving)
)
VARIANT_KEYS = ("name", "style", "rules")
RULE_KEYS = {
    "single": ("value",),
    "multiple": ("items",),
    "linear": ("start", "end", "step"),
    "logspace": ("start", "end", "count", "base"),
    "random": ("min", "max", "count", "distribution", "seed", "base"),
}
REQUIRED_RULES = {
    "single": ("value",),
    "multiple": ("items",),
    "linear": ("start", "end", "step"),
    "logspace": ("start", "end", "count"),
    "random": ("min", "max"),
}
COMMON_RULE_KEYS = ("integerify", "numberify")
# Valohai reads these only for Bayesian tasks; cairn ranks, prunes and stops every type by
# the target metric, so only `engine` is specific.
BAYESIAN_ONLY = ("engine",)
ENGINES = ("optuna", "hyperopt")

ENDPOINT_KEYS = (
    "name",
    "image",
    "server-command",
    "wsgi",
    "description",
    "port",
    "files",
    "resources",
    "node-selector",
    "tolerations",
)
ENDPOINT_RESOURCE_KEYS = ("cpu", "memory", "devices", "ephemeral-storage")
ENDPOINT_FILE_KEYS = ("name", "path", "description")
TOLERATION_KEYS = ("key", "operator", "value", "effect")
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
ENDPOINT_NAME = re.compile(r"^[a-z][a-z0-9-]+$")
_WSGI = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
DEPLOYMENT_KEYS = ("name", "defaults")


# -- tasks -------------------------------------------------------------------------------


def validate_task(
    c: Checker, body: dict[str, Any], path: PathKey, index: int, steps: dict[str, Step]
) -> Task | None:
    """The :class:`Task` in ``body`` (best effort), checked against ``steps``; None without a "
    "name."""
    name = c.string(body, "name", path, "the task")
    what = f"task '{name}'" if name else f"the task (item {index + 1})"
    c.check_keys(body, path, what, TASK_KEYS, ("name", "step"))
    if "parameters" not in body and "parameter-sets" not in body:
        c.error(
            path,
            f"{what} needs 'parameters' or 'parameter-sets'",
            "say which step parameters the task varies",
        )
    task_type = "grid_search"
    if body.get("type") is not None:
        raw = c.string(body, "type", path, what)
        if raw is not None:
            normalized = raw.strip().lower().replace("-", "_")
            if normalized in TASK_TYPES:
                task_type = normalized
            else:
                c.error(
                    (*path, "type"),
                    f"'type' of {what} must be one of {', '.join(TASK_TYPES)}; got '{raw}'",
                    did_you_mean(normalized, TASK_TYPES),
                )
    step_name = c.string(body, "step", path, what)
    step = steps.get(step_name) if step_name else None
    if step_name is not None and step is None:
        c.error(
            (*path, "step"),
            f"{what} refers to unknown step '{step_name}'",
            did_you_mean(step_name, steps)
            or (f"known steps: {', '.join(steps)}" if steps else None),
        )
    param_names = [p.name for p in step.parameters] if step else None
    variants = _variants(c, body, path, what, step, param_names)
    sets = _parameter_sets(c, body, path, what, step, param_names)
    if sets and task_type != "manual_search":
        c.warn(
            (*path, "parameter-sets"),
            f"{what} has parameter-sets but is a {task_type} task",
            "parameter-sets suit `type: manual_search`",
            at_key=True,
        )
    if task_type != "bayesian_tpe":
        for key in BAYESIAN_ONLY:
            if key in body:
                c.warn(
                    (*path, key),
                    f"'{key}' of {what} only applies to bayesian_tpe tasks",
                    at_key=True,
                )
    counts: dict[str, int | None] = {}
    for key in ("execution-count", "execution-batch-size", "maximum-queued-executions"):
        value = c.number(body, key, path, what, integer=True)
        if value is not None and value < 1:
            c.error((*path, key), f"'{key}' of {what} must be at least 1, got {value}")
            value = None
        counts[key] = int(value) if value is not None else None
    engine = c.string(body, "engine", path, what)
    if engine is not None and engine.lower() not in ENGINES:
        c.warn(
            (*path, "engine"),
            f"engine '{engine}' of {what} is not a known engine",
            f"known engines: {', '.join(ENGINES)}",
        )
    on_child_error = None
    if body.get("on-child-error") is not None:
        raw = c.string(body, "on-child-error", path, what)
        if raw is not None:
            normalized = raw.strip().lower().replace("_", "-")
            if normalized in ON_CHILD_ERROR:
                on_child_error = normalized
            else:
                c.error(
                    (*path, "on-child-error"),
                    f"'on-child-error' of {what} must be one of {', '.join(ON_CHILD_ERROR)}; got "
                    f"'{raw}'",
                    did_you_mean(normalized, ON_CHILD_ERROR),
                )
    target_value = c.number(body, "optimization-target-value", path, what)
    target_metric = c.string(body, "optimization-target-metric", path, what)
    stop_condition = c.expression(body, "stop-condition", path, what)
    reuse = c.boolean(body, "reuse-children", path, what)
    prune = _prune(c, body, path, what, target_metric)
    if name is None:
        return None
    return Task(
        name=name,
        step=step_name or "",
        type=task_type,
        description=c.text(body, "description", path),
        parameters=variants,
        parameter_sets=sets,
        execution_count=counts["execution-count"],
        execution_batch_size=counts["execution-batch-size"],
        maximum_queued_executions=counts["maximum-queued-executions"],
        optimization_target_metric=target_metric,
        optimization_target_value=float(target_value) if target_value is not None else None,
        engine=engine,
        on_child_error=on_child_error,
        stop_condition=stop_condition,
        reuse_children=bool(reuse),
        prune=prune,
    )


def _prune(c: Checker, body: dict[str, Any], path: PathKey, what: str,
           target_metric: str | None) -> str | None:
    """``prune: median|halving|none``: it compares trials by the target metric."""
    if body.get("prune") is None:
        return None
    raw = c.string(body, "prune", path, what)
    if raw is None:
        return None
    normalized = raw.strip().lower().replace("_", "-")
    normalized = {"successive-halving": "halving"}.get(normalized, normalized)
    if normalized not in PRUNERS:
        c.error((*path, "prune"),
                f"'prune' of {what} must be one of {', '.join(PRUNERS)}; got '{raw}'",
                did_you_mean(normalized, PRUNERS))
        return None
    if normalized != "none" and not target_metric:
        c.error((*path, "prune"),
                f"{what} prunes trials ({normalized}) by its target metric, but has no "
                "'optimization-target-metric'",
                "name the metric its trials report, e.g. optimization-target-metric: val_loss")
        return None
    return normalized


def _unknown_parameter(
    c: Checker, path: PathKey, what: str, name: str, step: Step, names: list[str]
) -> None:
    c.error(
        path,
        f"{what} varies parameter '{name}', but step '{step.name}' has no such parameter",
        did_you_mean(name, names)
        or (f"its parameters are: {', '.join(names)}" if names else "it declares no parameters"),
    )


def _variants(
    c: Checker,
    body: dict[str, Any],
    path: PathKey,
    what: str,
    step: Step | None,
    names: list[str] | None,
) -> list[VariantParameter]:
    out: list[VariantParameter] = []
    for i, item in enumerate(c.items(body, "parameters", path, what)):
        vpath = (*path, "parameters", i)
        mapping = c.mapping(item, vpath, f"a parameter of {what}")
        if mapping is None:
            continue
        name = c.string(mapping, "name", vpath, f"a parameter of {what}")
        vwhat = f"parameter '{name}' of {what}" if name else f"a parameter of {what}"
        c.check_keys(mapping, vpath, vwhat, VARIANT_KEYS, ("name", "style", "rules"))
        if name is not None and step is not None and names is not None and name not in names:
            _unknown_parameter(c, (*vpath, "name"), what, name, step, names)
        style = c.choice(mapping, "style", vpath, vwhat, VARIANT_STYLES)
        rules = (
            c.mapping(mapping["rules"], (*vpath, "rules"), f"rules of {vwhat}")
            if "rules" in mapping
            else None
        )
        if style is not None and rules is not None:
            _check_rules(c, rules, (*vpath, "rules"), vwhat, style)
        if name is not None and style is not None:
            out.append(VariantParameter(name=name, style=style, rules=dict(rules or {})))
    return out


def _check_rules(c: Checker, rules: dict[str, Any], path: PathKey, what: str, style: str) -> None:
    allowed = (*RULE_KEYS[style], *COMMON_RULE_KEYS)
    c.check_keys(rules, path, f"rules of {what} (style {style})", allowed, severity="warning")
    for key in REQUIRED_RULES[style]:
        if key not in rules:
            c.error(path, f"rules of {what} need '{key}' for style {style}")
    for key in ("start", "end", "step", "count", "base", "min", "max", "seed"):
        if key in rules and key in allowed and not is_number(rules[key]):
            c.error(
                (*path, key), f"rule '{key}' of {what} must be a number, got {describe(rules[key])}"
            )
    if style == "multiple" and "items" in rules and not isinstance(rules["items"], list):
        c.error(
            (*path, "items"),
            f"rule 'items' of {what} must be a list, got {describe(rules['items'])}",
        )
    if style in ("logspace", "random") and is_number(rules.get("count")) and rules["count"] < 1:
        c.error((*path, "count"), f"rule 'count' of {what} must be at least 1")
    for key in COMMON_RULE_KEYS:
        c.boolean(rules, key, path, f"rules of {what}")


def _parameter_sets(
    c: Checker,
    body: dict[str, Any],
    path: PathKey,
    what: str,
    step: Step | None,
    names: list[str] | None,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(c.items(body, "parameter-sets", path, what)):
        spath = (*path, "parameter-sets", i)
        mapping = c.mapping(item, spath, f"a parameter set of {what}")
        if mapping is None:
            continue
        if step is not None and names is not None:
            for key in mapping:
                if key not in names:
                    _unknown_parameter(c, (*spath, key), what, key, step, names)
        out.append(dict(mapping))
    return out


# -- endpoints ---------------------------------------------------------------------------


def suggest_endpoint_name(name: str) -> str | None:
    """A valid endpoint name close to ``name`` (None if none can be made)."""
    fixed = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    fixed = re.sub(r"-{2,}", "-", fixed)
    if fixed and not fixed[0].isalpha():
        fixed = "endpoint-" + fixed
    return fixed if ENDPOINT_NAME.match(fixed) else None


def validate_endpoint(
    c: Checker, body: dict[str, Any], path: PathKey, index: int
) -> Endpoint | None:
    """The :class:`Endpoint` in ``body`` (best effort); None without a valid name."""
    name = c.string(body, "name", path, "the endpoint")
    what = f"endpoint '{name}'" if name else f"the endpoint (item {index + 1})"
    c.check_keys(body, path, what, ENDPOINT_KEYS, ("name", "image"))
    if name is not None and not ENDPOINT_NAME.match(name):
        suggestion = suggest_endpoint_name(name)
        c.error(
            (*path, "name"),
            f"endpoint name '{name}' is invalid: it must start with a lowercase letter and "
            "contain only lowercase letters, digits and '-' (at least 2 characters)",
            f"it becomes part of a URL; try '{suggestion}'"
            if suggestion
            else "it becomes part of a URL",
        )
    image = c.string(body, "image", path, what)
    server_command = c.strings(body, "server-command", path, what)
    wsgi = c.string(body, "wsgi", path, what)
    if ("server-command" in body) == ("wsgi" in body):
        c.error(
            path,
            f"{what} needs exactly one of 'server-command' or 'wsgi'",
            "use server-command to start your own server, or wsgi: module:callable for a WSGI app",
        )
    if wsgi is not None and not _WSGI.match(wsgi):
        c.error(
            (*path, "wsgi"), f"'wsgi' of {what} must be 'module' or 'module:callable', got '{wsgi}'"
        )
    port = 8000
    if "port" in body:
        value = c.number(body, "port", path, what, integer=True)
        if value is not None and not 1025 <= value <= 65535:
            c.error(
                (*path, "port"),
                f"port {value} of {what} is out of range",
                "use a port from 1025 to 65535",
            )
        elif value is not None:
            port = int(value)
    files: list[EndpointFile] = []
    for i, item in enumerate(c.items(body, "files", path, what)):
        fpath = (*path, "files", i)
        mapping = c.mapping(item, fpath, f"a file of {what}")
        if mapping is None:
            continue
        fname = c.string(mapping, "name", fpath, f"a file of {what}")
        c.check_keys(
            mapping, fpath, f"file '{fname}' of {what}", ENDPOINT_FILE_KEYS, ("name", "path")
        )
        fpath_value = c.string(mapping, "path", fpath, f"file '{fname}' of {what}")
        if fname and fpath_value:
            files.append(EndpointFile(fname, fpath_value, c.text(mapping, "description", fpath)))
    node_selector = c.string(body, "node-selector", path, what)
    if node_selector is not None and "=" not in node_selector:
        c.error(
            (*path, "node-selector"),
            f"'node-selector' of {what} must look like key=value, got '{node_selector}'",
        )
    tolerations = _tolerations(c, body, path, what)
    if name is None or not ENDPOINT_NAME.match(name):
        return None
    return Endpoint(
        name=name,
        image=image,
        server_command=server_command,
        wsgi=wsgi,
        description=c.text(body, "description", path),
        port=port,
        files=files,
        resources=resources_spec(c, body, path, what, ENDPOINT_RESOURCE_KEYS),
        node_selector=node_selector,
        tolerations=tolerations,
    )


def _tolerations(
    c: Checker, body: dict[str, Any], path: PathKey, what: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(c.items(body, "tolerations", path, what)):
        tpath = (*path, "tolerations", i)
        mapping = c.mapping(item, tpath, f"a toleration of {what}")
        if mapping is None:
            continue
        twhat = f"a toleration of {what}"
        c.check_keys(mapping, tpath, twhat, TOLERATION_KEYS)
        c.string(mapping, "key", tpath, twhat)
        c.string(mapping, "value", tpath, twhat)
        if "operator" in mapping:
            c.choice(mapping, "operator", tpath, twhat, TOLERATION_OPERATORS)
        if "effect" in mapping:
            c.choice(mapping, "effect", tpath, twhat, TOLERATION_EFFECTS)
        out.append(dict(mapping))
    return out


# -- deployments -------------------------------------------------------------------------


def validate_deployment(
    c: Checker, body: dict[str, Any], path: PathKey, index: int
) -> Deployment | None:
    """The :class:`Deployment` in ``body``; None without a name."""
    name = c.string(body, "name", path, "the deployment")
    what = f"deployment '{name}'" if name else f"the deployment (item {index + 1})"
    c.check_keys(body, path, what, DEPLOYMENT_KEYS, ("name",))
    defaults: dict[str, Any] = {}
    if body.get("defaults") is not None:
        defaults = c.mapping(body["defaults"], (*path, "defaults"), f"defaults of {what}") or {}
    if "target" not in defaults:
        c.warn(
            (*path, "defaults") if "defaults" in body else path,
            f"{what} has no defaults.target, so it cannot be created automatically",
            "add `defaults: {target: <deployment target>}`",
        )
    return Deployment(name=name, defaults=dict(defaults)) if name else None
