"""How the runner starts Python children — worker processes and the configuration check (config/apart.py):
its own interpreter, with the flags and environment that make them import the runner's own taskqueue."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import taskqueue


def worker_flags() -> list[str]:
    """A worker runs the runner's own code, isolated as the runner is: never the launch directory first on
    sys.path (-P: a `signal.py` or a checkout's `taskqueue/` there must not be imported), and with the
    runner's -E/-s when it has them (the PEX runs with both)."""
    flags = ["-P"]
    if sys.flags.ignore_environment:
        flags.append("-E")
    if sys.flags.no_user_site:
        flags.append("-s")
    return flags


def worker_env() -> dict[str, str]:
    """Without -E (a runner started from source) the worker finds taskqueue where the runner found it."""
    env = dict(os.environ)
    if not sys.flags.ignore_environment:
        env["PYTHONPATH"] = str(Path(taskqueue.__file__).resolve().parent.parent)
    return env
