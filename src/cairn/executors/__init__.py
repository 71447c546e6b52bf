"""Executors: where an execution's process runs. They report; the scheduler decides state."""

from __future__ import annotations

from cairn.executors.base import Executor, Outcome, Reporter

__all__ = ["Executor", "Outcome", "Reporter"]
