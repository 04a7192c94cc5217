"""`python -m bench.autoscale`: a burst of sync tasks against an autoscaling runner and against a fixed pool of
max_workers processes — time from the burst to full scale, drain times, and scale-down after the cooldown."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import tqrunner
from bench.redisserver import RedisServer
from taskqueue.client import Client

BURST = 5000
TASK_S = 0.05
SLOTS = 10
MAX_WORKERS = 4
DEADLINE_S = 120.0


def _yaml(redis_url: str, jobs_dir: Path, autoscale: bool) -> str:
    scaler = (
        f"{{enabled: true, min_workers: 1, max_workers: {MAX_WORKERS}, scale_up_threshold: 5.0, "
        "scale_down_threshold: 1.0, scale_up_count: 2, scale_down_count: 1, interval: 1s, cooldown: 5s}"
        if autoscale
        else "{enabled: false}"
    )
    return (
        f'redis: {{url: "{redis_url}"}}\n'
        f'python_path: ["{jobs_dir}"]\n'
        f'tasks:\n  sleep_incr: {{path: "{tqrunner.JOBS_MODULE}:sleep_incr", result_ttl: 0}}\n'
        f"workers: {{initial_count: {1 if autoscale else MAX_WORKERS}, max_concurrent_tasks: {SLOTS}}}\n"
        f"autoscaler: {scaler}\nhttp: {{enabled: false}}\n"
    )


def _run(folder: Path, pex: Path, server: RedisServer, autoscale: bool) -> dict[str, Any]:
    server.client().flushall()
    jobs = folder / "jobs"
    jobs.mkdir(exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("jobs.py"), jobs / f"{tqrunner.JOBS_MODULE}.py")
    config = folder / f"autoscale-{autoscale}.yaml"
    config.write_text(_yaml(server.url, jobs, autoscale))
    runner = tqrunner.Runner(pex, config, server.url, folder / f"runner-{autoscale}.log").start()
    redis = server.client()
    try:
        start_by = time.monotonic() + 30
        want = 1 if autoscale else MAX_WORKERS
        while len(runner.members()) < want and time.monotonic() < start_by:
            time.sleep(0.01)
        Client(server.url).enqueue_many([("sleep_incr", (TASK_S,), {})] * BURST)
        burst = time.monotonic()
        first = full = drained = scaled_down = None
        peak = 0
        while time.monotonic() - burst < DEADLINE_S:
            workers = len(runner.members())
            peak = max(peak, workers)
            if first is None and workers > want:
                first = time.monotonic() - burst
            if full is None and workers >= MAX_WORKERS:
                full = time.monotonic() - burst
            if drained is None and int(redis.get("bench:done") or 0) >= BURST:
                drained = time.monotonic() - burst
            if drained is not None and (not autoscale or workers == 1):
                scaled_down = time.monotonic() - burst if autoscale else None
                break
            time.sleep(0.02)
        return {
            "autoscale": autoscale,
            "first_scale_up_s": first,
            "to_full_scale_s": full,
            "drain_s": drained,
            "back_to_min_s": scaled_down,
            "peak_workers": peak,
        }
    finally:
        runner.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale")
    parser.add_argument("--pex", default="taskqueue.pex")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tq-autoscale-") as tmp:
        folder = Path(tmp)
        pex = folder / "taskqueue.pex"
        shutil.copyfile(args.pex, pex)
        pex.chmod(0o755)
        server = RedisServer(folder / "redis").start()
        try:
            results = [_run(folder, pex, server, autoscale) for autoscale in (True, False)]
        finally:
            server.stop()
    print(f"burst of {BURST} sync tasks of {TASK_S * 1000:.0f} ms, {SLOTS} slots per process, max {MAX_WORKERS}")
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
