"""A step and its parts: parameters, inputs, outputs, environment variables, mounts.

All are frozen dataclasses with ``to_dict`` (JSON-able, valohai.yaml key spelling, keys
at their default left out) and ``from_dict`` (the inverse), so an execution can store
the exact step it ran and be re-run from that record alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cairn.project._serial import Serializable
from cairn.project.durations import parse_duration

PARAMETER_TYPES = ("string", "integer", "float", "flag")
MULTIPLE_MODES = ("none", "repeat", "separate")
KEEP_DIRECTORIES = ("none", "full", "suffix")
DOWNLOAD_MODES = ("always", "on-demand")

_ALWAYS = {"always": True}


def _list_of(cls: Any) -> Callable[[Any], list[Any]]:
    def load(value: Any) -> list[Any]:
        return [item if isinstance(item, cls) else cls.from_dict(item) for item in value or []]

    return load


def _str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _keep_directories(value: Any) -> str:
    if value is True:
        return "full"
    if value is False or value is None:
        return "none"
    return str(value)


def _optional_duration(value: Any) -> float | None:
    return None if value is None else parse_duration(value)


def _dump_seconds(value: float | None) -> int | float | None:
    if value is not None and float(value).is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class Parameter(Serializable):
    """A typed value given to a step's commands (see ``cairn.project.parameters``)."""

    name: str = field(metadata=_ALWAYS)
    type: str = field(default="string", metadata=_ALWAYS)
    default: Any = None
    optional: bool = False
    min: int | float | None = None
    max: int | float | None = None
    choices: list[Any] | None = None
    pass_as: str | None = None
    pass_true_as: str | None = None
    pass_false_as: str | None = None
    multiple: str = "none"
    multiple_separator: str = ","
    description: str | None = None
    category: str | None = None
    widget: Any = None

    @property
    def is_multiple(self) -> bool:
        """True when the parameter takes a list of values."""
        return self.multiple != "none"


@dataclass(frozen=True)
class InputSpec(Serializable):
    """A named input: files that land in the step's ``inputs/<name>/`` folder."""

    name: str = field(metadata=_ALWAYS)
    default: list[str] = field(default_factory=list, metadata={"load": _str_list})
    optional: bool = False
    filename: str | None = None
    keep_directories: str = field(default="none", metadata={"load": _keep_directories})
    download: str = "always"
    description: str | None = None


@dataclass(frozen=True)
class OutputSpec(Serializable):
    """A declared output; informational, since every file written to outputs is kept."""

    name: str = field(metadata=_ALWAYS)
    description: str | None = None


@dataclass(frozen=True)
class EnvVarSpec(Serializable):
    """An environment variable the step expects; a non-optional one needs a value."""

    name: str = field(metadata=_ALWAYS)
    default: str | None = None
    optional: bool = True
    description: str | None = None


@dataclass(frozen=True)
class Mount(Serializable):
    """A host (or network) folder mounted into the container at ``destination``."""

    source: str = field(metadata=_ALWAYS)
    destination: str = field(metadata=_ALWAYS)
    readonly: bool = False
    type: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Mount:
        """A mount from its short form ``/host/path:/container/path`` (``:ro`` for read-only)."""
        parts = text.split(":")
        readonly = False
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            readonly = parts.pop() == "ro"
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"expected '/host/path:/container/path', got '{text}'")
        return cls(source=parts[0], destination=parts[1], readonly=readonly)


def _load_mounts(value: Any) -> list[Mount]:
    return [
        m if isinstance(m, Mount) else Mount.parse(m) if isinstance(m, str) else Mount.from_dict(m)
        for m in value or []
    ]


