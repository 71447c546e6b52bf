"""Validation of ``step`` items (and the parameter/input items pipelines override)."""

from __future__ import annotations

import re
from typing import Any

from cairn.project._check import Checker, describe, did_you_mean, is_number
from cairn.project._yaml import PathKey
from cairn.project.step import (
    DOWNLOAD_MODES,
    KEEP_DIRECTORIES,
    MULTIPLE_MODES,
    PARAMETER_TYPES,
    EnvVarSpec,
    InputSpec,
    Mount,
    OutputSpec,
    Parameter,
    Step,
)

STEP_KEYS = (
    "name",
    "image",
    "command",
    "description",
    "category",
    "icon",
    "parameters",
    "inputs",
    "outputs",
    "environment",
    "runtime-config-preset",
    "environment-variables",
    "environment-variable-groups",
    "mounts",
    "cache-volumes",
    "resources",
    "time-limit",
    "no-output-timeout",
    "upload-store",
    "source-path",
    "stop-condition",
    "autorestart",
)
PARAMETER_KEYS = (
    "name",
    "type",
    "default",
    "optional",
    "min",
    "max",
    "choices",
    "pass-as",
    "pass-true-as",
    "pass-false-as",
    "multiple",
    "multiple-separator",
    "description",
    "category",
    "widget",
)
INPUT_KEYS = (
    "name",
    "default",
    "optional",
    "description",
    "filename",
    "keep-directories",
    "download",
)
OUTPUT_KEYS = ("name", "description")
ENV_VAR_KEYS = ("name", "default", "optional", "description")
MOUNT_KEYS = ("source", "destination", "readonly", "type", "options")
RESOURCE_KEYS = ("cpu", "memory", "devices")
INPUT_NAME_MAX = 64

