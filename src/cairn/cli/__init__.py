"""The command line: thin commands over the core. Exit codes are decided in ``main``."""

from cairn.cli.main import main

__all__ = ["main"]
