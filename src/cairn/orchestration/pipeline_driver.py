"""``python -m cairn.orchestration.pipeline_driver ROOT FLOW_ID``: a detached pipeline's driver."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from cairn.orchestration.context import Context
    from cairn.orchestration.pipelines import KIND, exit_code_for, run_pipeline

    root, flow_id = argv
    ctx = Context.load(root)
    try:
        flow = ctx.store.get_flow(ctx.project_id, KIND, flow_id)
        return exit_code_for(run_pipeline(ctx, flow, on_event=lambda text: print(text, flush=True)))
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