_TYPE_ALIASES = {
    "int": "integer",
    "str": "string",
    "text": "string",
    "bool": "flag",
    "boolean": "flag",
    "number": "float",
    "double": "float",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def validate_step(c: Checker, body: dict[str, Any], path: PathKey, index: int) -> Step | None:
    """The :class:`Step` in ``body`` (best effort), reporting every problem; None without a name."""
    name = c.string(body, "name", path, "the step")
    what = f"step '{name}'" if name else f"the step (item {index + 1})"
    c.check_keys(
        body,
        path,
        what,
        STEP_KEYS,
        ("name", "image", "command"),
        outer=("step", "pipeline", "blueprint", "task", "endpoint", "deployment"),
        outer_what="item",
    )
    image = c.string(body, "image", path, what)
    command = c.strings(body, "command", path, what) or []
    if "command" in body and isinstance(body["command"], list) and not body["command"]:
        c.warn((*path, "command"), f"{what} has an empty command list; it will do nothing")

    parameters = _parameters(c, body, path, what)
    inputs = _inputs(c, body, path, what)
    outputs = _outputs(c, body, path, what)
    environment = c.string(body, "environment", path, what)
    preset = c.string(body, "runtime-config-preset", path, what)
    if preset is not None and environment is None:
        c.error(
            (*path, "runtime-config-preset"),
            f"{what} sets runtime-config-preset without an environment",
            "a runtime config preset belongs to one environment: add `environment: <name>` to "
            "the step",
            at_key=True,
        )
    env_vars = env_var_items(c, body, path, what)
    groups = c.strings(body, "environment-variable-groups", path, what, single=False) or []
    mounts = mount_items(c, body, path, what)
    cache_volumes = c.strings(body, "cache-volumes", path, what, single=False) or []
    resources = resources_spec(c, body, path, what, RESOURCE_KEYS)
    source_path = c.string(body, "source-path", path, what)
    step = Step(
        name=name or "",
        image=image,
        command=command,
        description=c.text(body, "description", path),
        category=c.text(body, "category", path),
        icon=c.string(body, "icon", path, what),
        parameters=parameters,
        inputs=inputs,
        outputs=outputs,
        environment=environment,
        runtime_config_preset=preset,
        environment_variables=env_vars,
        environment_variable_groups=groups,
        mounts=mounts,
        cache_volumes=cache_volumes,
        resources_spec=resources,
        time_limit=c.duration(body, "time-limit", path, what),
        no_output_timeout=c.duration(body, "no-output-timeout", path, what),
        upload_store=c.string(body, "upload-store", path, what, max_length=64),
        source_path=source_path,
        stop_condition=c.expression(body, "stop-condition", path, what),
        autorestart=_autorestart(c, body, path, what),
    )
    _check_placeholders(c, step, body, path, what)
    return step if name else None


AUTORESTART_DEFAULT = 3
"""How many times ``autorestart: true`` restarts a crashed or preempted execution."""


def _autorestart(c: Checker, body: dict[str, Any], path: PathKey, what: str) -> int:
    """``autorestart: true`` (restart up to 3 times), ``false``, or how many times."""
    value = body.get("autorestart")
    if value is None or value is False:
        return 0
    if value is True:
        return AUTORESTART_DEFAULT
    if isinstance(value, int) and value >= 0:
        return value
    c.error((*path, "autorestart"),
            f"'autorestart' of {what} must be true, false or how many restarts (0 or more), "
            f"got {value!r}")
    return 0


def _check_placeholders(
    c: Checker, step: Step, body: dict[str, Any], path: PathKey, what: str
) -> None:
    names = [p.name for p in step.parameters]
    listed = isinstance(body.get("command"), list)
    for i, command in enumerate(step.command):
        where: PathKey = (*path, "command", i) if listed else (*path, "command")
        for match in _PLACEHOLDER.finditer(command):
            kind, _, ref = match.group(1).partition(":")
            if kind in ("parameter", "parameter-value") and ref and ref not in names:
                c.warn(
                    where,
                    f"command of {what} refers to unknown parameter '{ref}' in '{match.group(0)}'",
                    did_you_mean(ref, names) or "it will be left in the command as written",
                )
            elif kind == "source-path" and not ref and step.source_path is None:
                c.warn(
                    where,
                    f"command of {what} uses {{source-path}} but the step has no source-path",
                    "add `source-path: <file>` to the step",
                )


# -- parameters ------------------------------------------------------------------------


def _parameters(c: Checker, body: dict[str, Any], path: PathKey, what: str) -> list[Parameter]:
    out: list[Parameter] = []
    seen: set[str] = set()
    for i, item in enumerate(c.items(body, "parameters", path, what)):
        item_path = (*path, "parameters", i)
        param = parameter_item(c, item, item_path, what)
        if param is None:
            continue
        if param.name in seen:
            c.error((*item_path, "name"), f"{what} has two parameters called '{param.name}'")
            continue
        seen.add(param.name)
        out.append(param)
    return out


def parameter_item(c: Checker, item: Any, path: PathKey, step_what: str) -> Parameter | None:
    """A :class:`Parameter` from one ``parameters`` entry, or None if it has no usable name."""
    mapping = c.mapping(item, path, f"a parameter of {step_what}")
    if mapping is None:
        return None
    name = c.string(mapping, "name", path, f"a parameter of {step_what}")
    what = f"parameter '{name}' of {step_what}" if name else f"a parameter of {step_what}"
    c.check_keys(mapping, path, what, PARAMETER_KEYS, ("name",), outer=STEP_KEYS, outer_what="step")
    ptype = "string"
    if "type" in mapping:
        raw_type = mapping["type"]
        if isinstance(raw_type, str) and raw_type in PARAMETER_TYPES:
            ptype = raw_type
        else:
            alias = _TYPE_ALIASES.get(str(raw_type).lower()) if isinstance(raw_type, str) else None
            hint = (
                f"did you mean '{alias}'?"
                if alias
                else did_you_mean(str(raw_type), PARAMETER_TYPES)
            )
            c.error(
                (*path, "type"),
                f"'type' of {what} must be one of {', '.join(PARAMETER_TYPES)}; got "
                f"{describe(raw_type)}",
                hint,
            )
            ptype = alias or "string"
    multiple = "none"
    if "multiple" in mapping:
        raw_multiple = mapping["multiple"]
        if raw_multiple is False or raw_multiple is None:
            multiple = "none"
        else:
            multiple = c.choice(mapping, "multiple", path, what, MULTIPLE_MODES) or "none"
        if multiple != "none" and ptype == "flag":
            c.error((*path, "multiple"), f"{what} is a flag and cannot take multiple values")
            multiple = "none"
    optional = c.boolean(mapping, "optional", path, what)
    if ptype == "flag" and "optional" in mapping:
        c.warn((*path, "optional"), f"{what} is a flag; flags are always optional", at_key=True)
    low = c.number(mapping, "min", path, what)
    high = c.number(mapping, "max", path, what)
    if (low is not None or high is not None) and ptype not in ("integer", "float"):
        c.warn(
            (*path, "min" if low is not None else "max"),
            f"min/max of {what} only apply to numbers",
            at_key=True,
        )
    if low is not None and high is not None and low > high:
        c.error((*path, "min"), f"{what} has min {low} above max {high}", at_key=True)
    choices = _choices(c, mapping, path, what)
    pass_as = c.string(mapping, "pass-as", path, what)
    pass_true = c.string(mapping, "pass-true-as", path, what)
    pass_false = c.string(mapping, "pass-false-as", path, what)
    if ptype != "flag" and (pass_true is not None or pass_false is not None):
        c.warn(path, f"pass-true-as/pass-false-as of {what} only apply to flags")
    if (
        ptype == "flag"
        and pass_as is not None
        and (pass_true is not None or pass_false is not None)
    ):
        c.warn(
            (*path, "pass-as"),
            f"pass-as of {what} is ignored because pass-true-as/pass-false-as is set",
            at_key=True,
        )
    if ptype != "flag" and pass_as is not None and not re.search(r"\{(v|value)\}", pass_as):
        c.warn(
            (*path, "pass-as"),
            f"pass-as of {what} does not contain {{v}} or {{value}}, so the value is never passed",
        )
    separator = c.string(mapping, "multiple-separator", path, what)
    widget = mapping.get("widget")
    if widget is not None and not isinstance(widget, (str, dict)):
        c.error(
            (*path, "widget"),
            f"'widget' of {what} must be a string or a mapping, got {describe(widget)}",
        )
        widget = None
    default = mapping.get("default")
    if multiple != "none" and default is not None and not isinstance(default, list):
        default = [default]
    param = Parameter(
        name=name or "",
        type=ptype,
        default=default,
        optional=bool(optional),
        min=low,
        max=high,
        choices=choices,
        pass_as=pass_as,
        pass_true_as=pass_true,
        pass_false_as=pass_false,
        multiple=multiple,
        multiple_separator=separator if separator is not None else ",",
        description=c.text(mapping, "description", path),
        category=c.text(mapping, "category", path),
        widget=widget,
    )
    if default is not None and name:
        _check_default(c, param, (*path, "default"), what)
    return param if name else None


def _choices(c: Checker, mapping: dict[str, Any], path: PathKey, what: str) -> list[Any] | None:
    if "choices" not in mapping or mapping["choices"] is None:
        return None
    choices = mapping["choices"]
    if not isinstance(choices, list) or not choices:
        c.error(
            (*path, "choices"),
            f"'choices' of {what} must be a non-empty list, got {describe(choices)}",
        )
        return None
    for i, choice in enumerate(choices):
        if isinstance(choice, (list, dict)) or choice is None:
            c.error(
                (*path, "choices", i),
                f"choices of {what} must be plain values, got {describe(choice)}",
            )
            return None
    return list(choices)


def _check_default(c: Checker, param: Parameter, path: PathKey, what: str) -> None:
    from cairn.project.parameters import check_value

    values = param.default if isinstance(param.default, list) else [param.default]
    if isinstance(param.default, list) and not param.is_multiple:
        c.warn(
            path,
            f"default of {what} is a list, but the parameter takes one value",
            "set `multiple: repeat` or `separate`",
        )
        return
    for value in values:
        reason = check_value(param, value)
        if reason:
            c.warn(path, f"default of {what} is not valid: {reason}")
            return


# -- inputs, outputs, environment variables, mounts, resources -------------------------


def _inputs(c: Checker, body: dict[str, Any], path: PathKey, what: str) -> list[InputSpec]:
    out: list[InputSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(c.items(body, "inputs", path, what)):
        item_path = (*path, "inputs", i)
        spec = input_item(c, item, item_path, what)
        if spec is None:
            continue
        if spec.name in seen:
            c.error((*item_path, "name"), f"{what} has two inputs called '{spec.name}'")
            continue
        seen.add(spec.name)
        out.append(spec)
    return out


def input_item(c: Checker, item: Any, path: PathKey, step_what: str) -> InputSpec | None:
    """An :class:`InputSpec` from one ``inputs`` entry, or None if it has no usable name."""
    mapping = c.mapping(item, path, f"an input of {step_what}")
    if mapping is None:
        return None
    name = c.string(mapping, "name", path, f"an input of {step_what}", max_length=INPUT_NAME_MAX)
    what = f"input '{name}' of {step_what}" if name else f"an input of {step_what}"
    c.check_keys(mapping, path, what, INPUT_KEYS, ("name",), outer=STEP_KEYS, outer_what="step")
    if name is not None and ("/" in name or name in (".", "..")):
        c.error(
            (*path, "name"),
            f"{what} cannot be used as a folder name",
            "use letters, digits, '-' and '_'",
        )
        name = None
    keep = mapping.get("keep-directories")
    if keep is True:
        keep = "full"
    elif keep is False or keep is None:
        keep = "none"
    else:
        keep = c.choice(mapping, "keep-directories", path, what, KEEP_DIRECTORIES) or "none"
    spec = InputSpec(
        name=name or "",
        default=[d for d in c.strings(mapping, "default", path, what) or [] if d.strip()],
        optional=bool(c.boolean(mapping, "optional", path, what)),
        filename=c.string(mapping, "filename", path, what),
        keep_directories=keep,
        download=c.choice(mapping, "download", path, what, DOWNLOAD_MODES) or "always",
        description=c.text(mapping, "description", path),
    )
    return spec if name else None


def _outputs(c: Checker, body: dict[str, Any], path: PathKey, what: str) -> list[OutputSpec]:
    out: list[OutputSpec] = []
    for i, item in enumerate(c.items(body, "outputs", path, what)):
        item_path = (*path, "outputs", i)
        mapping = c.mapping(item, item_path, f"an output of {what}")
        if mapping is None:
            continue
        name = c.string(mapping, "name", item_path, f"an output of {what}")
        c.check_keys(
            mapping,
            item_path,
            f"an output of {what}",
            OUTPUT_KEYS,
            ("name",),
            outer=STEP_KEYS,
            outer_what="step",
        )
        if name:
            out.append(OutputSpec(name=name, description=c.text(mapping, "description", item_path)))
    return out


def env_var_items(c: Checker, body: dict[str, Any], path: PathKey, what: str) -> list[EnvVarSpec]:
    """The ``environment-variables`` of a step or override."""
    out: list[EnvVarSpec] = []
    for i, item in enumerate(c.items(body, "environment-variables", path, what)):
        item_path = (*path, "environment-variables", i)
        mapping = c.mapping(item, item_path, f"an environment variable of {what}")
        if mapping is None:
            continue
        name = c.string(mapping, "name", item_path, f"an environment variable of {what}")
        ev_what = f"environment variable '{name}' of {what}"
        c.check_keys(mapping, item_path, ev_what, ENV_VAR_KEYS, ("name",))
        if name is None:
            continue
        if not _ENV_NAME.match(name):
            c.warn(
                (*item_path, "name"),
                f"'{name}' is not a usual environment variable name",
                "use letters, digits and '_'",
            )
        default = mapping.get("default")
        if isinstance(default, (list, dict)):
            c.error(
                (*item_path, "default"),
                f"default of {ev_what} must be text, got {describe(default)}",
            )
            default = None
        elif default is not None and not isinstance(default, str):
            default = c.doc.raw_text((*item_path, "default")) or str(default)
        optional = c.boolean(mapping, "optional", item_path, ev_what)
        out.append(
            EnvVarSpec(
                name=name,
                default=default,
                optional=True if optional is None else optional,
                description=c.text(mapping, "description", item_path),
            )
        )
    return out


def mount_items(c: Checker, body: dict[str, Any], path: PathKey, what: str) -> list[Mount]:
    """The ``mounts`` of a step or override, short ``src:dst`` strings included."""
    out: list[Mount] = []
    for i, item in enumerate(c.items(body, "mounts", path, what)):
        item_path = (*path, "mounts", i)
        if isinstance(item, str):
            try:
                mount = Mount.parse(item)
            except ValueError as exc:
                c.error(item_path, f"mount of {what}: {exc}")
                continue
            if not mount.source.startswith("/") or not mount.destination.startswith("/"):
                c.error(
                    item_path, f"mount '{item}' of {what} needs absolute paths on both sides of ':'"
                )
                continue
            out.append(mount)
            continue
        mapping = c.mapping(item, item_path, f"a mount of {what}")
        if mapping is None:
            continue
        c.check_keys(
            mapping, item_path, f"a mount of {what}", MOUNT_KEYS, ("source", "destination")
        )
        source = c.string(mapping, "source", item_path, f"a mount of {what}")
        destination = c.string(mapping, "destination", item_path, f"a mount of {what}")
        if destination is not None and not destination.startswith("/"):
            c.error(
                (*item_path, "destination"),
                f"mount destination '{destination}' of {what} must be an absolute path",
            )
            destination = None
        options = mapping.get("options") or {}
        if not isinstance(options, dict):
            c.error((*item_path, "options"), f"'options' of a mount of {what} must be a mapping")
            options = {}
        if source and destination:
            out.append(
                Mount(
                    source=source,
                    destination=destination,
                    readonly=bool(c.boolean(mapping, "readonly", item_path, f"a mount of {what}")),
                    type=c.string(mapping, "type", item_path, f"a mount of {what}"),
                    options=options,
                )
            )
    return out


def resources_spec(
    c: Checker, body: dict[str, Any], path: PathKey, what: str, allowed: tuple[str, ...]
) -> dict[str, Any]:
    """The validated ``resources`` mapping (k8s-style ``cpu``/``memory`` min/max, ``devices``)."""
    if body.get("resources") is None:
        return {}
    rpath = (*path, "resources")
    spec = c.mapping(body["resources"], rpath, f"resources of {what}")
    if spec is None:
        return {}
    c.check_keys(spec, rpath, f"resources of {what}", allowed)
    out: dict[str, Any] = {}
    for key in allowed:
        if key == "devices" or spec.get(key) is None:
            continue
        value = spec[key]
        if is_number(value):
            c.error(
                (*rpath, key),
                f"resources '{key}' of {what} must give min and/or max",
                f"write `{key}: {{min: {value}}}`",
            )
            continue
        limits = c.mapping(value, (*rpath, key), f"resources '{key}' of {what}")
        if limits is None:
            continue
        c.check_keys(limits, (*rpath, key), f"resources '{key}' of {what}", ("min", "max"))
        low = c.number(limits, "min", (*rpath, key), f"resources '{key}' of {what}")
        high = c.number(limits, "max", (*rpath, key), f"resources '{key}' of {what}")
        if any(v is not None and v < 0 for v in (low, high)):
            c.error((*rpath, key), f"resources '{key}' of {what} cannot be negative")
            continue
        if low is not None and high is not None and low > high:
            c.error((*rpath, key), f"resources '{key}' of {what} has min {low} above max {high}")
            continue
        out[key] = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
    if "devices" in allowed and "devices" in spec:
        devices = spec["devices"] if spec["devices"] is not None else {}
        mapping = (
            c.mapping(devices, (*rpath, "devices"), f"resources 'devices' of {what}")
            if devices != {}
            else {}
        )
        if mapping is not None:
            good: dict[str, int] = {}
            for device, count in mapping.items():
                if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                    c.error(
                        (*rpath, "devices", device),
                        f"device count '{device}' of {what} must be a whole number of at least "
                        f"1, got {describe(count)}",
                    )
                    continue
                good[device] = count
            out["devices"] = good
    return out
