"""Validation of ``pipeline`` items: nodes, overrides, actions, edges and parameters."""

from __future__ import annotations

from typing import Any

from cairn.project._check import Checker, did_you_mean
from cairn.project._validate_step import (
    INPUT_KEYS,
    PARAMETER_KEYS,
    env_var_items,
    input_item,
    mount_items,
    parameter_item,
)
from cairn.project._yaml import PathKey
from cairn.project.blueprints import (
    ACTION_THEN,
    ACTION_WHEN,
    EDGE_MERGE_MODES,
    NODE_TYPES,
    ON_ERROR,
    SOCKET_TYPES,
    Edge,
    Endpoint,
    NodeAction,
    NodeOverride,
    Pipeline,
    PipelineNode,
    PipelineParameter,
    Socket,
    Task,
)
from cairn.project.step import Step

PIPELINE_KEYS = ("name", "nodes", "edges", "parameters", "reuse-executions")
_COMMON_NODE_KEYS = ("name", "type", "actions", "on-error")
NODE_KEYS = {
    "execution": (*_COMMON_NODE_KEYS, "step", "commit", "override", "edge-merge-mode"),
    "task": (*_COMMON_NODE_KEYS, "step", "task", "commit", "override", "edge-merge-mode"),
    "deployment": (*_COMMON_NODE_KEYS, "deployment", "endpoints", "aliases", "commit"),
}
OVERRIDE_KEYS = (
    "image",
    "command",
    "parameters",
    "inputs",
    "mounts",
    "environment",
    "environment-variables",
    "runtime-config-preset",
)
ACTION_KEYS = ("when", "if", "then")
EDGE_KEYS = ("source", "target", "configuration")
PIPELINE_PARAMETER_KEYS = ("name", "default", "target", "targets", "category", "description")
SOURCE_TYPES = (
    "output",
    "input",
    "parameter",
    "metadata",
    "deployment",
    "environment-variable",
    "dependency",
)
TARGET_TYPES = ("input", "parameter", "file", "environment-variable", "dependency")


def _known(kind: str, names: list[str]) -> str:
    return f"known {kind}: {', '.join(names)}" if names else f"this file declares no {kind}"


