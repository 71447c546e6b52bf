"""Whether this process may fork a child that goes on running Python.

A child gets only the thread that forked it. Any lock another thread held at that moment
stays held in the child forever, and a pool whose threads are gone waits for them
forever. That includes pools Python does not see: the BLAKE3 hasher's Rust thread pool,
once started, is one. So a process may fork only while the kernel lists a single
thread for it.
"""

from __future__ import annotations

import os
import threading


def can_fork() -> bool:
    """Whether this process may fork now: POSIX, and one thread, native ones included."""
    if not hasattr(os, "fork") or threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc (macOS, BSD): only Python's threads can be counted
        return True
