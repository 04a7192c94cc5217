"""`python -m bench.floors`: the two floors under the targets that the benchmark misses (README, Performance).

1. Memory: the resident size one process gains with each import a worker needs, in a fresh isolated
   interpreter (`VmRSS` after each one), then what the runner loads on top.
2. Sync tasks: the bench's sync task body (one blocking `INCR` through redis-py) called in a loop from 1, 2,
   3, 4 and 10 threads sharing one client, with no queue at all: calls/s and CPU per call.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.redisserver import RedisServer

WORKER_IMPORTS: tuple[str, ...] = ("ssl", "asyncio", "uvloop", "redis", "redis.asyncio", "msgpack", "hiredis")
WORKER_IMPORTS += ("taskqueue.worker.process",)
RUNNER_IMPORTS = ("yaml", "jsonschema", "taskqueue.ops.cli")
THREADS = (1, 2, 3, 4, 10)

_PROBE = """
import importlib, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
before = rss()
print(f"interpreter {before:.1f}")
for name in sys.argv[1:]:
    importlib.import_module(name)
    now = rss()
    print(f"{name} {now - before:.1f}")
    before = now
"""


def memory(pex: str | None) -> None:
    """In the PEX's own interpreter (`PEX_INTERPRETER=1`, run from an empty folder so that it imports the PEX's
    taskqueue), or in this one with the source tree on the path."""
    names = f"import sys; sys.argv[1:] = {list(WORKER_IMPORTS + RUNNER_IMPORTS)!r}\n"
    with tempfile.TemporaryDirectory(prefix="tq-floors-") as empty:
        if pex is not None:
            command, what = [str(Path(pex).resolve()), "-c", names + _PROBE], pex
            env = {**os.environ, "PEX_INTERPRETER": "1"}
        else:
            root = str(Path(__file__).resolve().parent.parent)
            code = f"import sys; sys.path.insert(0, {root!r})\n" + names + _PROBE
            command, env, what = [sys.executable, "-I", "-c", code], dict(os.environ), sys.executable
        found = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True, env=env, cwd=empty)
    total = 0.0
    print(f"resident MiB gained per import ({what}, a fresh interpreter):")
    for line in found.stdout.split("\n"):
        if not line:
            continue
        name, _, value = line.rpartition(" ")
        total += float(value)
        print(f"  {name:28s} {float(value):5.1f}   total {total:5.1f}")
        if name == WORKER_IMPORTS[-1]:
            print(f"  -- a worker's imports: {total:.1f} MiB; the runner also loads:")


def sync_body(url: str, calls: int) -> None:
    import redis

    client: Any = redis.Redis.from_url(url)
    client.ping()
    print(f"`INCR` through one redis-py client from N threads, {calls} calls each row, no queue:")
    for count in THREADS:
        each = calls // count

        def loop(calls: int) -> None:
            for _ in range(calls):
                client.incr("floors:done")

        threads = [threading.Thread(target=loop, args=(each,)) for _ in range(count)]
        wall, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        done = each * count
        print(f"  {count:2d} threads: {done / wall:8.0f} calls/s   {cpu / done * 1e6:6.1f} us CPU per call")
    client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floors", description=__doc__.split("\n")[0])
    parser.add_argument("--pex", default=None, help="measure the imports in this PEX's interpreter (./taskqueue.pex)")
    parser.add_argument("--calls", type=int, default=20000, help="INCR calls per row (default 20000)")
    args = parser.parse_args(argv)
    memory(args.pex)
    with tempfile.TemporaryDirectory(prefix="tq-floors-") as folder:
        server = RedisServer(Path(folder)).start()
        try:
            sync_body(server.url, args.calls)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
