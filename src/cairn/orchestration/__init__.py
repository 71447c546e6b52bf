"""Orchestration: the scheduler (the only code that changes execution state), run
creation, re-runs and stopping. Pipelines, sweeps and the result cache come here too."""
