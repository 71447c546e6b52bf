"""cairn: every run of your code, versioned.

Inside an execution::

    import cairn
    epochs = cairn.parameters["epochs"]
    images = cairn.inputs("images").paths()
    model_path = cairn.outputs.path("model.onnx")
    cairn.log(step=epoch, loss=loss, accuracy=acc)

Anywhere::

    client = cairn.Client()
    best = client.executions(step="train", sort="metric:accuracy", limit=1)[0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cairn.sdk import Input, Parameters, in_execution, inputs, log, outputs

__version__ = "0.1.0"

parameters = Parameters()

__all__ = [
    "Client",
    "Input",
    "Parameters",
    "__version__",
    "in_execution",
    "inputs",
    "log",
    "outputs",
    "parameters",
]

if TYPE_CHECKING:
    from cairn.client import Client


def __getattr__(name: str) -> Any:
    if name == "Client":  # imported lazily: it pulls in the store (SQLAlchemy)
        from cairn.client import Client

        return Client
    raise AttributeError(f"module 'cairn' has no attribute {name!r}")
