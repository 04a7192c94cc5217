"""Peer side: `python -m bench.peers.drive PEER ACTION [options]`, run inside PEER's venv from the repo root.

Prints exactly one JSON object on its last stdout line: `{"seconds": s}`, `{}`, `{"unsupported": why}` or
(describe) the adapter's facts, with the worker plans at `--concurrency C` and at the peer's own setting for
1 and 2 processes. Any failure exits non-zero with the traceback on stderr.
`worker --processes K (--concurrency C | --own) --member I` replaces this process with the I-th command of the
peer's plan (os.execvpe, with the plan's env), so the pid the harness started is that command's main process;
a plan of several commands is started as several `worker` actions, one per member.

The adapter contract (`bench/peers/<PEER>_peer.py`). The Redis URL is `common.url()` ($BENCH_REDIS_URL);
tasks go to one queue; the incr task's body is `common.incr`/`common.aincr`, the record task's is
`common.record(since)`/`common.arecord(since)`:

    DISTRIBUTION: str                 # the PyPI name whose version is reported
    DELIVERY: str                     # e.g. "at-least-once (acks late)", "at-most-once (acks on fetch)"
    SETTINGS: dict[str, object]       # every setting chosen for the run, and why (shown in the JSON)
    def enqueue(n: int) -> float      # seconds for n enqueues of the incr task, one at a time, each
                                      # awaited; connection set-up happens before the clock starts
    def enqueue_many(n: int, chunk: int) -> float   # the peer's bulk API in chunks; or raise Unsupported
    def fill(n: int) -> None          # queue n incr tasks, the fastest way the peer has (not timed)
    def warmup() -> None              # queue one incr task (the harness waits until it ran)
    OWN_SETTING: str                  # the peer's own best documented setting (what worker_plan(K, None) runs)
    def worker_plan(processes: int, concurrency: int | None) -> common.Plan
                                      # how the peer runs `processes` worker processes, each running up to
                                      # `concurrency` tasks at once (threads for sync peers, async slots for
                                      # async ones; PERFORMANCE.md's fairness rule): one command with the
                                      # peer's own multi-process mode where it keeps that concurrency per
                                      # process, else one command per process. None: OWN_SETTING instead.
                                      # `per_process` says what really runs at once (rq: 1, by design)
    def latency(rate: float, seconds: float) -> None  # enqueue the record task with since=time.time()
                                      # at `rate`/s for `seconds` (common.paced / common.apaced)
    def delay(tasks: int, delay_s: float) -> None   # one per ms (common.paced(1000, tasks)): the record
                                      # task with since=time.time()+delay_s, delayed by delay_s;
                                      # or raise Unsupported
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bench.peers.common import CONCURRENCY_ENV, URL_ENV, Plan, Unsupported

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = ("describe", "enqueue", "enqueue-many", "fill", "warmup", "worker", "latency", "delay")
PROCESS_COUNTS = (1, 2)  # the figures' worker process counts: describe reports a plan for each


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.drive", description=__doc__.split("\n")[0])
    parser.add_argument("peer")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--url", required=True, help="the private Redis (redis://127.0.0.1:PORT/0)")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=10, help="tasks at once per worker process")
    parser.add_argument("--own", action="store_true", help="worker: the peer's own setting, not --concurrency")
    parser.add_argument("--member", type=int, default=0, help="worker: which command of the plan to exec")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=1.0)
    return parser.parse_args(argv)


def adapter(peer: str) -> Any:
    return importlib.import_module(f"bench.peers.{peer}_peer")


def act(args: argparse.Namespace, module: Any) -> dict[str, Any]:
    if args.action == "describe":
        return {
            "distribution": module.DISTRIBUTION,
            "version": importlib.metadata.version(module.DISTRIBUTION),
            "redis_py": importlib.metadata.version("redis"),
            "python": platform.python_version(),
            "delivery": module.DELIVERY,
            "settings": module.SETTINGS,
            "own_setting": module.OWN_SETTING,
            "concurrency": args.concurrency,
            "plans": {
                name: {str(k): module.worker_plan(k, setting) for k in PROCESS_COUNTS}
                for name, setting in (("equal", args.concurrency), ("own", None))
            },
        }
    if args.action == "enqueue":
        return {"seconds": module.enqueue(args.n)}
    if args.action == "enqueue-many":
        return {"seconds": module.enqueue_many(args.n, args.chunk)}
    if args.action == "fill":
        module.fill(args.n)
    elif args.action == "warmup":
        module.warmup()
    elif args.action == "latency":
        module.latency(args.rate, args.seconds)
    elif args.action == "delay":
        module.delay(args.tasks, args.delay)
    elif args.action == "worker":
        plan: Plan = module.worker_plan(args.processes, None if args.own else args.concurrency)
        argv = plan["commands"][args.member]
        os.environ.update(plan["env"])
        sys.stdout.flush()
        os.execvpe(argv[0], argv, os.environ)  # the peer's own worker command
    return {}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ[URL_ENV] = args.url
    os.environ.pop(CONCURRENCY_ENV, None)  # only a plan's own env sets it
    # The peers' workers import the adapters by module path (bench.peers.<peer>_peer).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    module = adapter(args.peer)
    try:
        result = act(args, module)
    except Unsupported as exc:
        result = {"unsupported": str(exc)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
