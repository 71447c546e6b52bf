"""The project file (``cairn.yaml`` or ``valohai.yaml``): parsing, linting, rendering.

``load_project`` / ``parse_project`` read and validate the file; every problem carries
``file:line:column`` and a hint. ``resolve_parameters`` and ``render_command`` turn a
step and user-supplied values into the commands that run; ``build_script`` says how to
run them.
"""

from __future__ import annotations

from cairn.project._loader import find_project_file, lint, load_project, parse_project
from cairn.project.blueprints import (
    Deployment,
    Edge,
    Endpoint,
    EndpointFile,
    NodeAction,
    NodeOverride,
    Pipeline,
    PipelineNode,
    PipelineParameter,
    Socket,
    Task,
    VariantParameter,
)
from cairn.project.commands import build_script, parameter_args, render_command
from cairn.project.config import ProjectConfig
from cairn.project.durations import parse_duration
from cairn.project.parameters import resolve_parameters
from cairn.project.problems import format_problems
from cairn.project.starter import starter_yaml
from cairn.project.step import (
    EnvVarSpec,
    InputSpec,
    Mount,
    OutputSpec,
    Parameter,
    Step,
    normalize_resources,
)

__all__ = [
    "Deployment",
    "Edge",
    "Endpoint",
    "EndpointFile",
    "EnvVarSpec",
    "InputSpec",
    "Mount",
    "NodeAction",
    "NodeOverride",
    "OutputSpec",
    "Parameter",
    "Pipeline",
    "PipelineNode",
    "PipelineParameter",
    "ProjectConfig",
    "Socket",
    "Step",
    "Task",
    "VariantParameter",
    "build_script",
    "find_project_file",
    "format_problems",
    "lint",
    "load_project",
    "normalize_resources",
    "parameter_args",
    "parse_duration",
    "parse_project",
    "render_command",
    "resolve_parameters",
    "starter_yaml",
]
