"""Loaded by Python steps that cairn runs: records which files of the code snapshot they open.

cairn puts this folder first on ``PYTHONPATH`` with ``CAIRN_CODE_TRACE`` set to a folder.
An audit hook notes every file the process opens (imports included) below
``CAIRN_REPOSITORY_DIR``; at exit the list goes to ``CAIRN_CODE_TRACE/<pid>.txt``. The
result cache then matches only the code an execution actually read.
"""

import os
import sys


def _install() -> None:
    root = os.environ.get("CAIRN_REPOSITORY_DIR")
    out = os.environ.get("CAIRN_CODE_TRACE")
    if not root or not out:
        return
    roots = tuple({os.path.normpath(root) + os.sep, os.path.realpath(root) + os.sep})
    seen = set()
    join, normpath, getcwd, fsdecode = os.path.join, os.path.normpath, os.getcwd, os.fsdecode

    def hook(event, args):
        if event != "open":
            return
        path = args[0]
        if isinstance(path, int) or path is None:
            return
        try:
            path = fsdecode(path)
            if not path.startswith("/"):
                path = join(getcwd(), path)
            path = normpath(path)
        except Exception:  # noqa: BLE001 - never break the step
            return
        for prefix in roots:
            if path.startswith(prefix):
                seen.add(path[len(prefix):])
                return

    sys.addaudithook(hook)

    def dump():
        try:
            with open(join(out, "%d.txt" % os.getpid()), "w", encoding="utf-8") as fh:
                fh.write("\n".join(sorted(seen)))
        except OSError:
            pass

    import atexit

    atexit.register(dump)


_install()