def normalize_resources(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"cpus", "memory_mb", "gpus"}`` from k8s-style ``cpu``/``memory``/``devices``.

    The requirement is each resource's ``min`` if given, else its ``max``; ``gpus`` adds up
    the ``devices`` whose name ends in ``gpu`` (``nvidia.com/gpu``, ``amd.com/gpu``).
    """
    spec = spec or {}

    def need(key: str) -> Any:
        value = spec.get(key)
        if isinstance(value, Mapping):
            return value.get("min") if value.get("min") is not None else value.get("max")
        return None

    cpus = need("cpu")
    memory = need("memory")
    devices = spec.get("devices") or {}
    gpus = sum(
        int(n)
        for name, n in devices.items()
        if str(name).lower().endswith("gpu") and isinstance(n, (int, float))
    )
    return {
        "cpus": float(cpus) if cpus is not None else None,
        "memory_mb": int(round(memory)) if memory is not None else None,
        "gpus": gpus,
    }


def _resources_spec(resources: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if resources.get("cpus") is not None:
        spec["cpu"] = {"min": resources["cpus"]}
    if resources.get("memory_mb") is not None:
        spec["memory"] = {"min": resources["memory_mb"]}
    if resources.get("gpus"):
        spec["devices"] = {"nvidia.com/gpu": resources["gpus"]}
    return spec


@dataclass(frozen=True)
class Step(Serializable):
    """One runnable unit: an image, commands, and the typed parameters and inputs they use.

    ``resources`` is the normalized requirement (see :func:`normalize_resources`);
    ``resources_spec`` keeps the ``resources`` mapping as written in the YAML.
    ``time_limit`` and ``no_output_timeout`` are seconds.
    """

    name: str = field(metadata=_ALWAYS)
    image: str | None = field(default=None, metadata=_ALWAYS)
    command: list[str] = field(default_factory=list, metadata={**_ALWAYS, "load": _str_list})
    description: str | None = None
    category: str | None = None
    icon: str | None = None
    parameters: list[Parameter] = field(
        default_factory=list, metadata={"load": _list_of(Parameter)}
    )
    inputs: list[InputSpec] = field(default_factory=list, metadata={"load": _list_of(InputSpec)})
    outputs: list[OutputSpec] = field(default_factory=list, metadata={"load": _list_of(OutputSpec)})
    environment: str | None = None
    runtime_config_preset: str | None = None
    environment_variables: list[EnvVarSpec] = field(
        default_factory=list, metadata={"load": _list_of(EnvVarSpec)}
    )
    environment_variable_groups: list[str] = field(
        default_factory=list, metadata={"load": _str_list}
    )
    mounts: list[Mount] = field(default_factory=list, metadata={"load": _load_mounts})
    cache_volumes: list[str] = field(default_factory=list, metadata={"load": _str_list})
    resources_spec: dict[str, Any] = field(default_factory=dict, metadata={"key": "resources"})
    resources: dict[str, Any] = field(default_factory=dict, metadata={"skip": True})
    time_limit: float | None = field(
        default=None, metadata={"load": _optional_duration, "dump": _dump_seconds}
    )
    no_output_timeout: float | None = field(
        default=None, metadata={"load": _optional_duration, "dump": _dump_seconds}
    )
    upload_store: str | None = None
    source_path: str | None = None
    stop_condition: str | None = None
    # cairn's own: restart a crashed or preempted execution up to this many times, with
    # its outputs so far as the input `_restart` (Valohai: `--autorestart`).
    autorestart: int = 0

    def __post_init__(self) -> None:
        if not self.resources:
            object.__setattr__(self, "resources", normalize_resources(self.resources_spec))
        elif not self.resources_spec:
            object.__setattr__(self, "resources_spec", _resources_spec(self.resources))
            object.__setattr__(self, "resources", normalize_resources(self.resources_spec))

    def get_parameter(self, name: str) -> Parameter | None:
        """The parameter called ``name``, or None."""
        return next((p for p in self.parameters if p.name == name), None)

    def get_input(self, name: str) -> InputSpec | None:
        """The input called ``name``, or None."""
        return next((i for i in self.inputs if i.name == name), None)
