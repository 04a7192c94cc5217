"""Entry point of one worker process (started by the runner): `python -m taskqueue.worker`.

The runner passes its configuration on stdin, so every worker runs the same one: with `--checked`, the data
the runner has checked already (config.load_checked's compact form: no YAML parser, schema or checks here);
without, the YAML, loaded again.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import signal
import sys

from taskqueue import config as config_mod
from taskqueue._loop import run_loop
from taskqueue.config import registry
from taskqueue.errors import TaskQueueError
from taskqueue.ops import logs
from taskqueue.store import redisboot
from taskqueue.store.broker import Broker
from taskqueue.store.connection import async_client
from taskqueue.worker.worker import WATCH_BLOCK_S, Worker

log = logging.getLogger("taskqueue.worker")


async def serve(cfg: config_mod.Config, tasks: registry.Registry, worker_id: str, runner_pid: int | None) -> int:
    broker = Broker(async_client(redisboot.options(cfg)), cfg)
    # a watcher's BLMOVE waits WATCH_BLOCK_S; a reply later than that plus a command's time is a dead connection
    # (half-open: no reset ever comes), which would otherwise keep the watchers armed and the worker idle forever
    watch_options = redisboot.options(cfg, command_timeout=WATCH_BLOCK_S + cfg.redis.command_timeout_s)
    watch = async_client(watch_options)
    stop, fast_stop = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (fast_stop if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    worker = Worker(cfg, tasks, broker, watch, worker_id, runner_pid)
    code = await worker.run(stop, fast_stop)
    await watch.aclose()
    await broker.close()
    await broker.redis.aclose()
    return code


def _dump_tasks() -> None:
    """SIGUSR1: log where every coroutine of this worker is waiting (for a worker that seems stuck)."""
    buffer = io.StringIO()
    for job in asyncio.all_tasks():
        job.print_stack(limit=8, file=buffer)
    log.warning("SIGUSR1: %d asyncio tasks\n%s", len(asyncio.all_tasks()), buffer.getvalue())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="taskqueue-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--runner-pid", type=int, default=None, help="stop when this process is no longer our parent")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="text")
    parser.add_argument("--checked", action="store_true", help="stdin holds the runner's checked configuration")
    args = parser.parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    try:
        given = sys.stdin.buffer.read()
        if args.checked:
            cfg = config_mod.from_checked(given, args.config)
        else:
            cfg = config_mod.load(args.config, raw=given, import_tasks=False)
        tasks = registry.build(cfg)
    except TaskQueueError as exc:
        print(f"worker {args.worker_id}: {exc}", file=sys.stderr)
        return 2
    code = run_loop(serve(cfg, tasks, args.worker_id, args.runner_pid))
    logging.shutdown()
    return code
