"""Our side of `python -m bench --peers`: runs the PERFORMANCE.md workload through each peer.

Runs in the project venv. Every peer action is a subprocess in the peer's own venv,
`bench/.peers/<peer>/bin/python -m bench.peers.drive <peer> <action> --url <private redis> ...` (cwd = repo
root, last stdout line = JSON); the worker is `... drive <peer> worker --processes K`, which execs the peer's
own worker command, so the pid we started is the worker's main process. Its process tree is measured
from /proc (bench/procstat.py) like taskqueue's runner. The same private redis-server as taskqueue's
figures, FLUSHALLed before every run. Every wait is bounded; every process we start is killed on exit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import figures, procstat, report
from bench.figures import BenchError, Details, Metrics
from bench.peers import venvs
from bench.peers.common import DONE_KEY, SAMPLES_KEY
from bench.redisserver import RedisServer

ROOT = venvs.ROOT
ACTION_BASE_TIMEOUT_S = 120.0
WARMUP_TIMEOUT_S = 60.0  # worker start-up + the first task
STOP_TIMEOUT_S = 15.0  # graceful stop, then SIGKILL
STALL_S = 30.0  # a wait for completions fails when bench:done has not moved for this long
SLOWEST_RATE = 20.0  # tasks/s: the overall bound of a wait is generous (slow peers finish), a stall ends it
MEMORY_TASKS_SLOW = 20_000  # Redis bytes per task over fewer tasks when the peer's fill is slow
FILL_BUDGET_S = 60.0  # ... i.e. when 100,000 would take longer than this at the fill rate seen in drain1
RATE = figures.LATENCY_RATE
SECONDS = figures.LATENCY_SECONDS


class Unsupported(Exception):
    """The peer answered {"unsupported": why} (e.g. no bulk enqueue)."""


# ---- the peer's worker process tree -----------------------------------------------------------------------
def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): tells a recycled pid apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


class PeerWorker:
    """`drive <peer> worker --processes K` (exec'd into the peer's worker command) in its own session."""

    def __init__(self, python: Path, peer: str, url: str, processes: int, log: Path) -> None:
        self.argv = [
            str(python),
            "-m",
            "bench.peers.drive",
            peer,
            "worker",
            "--url",
            url,
            "--processes",
            str(processes),
        ]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, int] = {}  # every pid of the tree ever seen -> its start time

    def start(self) -> PeerWorker:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=peer_env(),
                start_new_session=True,
            )
        self._remember([self.process.pid])
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _remember(self, pids: list[int]) -> None:
        for pid in pids:
            if pid not in self.seen:
                started = _start_time(pid)
                if started is not None:
                    self.seen[pid] = started

    def members(self) -> list[int]:
        if not self.alive():
            return []
        found = procstat.descendants(self.pid)
        self._remember(found)
        return found

    def cpu_s(self) -> float:
        return procstat.tree_cpu_s(self.pid, self.members()) if self.alive() else 0.0

    def rss(self) -> tuple[int, int, int]:
        """(RSS now, sum of per-process peak RSS, process count) of the worker's process tree."""
        now = peak = count = 0
        for pid in [self.pid, *self.members()] if self.alive() else []:
            mem = procstat.memory(pid)
            if mem is not None:
                now, peak, count = now + mem.rss_bytes, peak + mem.peak_rss_bytes, count + 1
        return now, peak, count

    def check(self) -> None:
        """Raises BenchError when the worker has exited (called while waiting for completions)."""
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"worker exited with {self.process.returncode}: {self.tail()}")

    def tail(self) -> str:
        try:
            return venvs.last_line(self.log.read_text(errors="replace"))
        except OSError:
            return "(no log)"

    def stop(self) -> int | None:
        """SIGTERM to the worker's main process (each peer's graceful stop), then SIGKILL whatever is left."""
        process = self.process
        if process is None:
            return None
        self.members()
        code: int | None = process.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                code = None
        self.kill()
        return code

    def kill(self) -> None:
        """SIGKILL the process group and every member ever seen that is still the same process."""
        process = self.process
        if process is not None and process.poll() is None:
            self.members()
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # it leads its own session and group
        for pid, started in sorted(self.seen.items()):
            if procstat.alive(pid) and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            procstat.alive(p) and _start_time(p) == s for p, s in self.seen.items()
        ):
            time.sleep(0.02)