class PipelineValidator:
    """Validates one pipeline against the steps, tasks and endpoints of the same file."""

    def __init__(
        self,
        c: Checker,
        steps: dict[str, Step],
        tasks: dict[str, Task],
        endpoints: dict[str, Endpoint],
    ) -> None:
        self.c = c
        self.steps = steps
        self.tasks = tasks
        self.endpoints = endpoints

    def validate(self, body: dict[str, Any], path: PathKey, index: int) -> Pipeline | None:
        """The :class:`Pipeline` in ``body`` (best effort); None without a name."""
        c = self.c
        name = c.string(body, "name", path, "the pipeline")
        what = f"pipeline '{name}'" if name else f"the pipeline (item {index + 1})"
        c.check_keys(body, path, what, PIPELINE_KEYS, ("name", "nodes", "edges"))
        nodes: list[PipelineNode] = []
        self.node_steps: dict[str, Step | None] = {}
        for i, item in enumerate(c.items(body, "nodes", path, what)):
            node = self._node(item, (*path, "nodes", i), what)
            if node is None:
                continue
            if any(n.name == node.name for n in nodes):
                c.error((*path, "nodes", i, "name"), f"{what} has two nodes called '{node.name}'")
                continue
            nodes.append(node)
        by_name = {n.name: n for n in nodes}
        edges = self._edges(body, path, what, by_name)
        parameters = self._parameters(body, path, what, by_name)
        reuse = c.boolean(body, "reuse-executions", path, what)
        if name is None:
            return None
        return Pipeline(
            name=name, nodes=nodes, edges=edges, parameters=parameters, reuse_executions=bool(reuse)
        )

    # -- nodes -------------------------------------------------------------------------

    def _node(self, item: Any, path: PathKey, pwhat: str) -> PipelineNode | None:
        c = self.c
        mapping = c.mapping(item, path, f"a node of {pwhat}")
        if mapping is None:
            return None
        name = c.string(mapping, "name", path, f"a node of {pwhat}")
        what = f"node '{name}' of {pwhat}" if name else f"a node of {pwhat}"
        inferred = (
            "task"
            if "task" in mapping
            else "deployment"
            if "deployment" in mapping
            else "execution"
        )
        if "type" not in mapping:
            c.error(
                path,
                f"{what} is missing the required key 'type'",
                f"add `type: {inferred}` (one of {', '.join(NODE_TYPES)})",
            )
            ntype = inferred
        else:
            ntype = c.choice(mapping, "type", path, what, NODE_TYPES) or inferred
        c.check_keys(
            mapping,
            path,
            what,
            NODE_KEYS[ntype],
            ("name",),
            outer=PIPELINE_KEYS,
            outer_what="pipeline",
        )
        commit = c.string(mapping, "commit", path, what)
        on_error = c.choice(mapping, "on-error", path, what, ON_ERROR) or "stop-all"
        if ntype == "deployment" and on_error == "retry":
            c.error(
                (*path, "on-error"), f"{what} is a deployment node and cannot use on-error: retry"
            )
            on_error = "stop-all"
        actions = self._actions(mapping, path, what)
        if ntype == "deployment":
            deployment = c.string(mapping, "deployment", path, what)
            if deployment is None and "deployment" not in mapping:
                c.error(
                    path,
                    f"{what} is missing the required key 'deployment'",
                    "name the deployment to create a version in",
                )
            endpoints = c.strings(mapping, "endpoints", path, what) or []
            if commit is None and self.endpoints:
                for i, endpoint in enumerate(endpoints):
                    if endpoint not in self.endpoints:
                        c.warn(
                            (*path, "endpoints", i)
                            if isinstance(mapping.get("endpoints"), list)
                            else (*path, "endpoints"),
                            f"{what} lists endpoint '{endpoint}', which this file does not declare",
                            did_you_mean(endpoint, self.endpoints)
                            or _known("endpoints", list(self.endpoints)),
                        )
            node = PipelineNode(
                name=name or "",
                type=ntype,
                commit=commit,
                actions=actions,
                on_error=on_error,
                deployment=deployment,
                endpoints=endpoints,
                aliases=c.strings(mapping, "aliases", path, what) or [],
            )
            if name:
                self.node_steps[name] = None
            return node if name else None

        step_name = c.string(mapping, "step", path, what)
        task_name = c.string(mapping, "task", path, what) if ntype == "task" else None
        step: Step | None = None
        step_label = f"step '{step_name}'"
        if ntype == "execution" and "step" not in mapping:
            c.error(
                path,
                f"{what} is missing the required key 'step'",
                _known("steps", list(self.steps)),
            )
        if ntype == "task" and ("step" in mapping) == ("task" in mapping):
            c.error(
                path,
                f"{what} must name exactly one of 'step' or 'task'",
                "use `step:` to sweep a step directly or `task:` for a task blueprint of this file",
            )
        elif commit is not None:
            pass  # the step or task lives in another commit or a step library: cannot check here
        elif task_name is not None:
            task = self.tasks.get(task_name)
            if task is None:
                c.error(
                    (*path, "task"),
                    f"{what} refers to unknown task '{task_name}'",
                    did_you_mean(task_name, self.tasks) or _known("tasks", list(self.tasks)),
                )
            else:
                step = self.steps.get(task.step)
                step_label = f"step '{task.step}' (of task '{task_name}')"
        elif step_name is not None:
            step = self.steps.get(step_name)
            if step is None:
                c.error(
                    (*path, "step"),
                    f"{what} refers to unknown step '{step_name}'",
                    did_you_mean(step_name, self.steps) or _known("steps", list(self.steps)),
                )
        override = self._override(mapping, path, what, step, step_label, checkable=commit is None)
        if name:
            self.node_steps[name] = step
        node = PipelineNode(
            name=name or "",
            type=ntype,
            step=step_name,
            task=task_name,
            commit=commit,
            override=override,
            actions=actions,
            on_error=on_error,
            edge_merge_mode=c.choice(mapping, "edge-merge-mode", path, what, EDGE_MERGE_MODES)
            or "replace",
        )
        return node if name else None

    def _actions(self, mapping: dict[str, Any], path: PathKey, what: str) -> list[NodeAction]:
        c = self.c
        out: list[NodeAction] = []
        for i, item in enumerate(c.items(mapping, "actions", path, what)):
            apath = (*path, "actions", i)
            action = c.mapping(item, apath, f"an action of {what}")
            if action is None:
                continue
            awhat = f"an action of {what}"
            c.check_keys(action, apath, awhat, ACTION_KEYS, ("when", "then"))
            when = c.strings(action, "when", apath, awhat) or []
            then = c.strings(action, "then", apath, awhat) or []
            conditions = c.strings(action, "if", apath, awhat) or []
            for value, known, key in ((when, ACTION_WHEN, "when"), (then, ACTION_THEN, "then")):
                for v in value:
                    if v not in known:
                        c.warn(
                            (*apath, key),
                            f"'{key}' of {awhat} has '{v}', which is not a known value",
                            did_you_mean(v, known) or f"known values: {', '.join(known)}",
                        )
            from cairn.project.expressions import check_expression

            for condition in conditions:
                reason = check_expression(condition)
                if reason:
                    c.error(
                        (*apath, "if"),
                        f"condition '{condition}' of {awhat} is not a valid expression: {reason}",
                    )
            out.append(NodeAction(when=when, condition=conditions, then=then))
        return out

    def _override(
        self,
        mapping: dict[str, Any],
        path: PathKey,
        what: str,
        step: Step | None,
        step_label: str,
        *,
        checkable: bool,
    ) -> NodeOverride | None:
        c = self.c
        if mapping.get("override") is None:
            return None
        opath = (*path, "override")
        body = c.mapping(mapping["override"], opath, f"override of {what}")
        if body is None:
            return None
        owhat = f"override of {what}"
        param_names = [p.name for p in step.parameters] if step else []
        input_names = [i.name for i in step.inputs] if step else []
        for key in body:
            if key in OVERRIDE_KEYS:
                continue
            if key in param_names:
                hint = (
                    f"'{key}' is a parameter of {step_label}: should it be nested under "
                    f"`parameters:` as `- name: {key}`?"
                )
            elif key in input_names:
                hint = (
                    f"'{key}' is an input of {step_label}: should it be nested under "
                    f"`inputs:` as `- name: {key}`?"
                )
            else:
                hint = (
                    did_you_mean(key, OVERRIDE_KEYS)
                    or f"an override may only change: {', '.join(OVERRIDE_KEYS)}"
                )
            c.error((*opath, key), f"unknown key '{key}' in {owhat}", hint, at_key=True)
        environment = c.string(body, "environment", opath, owhat)
        preset = c.string(body, "runtime-config-preset", opath, owhat)
        if preset is not None and environment is None:
            c.error(
                (*opath, "runtime-config-preset"),
                f"{owhat} sets runtime-config-preset without environment",
                "a runtime config preset belongs to one environment: add `environment: <name>` "
                "to the override as well",
                at_key=True,
            )
        parameters = self._override_items(
            body, opath, owhat, "parameters", step, step_label, checkable
        )
        inputs = self._override_items(body, opath, owhat, "inputs", step, step_label, checkable)
        return NodeOverride(
            image=c.string(body, "image", opath, owhat),
            command=c.strings(body, "command", opath, owhat),
            parameters=parameters,
            inputs=inputs,
            mounts=mount_items(c, body, opath, owhat) if "mounts" in body else None,
            environment=environment,
            environment_variables=env_var_items(c, body, opath, owhat)
            if "environment-variables" in body
            else None,
            runtime_config_preset=preset,
        )

    def _override_items(
        self,
        body: dict[str, Any],
        opath: PathKey,
        owhat: str,
        key: str,
        step: Step | None,
        step_label: str,
        checkable: bool,
    ) -> list[dict[str, Any]]:
        c = self.c
        singular = "parameter" if key == "parameters" else "input"
        allowed = PARAMETER_KEYS if key == "parameters" else INPUT_KEYS
        existing: dict[str, Any] = {}
        if step is not None:
            existing = {
                p.name: p for p in (step.parameters if key == "parameters" else step.inputs)
            }
        out: list[dict[str, Any]] = []
        for i, item in enumerate(c.items(body, key, opath, owhat)):
            ipath = (*opath, key, i)
            mapping = c.mapping(item, ipath, f"an overridden {singular} of {owhat}")
            if mapping is None:
                continue
            name = c.string(mapping, "name", ipath, f"an overridden {singular}")
            if name is not None and step is not None and checkable and name in existing:
                # Validate the merged item, so a bad type or range is reported here too.
                merged = {**existing[name].to_dict(), **mapping}
                if key == "parameters":
                    parameter_item(c, merged, ipath, f"{step_label} in {owhat}")
                else:
                    input_item(c, merged, ipath, f"{step_label} in {owhat}")
                out.append(dict(mapping))
                continue
            c.check_keys(mapping, ipath, f"overridden {singular} '{name}'", allowed, ("name",))
            if name is None:
                continue
            if step is not None and checkable:
                c.error(
                    (*ipath, "name"),
                    f"{owhat} overrides {singular} '{name}', but {step_label} has no such "
                    f"{singular}",
                    did_you_mean(name, existing)
                    or (
                        f"its {key} are: {', '.join(existing)}"
                        if existing
                        else f"it declares no {key}"
                    ),
                )
                continue
            out.append(dict(mapping))
        return out

    # -- edges -------------------------------------------------------------------------

    def _edges(
        self, body: dict[str, Any], path: PathKey, what: str, nodes: dict[str, PipelineNode]
    ) -> list[Edge]:
        c = self.c
        edges: list[Edge] = []
        for i, item in enumerate(c.items(body, "edges", path, what)):
            epath = (*path, "edges", i)
            configuration: dict[str, Any] = {}
            if isinstance(item, list):
                if len(item) != 2 or not all(isinstance(x, str) for x in item):
                    c.error(
                        epath,
                        f"an edge of {what} written as a list must be [source, target]",
                        "e.g. [train.output.model*, test.input.model]",
                    )
                    continue
                texts = [(item[0], (*epath, 0)), (item[1], (*epath, 1))]
            elif isinstance(item, dict):
                c.check_keys(item, epath, f"an edge of {what}", EDGE_KEYS, ("source", "target"))
                src = c.string(item, "source", epath, f"an edge of {what}")
                tgt = c.string(item, "target", epath, f"an edge of {what}")
                if item.get("configuration") is not None:
                    configuration = (
                        c.mapping(
                            item["configuration"], (*epath, "configuration"), "edge configuration"
                        )
                        or {}
                    )
                if src is None or tgt is None:
                    continue
                texts = [(src, (*epath, "source")), (tgt, (*epath, "target"))]
            else:
                c.error(
                    epath,
                    f"an edge of {what} must be [source, target] or a mapping with source and "
                    "target",
                )
                continue
            source = self._socket(texts[0][0], texts[0][1], "source", nodes)
            target = self._socket(texts[1][0], texts[1][1], "target", nodes)
            if source is None or target is None:
                continue
            if source.node == target.node:
                c.error(epath, f"an edge of {what} connects node '{source.node}' to itself")
                continue
            if (source.type == "dependency") != (target.type == "dependency"):
                c.warn(
                    epath, f"edge {source} -> {target} mixes a dependency socket with a data socket"
                )
            edges.append(Edge(source, target, configuration))
        self._check_cycles(edges, (*path, "edges"), what)
        return edges

    def _socket(
        self, text: str, path: PathKey, role: str, nodes: dict[str, PipelineNode]
    ) -> Socket | None:
        c = self.c
        try:
            socket = Socket.parse(text, nodes)
        except ValueError:
            c.error(
                path,
                f"edge {role} '{text}' is not of the form node.type.key",
                "e.g. train.output.model* or evaluate.input.model",
            )
            return None
        if socket.node not in nodes:
            c.error(
                path,
                f"edge {role} '{text}' refers to unknown node '{socket.node}'",
                did_you_mean(socket.node, nodes) or _known("nodes", list(nodes)),
            )
            return None
        allowed = SOURCE_TYPES if role == "source" else TARGET_TYPES
        if socket.type not in allowed:
            if socket.type in SOCKET_TYPES:
                verb = "start at" if role == "source" else "end at"
                message = f"edge {role} '{text}': an edge cannot {verb} a '{socket.type}' socket"
                hint = f"an edge {role} is one of: {', '.join(allowed)}"
            else:
                message = f"edge {role} '{text}' has unknown socket type '{socket.type}'"
                hint = (
                    did_you_mean(socket.type, SOCKET_TYPES)
                    or f"socket types are: {', '.join(SOCKET_TYPES)}"
                )
            c.error(path, message, hint)
            return None
        step = self.node_steps.get(socket.node)
        node = nodes[socket.node]
        checkable = step is not None and node.commit is None
        if checkable and socket.type == "parameter":
            assert step is not None
            names = [p.name for p in step.parameters]
            if socket.key not in names:
                c.error(
                    path,
                    f"edge {role} '{text}': step '{step.name}' of node '{node.name}' has no "
                    f"parameter '{socket.key}'",
                    did_you_mean(socket.key, names)
                    or (
                        f"its parameters are: {', '.join(names)}"
                        if names
                        else "the step declares no parameters"
                    ),
                )
                return None
        if checkable and socket.type == "input" and role == "target":
            assert step is not None
            names = [i.name for i in step.inputs]
            if socket.key not in names:
                c.error(
                    path,
                    f"edge target '{text}': step '{step.name}' of node '{node.name}' has no "
                    f"input '{socket.key}'",
                    did_you_mean(socket.key, names)
                    or (
                        f"its inputs are: {', '.join(names)}"
                        if names
                        else "the step declares no inputs"
                    ),
                )
                return None
        if socket.type == "file" and node.type == "deployment" and node.endpoints:
            endpoint = socket.key.split(".", 1)[0]
            if endpoint not in node.endpoints:
                c.warn(
                    path,
                    f"edge target '{text}' names endpoint '{endpoint}', which node '{node.name}' "
                    "does not list",
                )
        return socket

    def _check_cycles(self, edges: list[Edge], path: PathKey, what: str) -> None:
        graph: dict[str, set[str]] = {}
        for edge in edges:
            graph.setdefault(edge.source.node, set()).add(edge.target.node)
        state: dict[str, int] = {}
        trail: list[str] = []

        def visit(node: str) -> list[str] | None:
            state[node] = 1
            trail.append(node)
            for nxt in sorted(graph.get(node, ())):
                if state.get(nxt) == 1:
                    return [*trail[trail.index(nxt) :], nxt]
                if nxt not in state:
                    found = visit(nxt)
                    if found:
                        return found
            state[node] = 2
            trail.pop()
            return None

        for start in graph:
            if start not in state:
                cycle = visit(start)
                if cycle:
                    self.c.error(
                        path,
                        f"the edges of {what} form a cycle: {' -> '.join(cycle)}",
                        "a pipeline must be a DAG: remove one of these edges",
                    )
                    return

    # -- pipeline parameters -----------------------------------------------------------

    def _parameters(
        self, body: dict[str, Any], path: PathKey, what: str, nodes: dict[str, PipelineNode]
    ) -> list[PipelineParameter]:
        c = self.c
        out: list[PipelineParameter] = []
        for i, item in enumerate(c.items(body, "parameters", path, what)):
            ppath = (*path, "parameters", i)
            mapping = c.mapping(item, ppath, f"a parameter of {what}")
            if mapping is None:
                continue
            name = c.string(mapping, "name", ppath, f"a parameter of {what}")
            pwhat = f"parameter '{name}' of {what}" if name else f"a parameter of {what}"
            c.check_keys(mapping, ppath, pwhat, PIPELINE_PARAMETER_KEYS, ("name",))
            targets: list[str] = []
            for key in ("target", "targets"):
                for j, text in enumerate(c.strings(mapping, key, ppath, pwhat) or []):
                    tpath = (
                        (*ppath, key, j) if isinstance(mapping.get(key), list) else (*ppath, key)
                    )
                    socket = self._socket(text, tpath, "target", nodes)
                    if socket is None:
                        continue
                    if socket.type != "parameter":
                        c.error(
                            tpath,
                            f"{pwhat} targets '{text}', which is not a node parameter",
                            "targets look like train.parameter.learning-rate",
                        )
                        continue
                    targets.append(text)
            if not targets and "target" not in mapping and "targets" not in mapping:
                c.warn(
                    ppath,
                    f"{pwhat} has no targets, so it changes nothing",
                    "add `targets: [node.parameter.name]`",
                )
            if name is None:
                continue
            if any(p.name == name for p in out):
                c.error((*ppath, "name"), f"{what} has two parameters called '{name}'")
                continue
            out.append(
                PipelineParameter(
                    name=name,
                    default=mapping.get("default"),
                    targets=targets,
                    category=c.text(mapping, "category", ppath),
                    description=c.text(mapping, "description", ppath),
                )
            )
        return out
