"""``python -m cairn.orchestration.supervisor ROOT EXECUTION_ID``: a detached run's keeper."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from cairn.orchestration.context import Context
    from cairn.orchestration.runs import supervise

    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: stacks to the log
    root, execution_id = argv
    ctx = Context.load(root)
    try:
        execution = ctx.store.get_execution(ctx.project_id, execution_id)
        supervise(ctx, execution)
    finally:
        ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
