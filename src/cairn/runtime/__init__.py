"""Runtime: everything that happens around one execution's process on a machine.

Workspace preparation (code, inputs, config files), the process runner with live log and
metric capture, and output collection. Executors compose these; they never change an
execution's status themselves (the scheduler does).
"""
