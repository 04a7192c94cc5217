"""`python -m taskqueue.testing.serve -c CONFIG`: the runner of a TaskQueueTest. It is `taskqueue run` itself —
the same Runner, worker processes and exit codes — except that the configuration's text comes on stdin (the
user's YAML with the test's overrides, overrides.py) while CONFIG stays the user's file, so its relative paths
(python_path, …) resolve as in production and every message names it.

Stdin carries `<length>\\n<YAML>` and then stays open: when it reaches its end, the test process closed it or
died (a killed pytest runs no teardown), and this runner stops — and shuts down the test's private Redis
(`--private-redis`) — instead of outliving it."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

import redis

from taskqueue.ops import cli, commands, logs


def _watch_parent(gone: threading.Event) -> None:
    def wait() -> None:
        # os.read, not sys.stdin: a daemon thread holding the buffered reader's lock aborts the interpreter's exit
        while os.read(sys.stdin.fileno(), 4096):
            pass  # nothing more is written: only the end of the pipe matters
        gone.set()
        os.kill(os.getpid(), signal.SIGTERM)  # the runner's own graceful shutdown

    threading.Thread(target=wait, name="test-process-watch", daemon=True).start()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="taskqueue-test-runner")
    parser.add_argument("-c", "--config", required=True, help="the user's YAML (the text to run comes on stdin)")
    parser.add_argument("--log-level", default="info", type=str.lower, choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument("--private-redis", metavar="URL", help="shut this Redis down if the test process goes away")
    parser.set_defaults(fail_fast=True)  # the test's own Redis is up already: never wait for another
    args = parser.parse_args(list(argv))
    size = int(sys.stdin.buffer.readline())
    raw = sys.stdin.buffer.read(size)
    gone = threading.Event()
    _watch_parent(gone)
    logs.setup(args.log_level, args.log_format)
    code = cli.guarded(args, lambda a: commands.run(a, raw=raw))
    if gone.is_set() and args.private_redis:
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(args.private_redis, socket_timeout=2).shutdown(nosave=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
