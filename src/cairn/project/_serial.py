"""Dataclass <-> plain dict in valohai.yaml key spelling (``pass_as`` <-> ``pass-as``).

Field metadata steers it: ``key`` (the YAML key when it is not the field name with
``-`` for ``_``), ``load`` (turns a stored value back into the field's value), ``dump``
(the reverse), ``always`` (written even when equal to the default) and ``skip`` (derived
fields that are never written).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T", bound="Serializable")


def yaml_key(f: dataclasses.Field[Any]) -> str:
    """The YAML spelling of a dataclass field."""
    return f.metadata.get("key") or f.name.replace("_", "-")


def to_plain(value: Any) -> Any:
    """A JSON-able copy of ``value`` (dataclasses through their ``to_dict``)."""
    if isinstance(value, Serializable):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


class Serializable:
    """Mixin giving dataclasses ``to_dict`` / ``from_dict`` in YAML spelling."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with the YAML keys; fields at their default are left out."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.metadata.get("skip"):
                continue
            value = getattr(self, f.name)
            if not f.metadata.get("always") and value == _default(f):
                continue
            dump = f.metadata.get("dump")
            out[yaml_key(f)] = dump(value) if dump else to_plain(value)
        return out

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        """Rebuild an instance from :meth:`to_dict` output (or a YAML-style mapping).

        Raises ``ValueError`` on keys the class does not know.
        """
        by_key = {
            yaml_key(f): f
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if not f.metadata.get("skip")
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            f = by_key.get(key)
            if f is None:
                raise ValueError(f"{cls.__name__} has no key '{key}'")
            load = f.metadata.get("load")
            kwargs[f.name] = load(value) if load else copy.deepcopy(value)
        return cls(**kwargs)