def peer_env() -> dict[str, str]:
    """Our environment without anything that would make the peer's python see our venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PEX_")}


# ---- one peer -----------------------------------------------------------------------------------------------
@dataclass
class Peer:
    name: str
    python: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # describe: versions, delivery, settings
    error: str | None = None  # install or describe failed: the peer is skipped, the reason is shown
    runs: list[dict[str, Any]] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)  # metric -> the peer's reason
    fill_rate: float = 0.0  # tasks/s of the last untimed fill (chooses the Redis-bytes count)
    action_overhead_s: float = 0.0  # wall time of `describe`: interpreter start + adapter import

    def medians(self) -> dict[str, float]:
        return report.medians([run["metrics"] for run in self.runs])

    def to_json(self) -> dict[str, Any]:
        return {
            "python": str(self.python) if self.python else None,
            **self.facts,
            "error": self.error,
            "unsupported": self.unsupported,
            "medians": self.medians(),
            "runs": self.runs,
        }


@dataclass
class Harness:
    server: RedisServer
    folder: Path
    n: int
    say: Callable[[str], None]
    names: list[str]
    selected: set[int]
    fresh: bool = False
    store: Any = None
    peers: list[Peer] = field(default_factory=list)
    live: list[PeerWorker] = field(default_factory=list)
    polls: int = 0
    workers_started: int = 0

    # ---- set-up ------------------------------------------------------------------------------------------
    def install(self) -> None:
        """Build or reuse every peer's venv (before Redis starts: pip may take minutes). Never raises."""
        for name in self.names:
            peer = Peer(name)
            self.peers.append(peer)
            try:
                peer.python = venvs.ensure(name, self.say, self.fresh)
            except venvs.VenvError as exc:
                peer.error = str(exc)
                self.say(f"{name}: {exc}")
            except OSError as exc:
                peer.error = f"venv: {exc}"
                self.say(f"{name}: venv: {exc}")

    def describe(self) -> None:
        """Versions, delivery guarantee and settings of every installed peer (needs the server's URL)."""
        if self.store is None:
            self.store = self.server.client()
        for peer in self.ready():
            try:
                began = time.perf_counter()
                peer.facts = self.action(peer, "describe", timeout_s=ACTION_BASE_TIMEOUT_S)
                peer.action_overhead_s = time.perf_counter() - began
                self.say(f"{peer.name} {peer.facts.get('version')}: {peer.facts.get('delivery')}")
            except BenchError as exc:
                peer.error = f"describe: {exc}"
                self.say(f"{peer.name}: {peer.error}")

    def ready(self) -> list[Peer]:
        return [p for p in self.peers if p.error is None and p.python is not None]

    # ---- running -----------------------------------------------------------------------------------------
    def steps(self) -> list[tuple[str, Callable[[Peer], tuple[Metrics, Details]]]]:
        chosen: list[tuple[str, Callable[[Peer], tuple[Metrics, Details]]]] = []
        if 1 in self.selected:
            chosen.append(("enqueue", self.enqueue))
        if 2 in self.selected:
            chosen.append(("bulk_enqueue", self.bulk_enqueue))
        if self.selected & {3, 6, 7}:
            chosen.append(("drain1", lambda p: self.drain(p, 1, "drain1")))
        if 7 in self.selected:
            chosen.append(("redis_bytes", self.redis_bytes))
        if 4 in self.selected:
            chosen.append(("drain2", lambda p: self.drain(p, 2, "drain2")))
        if self.selected & {5, 7}:
            chosen.append(("latency", self.latency))
        if 8 in self.selected:
            chosen.append(("delay", self.delay))
        return chosen

    def run_repeat(self, repeat: int, repeats: int) -> None:
        """One repetition of every figure for every ready peer; a failed step is recorded, the rest go on."""
        for peer in self.ready():
            run: dict[str, Any] = {"repeat": repeat, "metrics": {}, "details": {}, "errors": {}}
            peer.runs.append(run)
            for name, step in self.steps():
                self.say(f"[{repeat}/{repeats}] {peer.name} {name} ...")
                began = time.perf_counter()
                try:
                    metrics, details = step(peer)
                except Unsupported as exc:
                    peer.unsupported[name] = str(exc)
                    run["details"][name] = {"unsupported": str(exc)}
                    self.say(f"  unsupported: {exc}")
                    continue
                except Exception as exc:  # one peer's trouble must not stop the others
                    message = (
                        venvs.last_line(str(exc)) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
                    )
                    run["errors"][name] = message
                    self.say(f"  FAILED: {message}")
                    self.kill_all()
                    continue
                details["wall_s"] = time.perf_counter() - began
                run["metrics"].update(metrics)
                run["details"][name] = details
                for problem in details.get("problems", []):
                    self.say(f"  problem: {problem}")
                shown = ", ".join(f"{k} {report.fmt(v)}" for k, v in metrics.items())
                self.say(f"  {shown}  ({details['wall_s']:.1f}s)")

    def kill_all(self) -> None:
        for worker in list(self.live):
            worker.kill()
        self.live.clear()

    def close(self) -> None:
        self.kill_all()
        if self.store is not None:
            self.store.close()
            self.store = None

    # ---- primitives ----------------------------------------------------------------------------------------
    def action(self, peer: Peer, action: str, timeout_s: float, **options: float) -> dict[str, Any]:
        """`drive <peer> <action>` in the peer's venv; its last stdout line as JSON. Raises BenchError."""
        assert peer.python is not None
        argv = [str(peer.python), "-m", "bench.peers.drive", peer.name, action, "--url", self.server.url]
        for key, value in options.items():
            argv += [f"--{key}", str(value)]
        try:
            done = subprocess.run(
                argv, cwd=ROOT, env=peer_env(), capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"{action} did not finish within {timeout_s:g}s") from None
        if done.returncode != 0:
            raise BenchError(f"{action} exited with {done.returncode}: {venvs.last_line(done.stderr)}")
        lines = done.stdout.strip().splitlines()
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise BenchError(f"{action}: no JSON on the last stdout line: {venvs.last_line(done.stdout)}") from None
        if "unsupported" in result:
            raise Unsupported(str(result["unsupported"]))
        return result

    def reset(self) -> None:
        self.store.flushall()  # the server is ours

    def done(self) -> int:
        self.polls += 1
        return figures.done_count(self.store)

    def redis_cpu_s(self) -> float:
        return figures.process_cpu_s(self.server.pid)

    def start_worker(self, peer: Peer, processes: int) -> PeerWorker:
        assert peer.python is not None
        self.workers_started += 1
        log = self.folder / f"peer-{peer.name}-{self.workers_started:03d}-{processes}p.log"
        worker = PeerWorker(peer.python, peer.name, self.server.url, processes, log)
        self.live.append(worker)
        return worker.start()

    def stop_worker(self, worker: PeerWorker) -> int | None:
        code = worker.stop()
        self.live.remove(worker)
        return code

    def fill(self, peer: Peer, count: int) -> float:
        """Queue `count` incr tasks the peer's fastest way (untimed for the figures); returns the seconds."""
        began = time.perf_counter()
        self.action(peer, "fill", timeout_s=ACTION_BASE_TIMEOUT_S + count / 200, n=count)
        seconds = time.perf_counter() - began
        peer.fill_rate = count / max(seconds - peer.action_overhead_s, 1e-3)  # without the start-up
        return seconds

    def wait(
        self, worker: PeerWorker, target: int, timeout_s: float, on_first: Callable[[int], None] | None = None
    ) -> float:
        """figures.wait_done (5 ms polls), failing early when the worker exits or bench:done stalls."""
        last = {"count": -1, "at": time.monotonic()}

        def done() -> int:
            count = self.done()
            if count != last["count"]:
                last.update(count=count, at=time.monotonic())
            return count

        def check() -> None:
            worker.check()
            if time.monotonic() - last["at"] > STALL_S:
                raise BenchError(f"no progress for {STALL_S:g}s at {last['count']:.0f} of {target}: {worker.tail()}")

        return figures.wait_done(done, target, timeout_s, on_first, check)

    def warm(self, peer: Peer, worker: PeerWorker) -> float:
        """One incr task through the fresh worker; seconds from its start until that task has run."""
        started = time.perf_counter()
        self.action(peer, "warmup", timeout_s=ACTION_BASE_TIMEOUT_S)
        ended = self.wait(worker, 1, WARMUP_TIMEOUT_S)
        self.store.delete(DONE_KEY, SAMPLES_KEY)
        return ended - started

    # ---- figures 1, 2 --------------------------------------------------------------------------------------
    def enqueue(self, peer: Peer) -> tuple[Metrics, Details]:
        self.reset()
        seconds = float(
            self.action(peer, "enqueue", timeout_s=ACTION_BASE_TIMEOUT_S + self.n / 100, n=self.n)["seconds"]
        )
        return {"enqueue": self.n / seconds}, {"seconds": seconds, "tasks": self.n, "redis_keys": self.store.dbsize()}

    def bulk_enqueue(self, peer: Peer) -> tuple[Metrics, Details]:
        self.reset()
        result = self.action(
            peer, "enqueue-many", timeout_s=ACTION_BASE_TIMEOUT_S + self.n / 100, n=self.n, chunk=figures.CHUNK
        )
        seconds = float(result["seconds"])
        return {"bulk_enqueue": self.n / seconds}, {"seconds": seconds, "tasks": self.n, "chunk": figures.CHUNK}

    # ---- figures 3, 4, 6, 7: drain a full queue ------------------------------------------------------------
    def drain(self, peer: Peer, processes: int, key: str) -> tuple[Metrics, Details]:
        self.reset()
        fill_s = self.fill(peer, self.n)
        before = figures.commandstats(self.store)
        polls_before = self.polls
        redis_before = self.redis_cpu_s()
        first: dict[str, float] = {}
        started = time.perf_counter()
        worker = self.start_worker(peer, processes)
        try:

            def on_first(count: int) -> None:
                first.update(at=time.perf_counter(), done=count, cpu=worker.cpu_s(), redis=self.redis_cpu_s())

            ended = self.wait(worker, self.n, 60.0 + self.n / SLOWEST_RATE, on_first)
            cpu_end, redis_end = worker.cpu_s(), self.redis_cpu_s()
            rss, peak, count = worker.rss()
            after = figures.commandstats(self.store)
            polls = self.polls - polls_before
        finally:
            code = self.stop_worker(worker)
        done = self.done()
        problems = []
        if done != self.n:
            extra = f" ({done - self.n} duplicates)" if done > self.n else ""
            problems.append(f"bench:done = {done} after the stop, expected {self.n}{extra}")
        commands = figures.command_delta(before, after, polls=polls, task_incrs=self.n)
        steady_tasks = self.n - int(first["done"])
        steady_s = ended - first["at"]
        metrics: Metrics = {
            key: self.n / (ended - started),
            f"{key}_steady": steady_tasks / steady_s if steady_s > 0 else math.nan,
            f"{key}_first": first["at"] - started,
            f"{key}_cpu": (cpu_end - first["cpu"]) * 1e6 / steady_tasks if steady_tasks else math.nan,
            f"{key}_cpu_total": cpu_end * 1e6 / self.n,
            f"{key}_redis_cpu": (redis_end - first["redis"]) * 1e6 / steady_tasks if steady_tasks else math.nan,
            f"{key}_rss": rss / 2**20,
            f"{key}_peak_rss": peak / 2**20,
            f"{key}_cmds": commands["total"] / self.n,
        }
        details: Details = {
            "processes": processes,
            "tasks": self.n,
            "fill_s": fill_s,
            "seconds": ended - started,
            "first_completion_s": first["at"] - started,
            "done_at_first_poll": first["done"],
            "done_after_stop": done,
            "worker_tree_cpu_s": {"at_first_completion": first["cpu"], "at_end": cpu_end},
            "redis_cpu_s": {"before_start": redis_before, "at_first_completion": first["redis"], "at_end": redis_end},
            "rss_bytes": rss,
            "peak_rss_bytes": peak,
            "process_count": count,
            "harness_polls": polls,
            "commands": {k: v for k, v in commands.items() if k != "client_estimate"},  # that one is taskqueue's
            "worker_exit_code": code,
            "worker_argv": worker.argv,
            "problems": problems,
        }
        return metrics, details

    # ---- figure 7: Redis bytes per queued task -------------------------------------------------------------
    def redis_bytes(self, peer: Peer) -> tuple[Metrics, Details]:
        self.reset()
        count, rate = figures.MEMORY_TASKS, peer.fill_rate
        if rate and figures.MEMORY_TASKS / rate > FILL_BUDGET_S:
            count = MEMORY_TASKS_SLOW
        before = figures.used_memory(self.store)
        fill_s = self.fill(peer, count)
        after = figures.used_memory(self.store)
        keys = int(self.store.dbsize())
        self.reset()
        metrics: Metrics = {"redis_bytes": (after - before) / count}
        details: Details = {
            "tasks": count,
            "why_fewer": f"fill at {rate:.0f}/s: 100,000 would take over {FILL_BUDGET_S:g}s"
            if count != figures.MEMORY_TASKS
            else None,
            "fill_s": fill_s,
            "used_memory_before": before,
            "used_memory_after": after,
            "redis_keys": keys,
        }
        return metrics, details

    # ---- figure 5 (and 7: idle footprint) ------------------------------------------------------------------
    def latency(self, peer: Peer) -> tuple[Metrics, Details]:
        self.reset()
        count = round(RATE * SECONDS)
        worker = self.start_worker(peer, 1)
        try:
            first_task = self.warm(peer, worker)
            time.sleep(figures.IDLE_SETTLE_S)
            cpu_before = worker.cpu_s()
            time.sleep(figures.IDLE_CPU_WINDOW_S)
            idle_cpu = (worker.cpu_s() - cpu_before) / figures.IDLE_CPU_WINDOW_S * 100
            rss, peak, processes = worker.rss()
            began = time.perf_counter()
            self.action(peer, "latency", timeout_s=SECONDS + ACTION_BASE_TIMEOUT_S, rate=RATE, seconds=SECONDS)
            produced_s = time.perf_counter() - began
            self.wait(worker, count, 30.0 + count / SLOWEST_RATE)
            samples = [float(v) * 1000 for v in self.store.lrange(SAMPLES_KEY, 0, -1)]
        finally:
            code = self.stop_worker(worker)
        if len(samples) != count:
            raise BenchError(f"latency: {len(samples)} samples, expected {count}")
        metrics: Metrics = {
            "lat_p50": figures.quantile(samples, 0.50),
            "lat_p99": figures.quantile(samples, 0.99),
            "lat_max": max(samples),
            "rss_idle": rss / 2**20,
            "idle_cpu": idle_cpu,
            "first_task": first_task,
        }
        details: Details = {
            "tasks": count,
            "rate_target": RATE,
            "producer_s": produced_s,
            "latency_ms": {"min": min(samples), "p90": figures.quantile(samples, 0.90), "max": max(samples)},
            "start_to_first_task_s": first_task,
            "idle": {"rss_bytes": rss, "peak_rss_bytes": peak, "process_count": processes, "cpu_pct": idle_cpu},
            "worker_exit_code": code,
        }
        return metrics, details

    # ---- figure 8 ------------------------------------------------------------------------------------------
    def delay(self, peer: Peer) -> tuple[Metrics, Details]:
        self.reset()
        tasks, delay_s = figures.DELAYED_TASKS, figures.DELAY_S
        worker = self.start_worker(peer, 1)
        try:
            self.warm(peer, worker)
            time.sleep(figures.IDLE_SETTLE_S)
            self.action(peer, "delay", timeout_s=ACTION_BASE_TIMEOUT_S, tasks=tasks, delay=delay_s)
            self.wait(worker, tasks, delay_s + 30.0 + tasks / SLOWEST_RATE)
            late = [float(v) * 1000 for v in self.store.lrange(SAMPLES_KEY, 0, -1)]
        finally:
            code = self.stop_worker(worker)
        if len(late) != tasks:
            raise BenchError(f"delay: {len(late)} samples, expected {tasks}")
        metrics: Metrics = {
            "late_p50": figures.quantile(late, 0.5),
            "late_p99": figures.quantile(late, 0.99),
            "late_max": max(late),
            "late_min": min(late),
        }
        details: Details = {
            "tasks": tasks,
            "delay_s": delay_s,
            "spread": "one delayed enqueue per ms; due = time.time() + delay at the call",
            "worker_exit_code": code,
        }
        return metrics, details

    def to_json(self) -> dict[str, Any]:
        return {peer.name: peer.to_json() for peer in self.peers}

    def troubled(self) -> bool:
        """A peer failed, or one of its steps did (the temp dir with the worker logs is then kept)."""
        return any(p.error is not None or any(run["errors"] for run in p.runs) for p in self.peers)


