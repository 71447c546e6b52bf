"""``python -m cairn``: the command line."""

from cairn.cli.main import entry

entry()
