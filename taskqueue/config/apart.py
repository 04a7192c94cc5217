"""`python -m taskqueue.config.apart --config PATH`: check a configuration in a process of its own.

The runner never loads the YAML reader, the JSON Schema or the user's code (they are a worker's business, and a
job module may import half of PyPI). At start and at each reload it starts this module the way it starts a
worker (`runner/checking.py`: the same interpreter, flags, environment and sys.path), writes the file's bytes to
its stdin and reads back one JSON document on stdout:

    {"problems": [...]}                                   the configuration does not check (as ConfigError)
    {"checked": "<load_checked's form>" | null, "signatures": {task: registry.spec_of(...)}}

What the user's modules print while they are imported goes to stderr, so it cannot spoil the answer. Ctrl-C is
the runner's to handle (it stops this process): ignored here, so it prints no traceback of the user's import.
An import that blocks is bounded (`imports.bounded_import`): it ends as a problem naming the module.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from taskqueue import config as config_mod
from taskqueue.config import registry
from taskqueue.errors import ConfigError, TaskQueueError


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="taskqueue-check")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # from here on, print() of an imported module goes to stderr
    raw = sys.stdin.buffer.read()
    try:
        config, checked = config_mod.load_checked(args.config, raw=raw)
        tasks = registry.build(config)
    except ConfigError as exc:
        json.dump({"problems": list(exc.problems)}, answer)
        answer.close()
        return 0
    except TaskQueueError as exc:  # e.g. a wrong TASKQUEUE_IMPORT_TIMEOUT: one line too
        json.dump({"problems": [str(exc)]}, answer)
        answer.close()
        return 0
    signatures = {name: registry.spec_of(task.signature) for name, task in tasks.tasks.items()}
    json.dump({"checked": None if checked is None else checked.decode("utf-8"), "signatures": signatures}, answer)
    answer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
