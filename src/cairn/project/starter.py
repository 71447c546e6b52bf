"""The starter project file ``cairn init`` writes."""

from __future__ import annotations

_STARTER = """\
# cairn.yaml: what this project can run.
#
# The file is a YAML list. Each item starts with '- ' and one key saying what it is:
#   step        a command to run, with typed parameters and input files
#   pipeline    steps connected into a graph (outputs of one feed inputs of another)
#   task        many runs of one step over a range of parameter values (a sweep)
#   endpoint    an HTTP server for a model; deployment: where endpoints run
# The format is Valohai's valohai.yaml, so a file written for one works for the other.

- step:
    # The name you run the step by; unique among the steps.
    name: train
    # The Docker image the commands run in when an executor uses containers.
    image: python:3.11-slim
    # Shell commands, run in order as one script that stops at the first failure.
    # {parameters} becomes every parameter below, passed as --name=value.
    command:
      - pip install -r requirements.txt
      - python train.py {parameters}
    # A one-line summary shown in listings.
    description: Train the model
    # Typed values for the commands. A value given for a run is checked against
    # the type (string, integer, float or flag), min/max and choices; a parameter
    # not given takes its default.
    parameters:
      - name: epochs
        type: integer
        default: 10
        min: 1
        description: Passes over the training data
      - name: learning-rate
        type: float
        default: 0.001
        min: 0
        description: Optimizer step size
      - name: optimizer
        type: string
        default: adam
        choices: [adam, sgd]
        description: Which optimizer to use
      - name: augment
        # A flag is passed as --augment when true and left out when false.
        type: flag
        default: false
        description: Randomly flip and crop the training images
    # Named input files. Each one is fetched into its own folder, inputs/<name>/,
    # before the commands start. The default is a URL or a path; a run can give
    # another one.
    inputs:
      - name: dataset
        default: data/train.csv
        description: Training data as CSV
    # Files the commands write to the outputs folder are kept after the run.
    # Listing them here only documents them.
    outputs:
      - name: model
        description: The trained model
    # Stop the run if it takes longer than this (seconds, or text like 1h 30m).
    time-limit: 2h
"""


def starter_yaml() -> str:
    """A commented starter ``cairn.yaml`` with one ``train`` step; it lints clean."""
    return _STARTER