# ---- the comparison table -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Row:
    key: str  # the metric key, the same for taskqueue and the peers
    label: str
    unit: str
    higher_is_better: bool
    step: str  # the peer step that produces it (for "n/a: <reason>")


ROWS: list[Row] = [
    Row("enqueue", "enqueue/s, one at a time", "/s", True, "enqueue"),
    Row("bulk_enqueue", "bulk enqueue/s, chunks of 1,000", "/s", True, "bulk_enqueue"),
    Row("drain1", "drain/s, 1 process, start-up incl.", "/s", True, "drain1"),
    Row("drain1_steady", "  steady, from the first completion", "/s", True, "drain1"),
    Row("drain2", "drain/s, 2 processes, start-up incl.", "/s", True, "drain2"),
    Row("drain2_steady", "  steady", "/s", True, "drain2"),
    Row("lat_p50", "latency p50 @ 200/s", "ms", False, "latency"),
    Row("lat_p99", "latency p99", "ms", False, "latency"),
    Row("drain1_cpu", "worker CPU per 1k tasks (1-proc drain, steady)", "ms", False, "drain1"),
    Row("drain1_redis_cpu", "redis-server CPU per 1k tasks (same drain)", "ms", False, "drain1"),
    Row("rss_idle", "RSS idle (worker tree)", "MiB", False, "latency"),
    Row("drain1_rss", "RSS after the 1-proc drain", "MiB", False, "drain1"),
    Row("redis_bytes", "Redis bytes per queued task", "B", False, "redis_bytes"),
    Row("drain1_cmds", "Redis commands per task (1-proc drain)", "", False, "drain1"),
    Row("late_p50", "delay lateness p50 (1k over 1 s)", "ms", False, "delay"),
    Row("late_p99", "delay lateness p99", "ms", False, "delay"),
]


