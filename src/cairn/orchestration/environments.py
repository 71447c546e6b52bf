"""Environments: named machine types from settings, and choosing one for an execution.

In ``~/.config/cairn/config.toml`` or the project's ``.cairn/config.toml``::

    default-environment = "cpu"

    [environments.cpu]
    backend = "local"          # this machine's processes
    max-parallel = 2

    [environments.a100]
    backend = "ray"
    address = "10.0.0.5:6379"
    cpus = 16
    memory-mb = 131072
    gpus = 1
    gpu-kind = "A100"
    resources = { "accelerator_type:A100" = 1 }
    price-per-hour = 2.9

``local`` always exists: this machine, at no price, unless settings define it otherwise.
A step's ``environment:`` or ``cairn run --environment`` picks one; an unknown name is an
error listing the known ones, and a step that needs more than a machine of the type has
is refused when it is submitted (it would wait in the queue forever).
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from cairn.entities import Environment, Resources
from cairn.errors import ConfigError, ExecutionError

if TYPE_CHECKING:
    from cairn.orchestration.context import Context
    from cairn.settings import Settings

BACKENDS = ("local", "ray")
LOCAL = "local"

_NUMBERS = {"cpus": float, "memory_mb": int, "gpus": int, "price_per_hour": float,
            "max_parallel": int, "grace_seconds": float, "autorestart": int}


def load_environments(settings: Settings) -> dict[str, Environment]:
    """Every environment of the settings (checked), plus ``local`` unless it is defined."""
    from cairn.project._check import did_you_mean

    known = {f.name for f in fields(Environment)} - {"name"}
    out: dict[str, Environment] = {}
    for name, table in settings.environments.items():
        source = table.get("_source", "settings")
        where = f"{source}: [environments.{name}]"
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "_source":
                continue
            attr = key.replace("-", "_")
            if attr not in known:
                guess = did_you_mean(attr, sorted(known))
                raise ConfigError(f"{where} has an unknown key '{key}'"
                                  + (f" ({guess})" if guess else ""),
                                  "keys: " + ", ".join(sorted(k.replace("_", "-") for k in known)))
            if attr == "autorestart" and isinstance(value, bool):
                from cairn.project._validate_step import AUTORESTART_DEFAULT

                value = AUTORESTART_DEFAULT if value else 0
            if attr in _NUMBERS:
                try:
                    value = _NUMBERS[attr](value)
                except (TypeError, ValueError):
                    raise ConfigError(f"{where}: {key} = {value!r} is not a number",
                                      f"write e.g. {key} = 2") from None
                if value < 0:
                    raise ConfigError(f"{where}: {key} must not be negative")
            if attr == "resources":
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: resources must be a table of numbers",
                                      'write e.g. resources = { "accelerator_type:A100" = 1 }')
                try:
                    value = {str(k): float(v) for k, v in value.items()}
                except (TypeError, ValueError):
                    raise ConfigError(f"{where}: every custom resource needs a number") from None
            values[attr] = value
        backend = values.get("backend", LOCAL)
        if backend not in BACKENDS:
            raise ConfigError(f"{where}: unknown backend '{backend}'",
                              f"backends: {', '.join(BACKENDS)}")
        out[name] = Environment(name=name, **values)
    out.setdefault(LOCAL, Environment(name=LOCAL, description="this machine"))
    return out


def choose_environment(
    settings: Settings, requested: str | None, step_environment: str | None = None
) -> Environment:
    """The environment an execution runs in: asked for, else the step's, else the default.

    A step's ``environment:`` written for Valohai (a slug or UUID cairn does not know) falls
    back to the default rather than failing; a name asked for explicitly must exist.
    """
    from cairn.project._check import did_you_mean

    environments = load_environments(settings)
    if requested is not None:
        if requested not in environments:
            guess = did_you_mean(requested, sorted(environments))
            raise ConfigError(
                f"unknown environment '{requested}'" + (f" ({guess})" if guess else ""),
                "known environments: " + ", ".join(sorted(environments))
                + "; define more as [environments.NAME] in .cairn/config.toml")
        return environments[requested]
    if step_environment and step_environment in environments:
        return environments[step_environment]
    default = settings.default_environment
    if default:
        if default not in environments:
            raise ConfigError(f"default-environment '{default}' is not defined",
                              "known environments: " + ", ".join(sorted(environments)))
        return environments[default]
    return environments[LOCAL]


def capacity_of(ctx: Context, env: Environment) -> Resources:
    """What one machine of the environment offers (this machine's, where not declared)."""
    if env.backend == LOCAL:
        from cairn.orchestration.scheduler import local_capacity

        # Never more than this machine has: the local backend runs here.
        machine = local_capacity(ctx).resources
        return Resources(
            cpus=min(env.cpus, machine.cpus) if env.cpus is not None else machine.cpus,
            memory_mb=(min(env.memory_mb, machine.memory_mb) if env.memory_mb is not None
                       and machine.memory_mb else env.memory_mb or machine.memory_mb),
            gpus=min(env.gpus, machine.gpus) if env.gpus is not None else machine.gpus,
        )
    if env.cpus is None and env.memory_mb is None and env.gpus is None:
        return _largest_ray_node(env)
    return Resources(cpus=env.cpus or 0.0, memory_mb=env.memory_mb or 0, gpus=env.gpus or 0)


def _largest_ray_node(env: Environment) -> Resources:
    """What the biggest alive node of the cluster with the environment's custom resources
    offers (asks the cluster: environments that declare no machine size)."""
    from cairn.executors.ray_backend import connect

    ray = connect(env.address)
    best = Resources(cpus=0.0, memory_mb=0, gpus=0)
    for node in ray.nodes():
        res = node.get("Resources", {})
        if not node.get("Alive") or any(res.get(k, 0) < v for k, v in env.resources.items()):
            continue
        best = Resources(cpus=max(best.cpus, float(res.get("CPU", 0))),
                         memory_mb=max(best.memory_mb, int(res.get("memory", 0) // 2**20)),
                         gpus=max(best.gpus, int(res.get("GPU", 0))))
    if best.cpus == 0 and env.resources:
        raise ExecutionError(
            f"no node of the Ray cluster at {env.address} has the resources of environment "
            f"'{env.name}' ({', '.join(f'{k}={v:g}' for k, v in env.resources.items())})",
            "start a node with them (ray start --resources ...) or change the environment")
    return best


def check_fits(ctx: Context, env: Environment, need: Resources, what: str) -> None:
    """Refuse at submit what no machine of the environment could ever run."""
    cap = capacity_of(ctx, env)
    unknown = False
    problems = []
    machine = "this machine" if env.name == LOCAL else f"a machine of '{env.name}'"
    if need.gpus > cap.gpus:
        problems.append(f"{need.gpus} GPU(s) but {machine} has {cap.gpus}")
    if not unknown and need.cpus > cap.cpus:
        problems.append(f"{need.cpus:g} CPUs but {machine} has {cap.cpus:g}")
    if cap.memory_mb and need.memory_mb > cap.memory_mb:
        problems.append(f"{need.memory_mb} MB of memory but {machine} has {cap.memory_mb} MB")
    if problems:
        raise ExecutionError(
            f"{what} needs " + "; ".join(problems),
            "lower the step's `resources` (or --cpus/--memory/--gpus), or choose an "
            "environment with bigger machines (`cairn environments` lists them)",
        )
