"""The table (metric, median, unit, runs, target from PERFORMANCE.md), machine facts and versions."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    figure: str
    label: str
    unit: str
    target: str = ""


def _drain_rows(key: str, figure: str, what: str, target: str) -> list[Metric]:
    return [
        Metric(key, figure, f"drain/s {what}, start-up included", "/s", target),
        Metric(f"{key}_steady", figure, "  steady, from the first completion", "/s"),
        Metric(f"{key}_first", figure, "  runner start -> first completion", "s"),
    ]


def _cpu_rows(key: str, what: str, target: str = "") -> list[Metric]:
    return [
        Metric(f"{key}_cpu", "6", f"runner+workers CPU per 1k tasks, {what}, steady", "ms", target),
        Metric(f"{key}_cpu_total", "6", "  the same, start-up included", "ms"),
        Metric(f"{key}_redis_cpu", "6", "  redis-server CPU per 1k tasks, steady", "ms"),
    ]


def _command_rows(key: str, what: str) -> list[Metric]:
    return [
        Metric(f"{key}_cmds", "rt", f"Redis commands per task, {what} (all, incl. inside Lua; no handshakes)", ""),
        Metric(f"{key}_client_cmds", "rt", "  client-issued commands per task (estimate)", ""),
        Metric(f"{key}_evalsha", "rt", "  EVALSHA per task", ""),
    ]


METRICS: list[Metric] = [
    Metric("enqueue", "1", "enqueue/s, Client.enqueue, one at a time", "/s", ">= 18k/s (1.5x Huey 12.4k)"),
    Metric("enqueue_async", "1", "  AsyncClient.enqueue (extra)", "/s"),
    Metric("bulk_enqueue", "2", "bulk enqueue/s, enqueue_many x 1,000", "/s", ">= 200k/s (10x RQ 20.8k)"),
    *_drain_rows("drain1", "3", "1 proc, async anoop_incr", ">= 14k/s (3x taskiq 4.5k)"),
    *_drain_rows("drain1_sync", "3", "1 proc, sync noop_incr (extra)", ""),
    *_drain_rows("drain2", "4", "2 procs, async anoop_incr", ">= 21k/s (2x Huey 10.7k)"),
    *_drain_rows("drain2_sync", "4", "2 procs, sync noop_incr (extra)", ""),
    Metric("lat_p50", "5", "latency p50, async alatency @ 200/s", "ms", "<= 0.5 ms (Huey 0.6)"),
    Metric("lat_p99", "5", "latency p99", "ms", "<= 2 ms (Huey 1.0)"),
    Metric("lat_max", "5", "latency max", "ms"),
    Metric("lat_sync_p50", "5", "latency p50, sync latency (extra)", "ms"),
    Metric("lat_sync_p99", "5", "latency p99, sync (extra)", "ms"),
    Metric("lat_sync_max", "5", "latency max, sync (extra)", "ms"),
    *_cpu_rows("drain1", "1-proc drain", "<= 60 ms (1/3 of taskiq 201)"),
    *_cpu_rows("drain1_sync", "1-proc drain, sync (extra)"),
    *_cpu_rows("drain2", "2-proc drain (extra)"),
    *_cpu_rows("drain2_sync", "2-proc drain, sync (extra)"),
    Metric("rss_idle", "7", "RSS runner + 1 worker, idle", "MiB"),
    Metric("drain1_rss", "7", "RSS runner + 1 worker, right after a 1-proc drain", "MiB"),
    Metric("drain1_peak_rss", "7", "  peak RSS (sum of VmHWM) during it", "MiB"),
    Metric("drain1_sync_rss", "7", "RSS runner + 1 worker, right after a 1-proc sync drain", "MiB"),
    Metric("drain1_sync_peak_rss", "7", "  peak RSS (sum of VmHWM) during it", "MiB"),
    Metric("drain2_rss", "7", "RSS runner + 2 workers, right after a 2-proc drain", "MiB"),
    Metric("drain2_peak_rss", "7", "  peak RSS (sum of VmHWM) during it", "MiB"),
    Metric("drain2_sync_rss", "7", "RSS runner + 2 workers, right after a 2-proc sync drain", "MiB"),
    Metric("drain2_sync_peak_rss", "7", "  peak RSS (sum of VmHWM) during it", "MiB"),
    Metric("idle_cpu", "7", "idle CPU of runner + 1 worker", "%"),
    Metric("redis_bytes", "7", "Redis bytes per queued task (100k, used_memory delta)", "B", "<= 200"),
    Metric("envelope_bytes", "7", "  size of that task's message", "B"),
    Metric("late_p50", "8", "delay lateness p50, 1k spread over 1 s", "ms"),
    Metric("late_p99", "8", "delay lateness p99, spread", "ms", "<= 20 ms"),
    Metric("late_max", "8", "  max, spread", "ms"),
    Metric("late_min", "8", "  min, spread (< 0: started early)", "ms"),
    Metric("late_burst_p50", "8", "delay lateness p50, 1k due at one instant (extra)", "ms"),
    Metric("late_burst_p99", "8", "delay lateness p99, one instant (extra)", "ms"),
    Metric("late_burst_min", "8", "  min, one instant", "ms"),
    Metric("wf_steps", "9", "workflow steps/s, 1,000 chains of 10, 1 proc, start-up included", "/s"),
    Metric("wf_enqueue", "9", "  enqueue_workflow/s (chains of 10)", "/s"),
    Metric("wf_cmds", "9", "  Redis commands per step (all, incl. inside Lua)", ""),
    Metric("wf_cpu", "9", "  runner+worker CPU per 1k steps, start-up included", "ms"),
    Metric("startup", "start", "runner start -> worker registered (warm PEX)", "s", "<= 1.5 s (to healthy)"),
    *_command_rows("drain1", "1-proc drain"),
    *_command_rows("drain1_sync", "1-proc sync drain"),
    *_command_rows("drain2", "2-proc drain"),
    *_command_rows("drain2_sync", "2-proc sync drain"),
]
KNOWN = {m.key: m for m in METRICS}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for run in runs for k in run}
    found: dict[str, float] = {}
    for key in keys:
        values = [run[key] for run in runs if key in run and not math.isnan(run[key])]
        if values:
            found[key] = statistics.median(values)
    return found


def fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(median: dict[str, float], runs: list[dict[str, float]]) -> str:
    rows = [("fig", "metric", "median", "unit", "runs", "target")]
    for metric in METRICS:
        if metric.key not in median:
            continue
        each = " ".join(fmt(run.get(metric.key, float("nan"))) for run in runs)
        rows.append((metric.figure, metric.label, fmt(median[metric.key]), metric.unit, each, metric.target))
    for key in sorted(set(median) - set(KNOWN)):
        each = " ".join(fmt(run.get(key, float("nan"))) for run in runs)
        rows.append(("?", key, fmt(median[key]), "", each, ""))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4].ljust(widths[4]),
            row[5],
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def top_commands(details: dict[str, Any], tasks: int, limit: int = 8) -> str:
    calls: dict[str, int] = details["commands"]["calls"]
    top = list(calls.items())[:limit]
    return ", ".join(f"{name} {n / tasks:.3f}" for name, n in top)


# ---- facts -------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "load_average_at_start": list(os.getloadavg()),
        "memory_bytes": mem_total,
        "kernel": platform.release(),
        "hostname": platform.node(),
    }


PEX_PROBE = (
    "import json, sys, importlib.metadata as m\n"
    "def v(n):\n"
    "    try:\n"
    "        return m.version(n)\n"
    "    except m.PackageNotFoundError:\n"
    "        return None\n"
    "import taskqueue\n"
    "print(json.dumps({'python': sys.version.split()[0], 'taskqueue': taskqueue.__version__,"
    " 'redis-py': v('redis'), 'hiredis': v('hiredis'), 'msgpack': v('msgpack'), 'uvloop': v('uvloop')}))\n"
)


def pex_versions(pex: Path) -> dict[str, Any]:
    """Versions inside the PEX (what the runner and workers use)."""
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("PEX_") and k != "PYTHONPATH"}
    env["PEX_INTERPRETER"] = "1"
    try:
        found = subprocess.run(
            [str(pex), "-c", PEX_PROBE], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        parsed: dict[str, Any] = json.loads(found.stdout.strip().splitlines()[-1])
        return parsed
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def local_versions() -> dict[str, Any]:
    """Versions on the benchmark's side (the producer client runs from the source tree)."""
    import importlib.metadata as md
    import sys

    import taskqueue

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "python": sys.version.split()[0],
        "taskqueue": taskqueue.__version__,
        "redis-py": version("redis"),
        "hiredis": version("hiredis"),
        "msgpack": version("msgpack"),
    }


def source_state(root: Path, pex: Path) -> dict[str, Any]:
    """Git commit, local changes, and taskqueue/ files newer than the PEX (it would then be stale)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    newer: list[str] = []
    try:
        built = pex.stat().st_mtime
        for path in sorted((root / "taskqueue").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.stat().st_mtime > built:
                newer.append(str(path.relative_to(root)))
    except OSError:
        pass
    return {
        "commit": git("rev-parse", "HEAD"),
        "changes": git("status", "--porcelain").splitlines(),
        "pex": str(pex),
        "pex_mtime": pex.stat().st_mtime if pex.exists() else None,
        "sources_newer_than_pex": newer,
    }