def ratio(ours: float | None, best: float | None, higher_is_better: bool) -> float | None:
    """taskqueue vs the best peer, oriented so that > 1 always means taskqueue is better."""
    if ours is None or best is None or math.isnan(ours) or math.isnan(best):
        return None
    if higher_is_better:
        return ours / best if best > 0 else None
    return best / ours if ours > 0 and best > 0 else None


def best_peer(values: dict[str, float], higher_is_better: bool) -> tuple[str, float] | None:
    usable = {name: v for name, v in values.items() if not math.isnan(v)}
    if not usable:
        return None
    pick = max if higher_is_better else min
    name = pick(usable, key=lambda k: usable[k])
    return name, usable[name]


def comparison(ours: dict[str, float] | None, peers: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per figure: taskqueue's median, each peer's median, the best peer, the ratio, the target."""
    rows: list[dict[str, Any]] = []
    for row in ROWS:
        values = {name: medians[row.key] for name, medians in peers.items() if row.key in medians}
        best = best_peer(values, row.higher_is_better)
        mine = ours.get(row.key) if ours is not None else None
        metric = report.KNOWN.get(row.key)
        rows.append(
            {
                "key": row.key,
                "label": row.label,
                "unit": row.unit,
                "higher_is_better": row.higher_is_better,
                "taskqueue": mine,
                "peers": values,
                "best_peer": best[0] if best else None,
                "best": best[1] if best else None,
                "ratio": ratio(mine, best[1] if best else None, row.higher_is_better),
                "target": metric.target if metric else "",
            }
        )
    return rows


def render(rows: list[dict[str, Any]], names: list[str], cells: dict[str, dict[str, str]]) -> str:
    """The table. `cells[peer][key]` overrides a missing value ("n/a", "err", "-")."""
    header = ["metric", "unit", "taskqueue", *names, "best peer", "tq vs best", "target"]
    table = [header]
    for row in rows:
        line = [row["label"], row["unit"], report.fmt(row["taskqueue"]) if row["taskqueue"] is not None else "-"]
        for name in names:
            value = row["peers"].get(name)
            line.append(report.fmt(value) if value is not None else cells.get(name, {}).get(row["key"], "-"))
        line.append(row["best_peer"] or "-")
        line.append(f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-")
        line.append(row["target"])
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = []
    for n, r in enumerate(table):
        cells_out = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells_out += [c.rjust(w) for c, w in zip(r[2:-1], widths[2:-1], strict=True)]
        cells_out.append(r[-1])
        out.append("  ".join(cells_out).rstrip())
        if n == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def missing_cells(peers: list[Peer]) -> dict[str, dict[str, str]]:
    """Why a peer has no value: n/a (unsupported), err (the step failed), or the peer failed entirely."""
    found: dict[str, dict[str, str]] = {}
    for peer in peers:
        mine = found.setdefault(peer.name, {})
        for row in ROWS:
            if peer.error is not None:
                mine[row.key] = "failed"
            elif row.step in peer.unsupported:
                mine[row.key] = "n/a"
            elif any(row.step in run["errors"] for run in peer.runs):
                mine[row.key] = "err"
    return found


def legend(peers: list[Peer]) -> str:
    lines = [
        "tq vs best: taskqueue / best peer for rates; best peer / taskqueue for lower-is-better figures "
        "(latency, CPU, RSS, bytes, commands, lateness): > 1 means taskqueue is better.",
        "n/a: the peer has no such feature; err: that step failed (below); failed: the peer could not run.",
    ]
    for peer in peers:
        if peer.error is not None:
            continue
        facts = peer.facts
        lines.append(
            f"{peer.name} {facts.get('version')} (redis-py {facts.get('redis_py')}, python {facts.get('python')}): "
            f"{facts.get('delivery')}"
        )
        settings = facts.get("settings") or {}
        for key, value in settings.items():
            lines.append(f"    {key}: {value}")
        for step, why in peer.unsupported.items():
            lines.append(f"    n/a {step}: {why}")
        for run in peer.runs:
            memory = run["details"].get("redis_bytes") or {}
            if memory.get("why_fewer"):
                lines.append(f"    Redis bytes per task over {memory['tasks']:,} tasks ({memory['why_fewer']})")
                break
        steady = peer.medians().get("drain1_steady")
        if steady is not None and steady < RATE:
            lines.append(
                f"    its 1-process drain ({steady:.0f}/s) is below the {RATE}/s offered in the latency run: "
                "latency and delay lateness measure a growing backlog there"
            )
    failures = [f"  {p.name}: {p.error}" for p in peers if p.error is not None]
    for peer in peers:
        for run in peer.runs:
            failures += [f"  {peer.name}, run {run['repeat']}, {step}: {why}" for step, why in run["errors"].items()]
            for step, details in run["details"].items():
                failures += [f"  {peer.name}, run {run['repeat']}, {step}: {p}" for p in details.get("problems", [])]
    if failures:
        lines.append("failed peers / steps / problems:")
        lines += failures
    return "\n".join(lines)
