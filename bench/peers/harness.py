"""Our side of `python -m bench --peers`: runs the PERFORMANCE.md workload through each peer.

Runs in the project venv. Every peer action is a subprocess in the peer's own venv,
`bench/.peers/<peer>/bin/python -m bench.peers.drive <peer> <action> --url <private redis> ...` (cwd = repo
root, last stdout line = JSON); a worker is one `... drive <peer> worker --processes K --concurrency C --member I`
per command of the peer's plan, each exec'd into the peer's own worker command, so the pids we started are the
commands' main processes. Their process trees are measured together from /proc (bench/procstat.py) like
taskqueue's runner. Every worker figure runs each peer at C tasks at once per process, as taskqueue's
`max_concurrent_tasks` (PERFORMANCE.md's fairness rule); `own_settings` adds rows at each peer's own setting.
The same private redis-server as taskqueue's figures, FLUSHALLed before every run. Every wait is bounded;
every process we start is killed on exit.
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
from bench.tqrunner import DEFAULT_SLOTS

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
DEFAULT_CONCURRENCY = DEFAULT_SLOTS  # C: tasks at once per worker process (`python -m bench --slots`)
OWN = "own."  # prefix of the steps and metrics run at each peer's own best documented setting
WORKER_STEPS = {"drain1": 1, "drain2": 2, "latency": 1, "delay": 1}  # the steps that run a worker: processes


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
    """A peer's worker: one `drive <peer> worker ... --member I` per command of its plan, each exec'd into that
    command in its own session. Several commands (e.g. two `huey_consumer`s for 2 processes) are one worker:
    started together, measured as one tree (CPU and RSS summed), stopped together."""

    def __init__(self, argvs: list[list[str]], logs: list[Path]) -> None:
        self.argvs, self.logs = argvs, logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.seen: dict[int, int] = {}  # every pid of the trees ever seen -> its start time

    @property
    def argv(self) -> list[list[str]]:
        return self.argvs

    def start(self) -> PeerWorker:
        for argv, log in zip(self.argvs, self.logs, strict=True):
            with log.open("ab") as out:
                process = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    stdout=out,
                    stderr=out,
                    stdin=subprocess.DEVNULL,
                    env=peer_env(),
                    start_new_session=True,
                )
            self.processes.append(process)
            self._remember([process.pid])
        return self

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def alive(self) -> bool:
        """Every command still runs (one that exited is a failed worker)."""
        return bool(self.processes) and all(process.poll() is None for process in self.processes)

    def _remember(self, pids: list[int]) -> None:
        for pid in pids:
            if pid not in self.seen:
                started = _start_time(pid)
                if started is not None:
                    self.seen[pid] = started

    def _live_roots(self) -> list[int]:
        return [process.pid for process in self.processes if process.poll() is None]

    def members(self) -> list[int]:
        """Live descendants of every command's main process."""
        found: list[int] = []
        for root in self._live_roots():
            found += procstat.descendants(root)
        self._remember(found)
        return found

    def cpu_s(self) -> float:
        """User+sys of every command's process tree (live members plus their reaped children), summed."""
        total = 0.0
        for root in self._live_roots():
            members = procstat.descendants(root)
            self._remember(members)
            total += procstat.tree_cpu_s(root, members)
        return total

    def rss(self) -> tuple[int, int, int]:
        """(RSS now, sum of per-process peak RSS, process count) of every command's process tree."""
        now = peak = count = 0
        for pid in [*self._live_roots(), *self.members()]:
            mem = procstat.memory(pid)
            if mem is not None:
                now, peak, count = now + mem.rss_bytes, peak + mem.peak_rss_bytes, count + 1
        return now, peak, count

    def check(self) -> None:
        """Raises BenchError when a command has exited (called while waiting for completions)."""
        for member, process in enumerate(self.processes):
            if process.poll() is not None:
                which = f"worker command {member + 1} of {len(self.processes)}" if len(self.processes) > 1 else "worker"
                raise BenchError(f"{which} exited with {process.returncode}: {self.tail(member)}")

    def tail(self, member: int = 0) -> str:
        try:
            return venvs.last_line(self.logs[member].read_text(errors="replace"))
        except (OSError, IndexError):
            return "(no log)"

    def stop(self) -> int | None:
        """SIGTERM to every command's main process (each peer's graceful stop), then SIGKILL whatever is left.

        Returns the first non-zero exit code (None when a command had to be killed), else 0."""
        if not self.processes:
            return None
        self.members()
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        codes: list[int | None] = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
        self.kill()
        if None in codes:
            return None
        return next((code for code in codes if code), 0)

    def kill(self) -> None:
        """SIGKILL every command's process group and every member ever seen that is still the same process."""
        if any(process.poll() is None for process in self.processes):
            self.members()
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # each leads its own session and group
        for pid, started in sorted(self.seen.items()):
            if procstat.alive(pid) and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for process in self.processes:
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

    def plan(self, setting: str, processes: int) -> dict[str, Any]:
        """The worker plan `describe` reported: setting "equal" (at C) or "own", for 1 or 2 processes."""
        plan: dict[str, Any] = self.facts["plans"][setting][str(processes)]
        return plan

    def own_differs(self, processes: int) -> bool:
        """The peer's own best documented setting is not the one it runs at C (so it gets its own rows)."""
        try:
            equal, own = self.plan("equal", processes), self.plan("own", processes)
        except (KeyError, TypeError):
            return False
        return bool((equal["commands"], equal["env"]) != (own["commands"], own["env"]))

    def runs_at(self, processes: int, concurrency: int) -> bool:
        """Its equal-concurrency plan really runs `concurrency` tasks at once per process (rq: 1, by design)."""
        try:
            return bool(self.plan("equal", processes)["per_process"] == concurrency)
        except (KeyError, TypeError):
            return True

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
    concurrency: int = DEFAULT_CONCURRENCY  # C: every peer's worker runs up to C tasks at once per process
    own_settings: bool = False  # also run the worker figures at each peer's own best documented setting
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
                peer.facts = self.action(
                    peer, "describe", timeout_s=ACTION_BASE_TIMEOUT_S, concurrency=self.concurrency
                )
                peer.action_overhead_s = time.perf_counter() - began
                self.say(f"{peer.name} {peer.facts.get('version')}: {peer.facts.get('delivery')}")
            except BenchError as exc:
                peer.error = f"describe: {exc}"
                self.say(f"{peer.name}: {peer.error}")

    def ready(self) -> list[Peer]:
        return [p for p in self.peers if p.error is None and p.python is not None]

    # ---- running -----------------------------------------------------------------------------------------
    def steps(self, peer: Peer) -> list[tuple[str, Callable[[Peer], tuple[Metrics, Details]]]]:
        """The figures' steps at C; with `own_settings`, then the worker steps again at the peer's own setting
        where it differs from C (steps and metrics prefixed `own.`)."""
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
        return chosen + self.own_steps(peer) if self.own_settings else chosen

    def own_steps(self, peer: Peer) -> list[tuple[str, Callable[[Peer], tuple[Metrics, Details]]]]:
        """The worker steps at the peer's own best documented setting, where it differs from its setting at C."""
        chosen: list[tuple[str, Callable[[Peer], tuple[Metrics, Details]]]] = []
        if self.selected & {3, 6, 7} and peer.own_differs(1):
            chosen.append((f"{OWN}drain1", lambda p: self.drain(p, 1, f"{OWN}drain1", own=True)))
        if 4 in self.selected and peer.own_differs(2):
            chosen.append((f"{OWN}drain2", lambda p: self.drain(p, 2, f"{OWN}drain2", own=True)))
        if self.selected & {5, 7} and peer.own_differs(1):
            chosen.append((f"{OWN}latency", lambda p: self.latency(p, own=True)))
        if 8 in self.selected and peer.own_differs(1):
            chosen.append((f"{OWN}delay", lambda p: self.delay(p, own=True)))
        return chosen

    def run_repeat(self, repeat: int, repeats: int) -> None:
        """One repetition of every figure for every ready peer; a failed step is recorded, the rest go on."""
        for peer in self.ready():
            run: dict[str, Any] = {"repeat": repeat, "metrics": {}, "details": {}, "errors": {}}
            peer.runs.append(run)
            for name, step in self.steps(peer):
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

    def start_worker(self, peer: Peer, processes: int, own: bool = False) -> PeerWorker:
        """The peer's worker for `processes` processes at C (or at its own setting): one `drive ... worker`
        per command of the plan `describe` reported."""
        assert peer.python is not None
        plan = peer.plan("own" if own else "equal", processes)
        count = len(plan["commands"])
        self.workers_started += 1
        tag = f"peer-{peer.name}-{self.workers_started:03d}-{processes}p{'-own' if own else ''}"
        logs = [self.folder / (f"{tag}.log" if count == 1 else f"{tag}-{m + 1}.log") for m in range(count)]
        setting = ["--own"] if own else ["--concurrency", str(self.concurrency)]
        base = [str(peer.python), "-m", "bench.peers.drive", peer.name, "worker", "--url", self.server.url]
        argvs = [[*base, "--processes", str(processes), *setting, "--member", str(m)] for m in range(count)]
        worker = PeerWorker(argvs, logs)
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
    def drain(self, peer: Peer, processes: int, key: str, own: bool = False) -> tuple[Metrics, Details]:
        self.reset()
        fill_s = self.fill(peer, self.n)
        before = figures.commandstats(self.store)
        polls_before = self.polls
        redis_before = self.redis_cpu_s()
        first: dict[str, float] = {}
        started = time.perf_counter()
        worker = self.start_worker(peer, processes, own)
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
            "setting": "own" if own else "equal",
            "plan": peer.plan("own" if own else "equal", processes),
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
    def latency(self, peer: Peer, own: bool = False) -> tuple[Metrics, Details]:
        self.reset()
        count = round(RATE * SECONDS)
        prefix = OWN if own else ""
        worker = self.start_worker(peer, 1, own)
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
            f"{prefix}lat_p50": figures.quantile(samples, 0.50),
            f"{prefix}lat_p99": figures.quantile(samples, 0.99),
            f"{prefix}lat_max": max(samples),
            f"{prefix}rss_idle": rss / 2**20,
            f"{prefix}idle_cpu": idle_cpu,
            f"{prefix}first_task": first_task,
        }
        details: Details = {
            "setting": "own" if own else "equal",
            "worker_argv": worker.argv,
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
    def delay(self, peer: Peer, own: bool = False) -> tuple[Metrics, Details]:
        self.reset()
        tasks, delay_s = figures.DELAYED_TASKS, figures.DELAY_S
        prefix = OWN if own else ""
        worker = self.start_worker(peer, 1, own)
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
            f"{prefix}late_p50": figures.quantile(late, 0.5),
            f"{prefix}late_p99": figures.quantile(late, 0.99),
            f"{prefix}late_max": max(late),
            f"{prefix}late_min": min(late),
        }
        details: Details = {
            "setting": "own" if own else "equal",
            "worker_argv": worker.argv,
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


@dataclass(frozen=True, slots=True)
class Fairness:
    """Which peer values a comparison may use (PERFORMANCE.md's fairness rule)."""

    concurrency: int  # C: taskqueue's slots and every peer's per-process concurrency in the worker figures
    unequal: dict[str, set[int]] = field(default_factory=dict)  # peer -> process counts not at C per process
    own_same: dict[str, set[int]] = field(default_factory=dict)  # peer -> process counts whose own setting is C


def fairness(peers: list[Peer], concurrency: int) -> Fairness:
    """From each peer's plans: where it cannot run C at once (rq) and where its own setting is the one at C."""
    unequal: dict[str, set[int]] = {}
    own_same: dict[str, set[int]] = {}
    for peer in peers:
        if peer.error is not None or "plans" not in peer.facts:
            continue
        counts = set(WORKER_STEPS.values())
        unequal[peer.name] = {k for k in counts if not peer.runs_at(k, concurrency)}
        own_same[peer.name] = {k for k in counts if not peer.own_differs(k)}
    return Fairness(concurrency, unequal, own_same)


def _row(
    row: Row, ours: float | None, values: dict[str, float], usable: set[str], marks: dict[str, str], setting: str
) -> dict[str, Any]:
    best = best_peer({name: v for name, v in values.items() if name in usable}, row.higher_is_better)
    metric = report.KNOWN.get(row.key)
    return {
        "key": row.key if setting == "equal" else f"{OWN}{row.key}",
        "label": row.label,
        "unit": row.unit,
        "higher_is_better": row.higher_is_better,
        "setting": setting,
        "taskqueue": ours,
        "peers": values,
        "marks": marks,
        "best_peer": best[0] if best else None,
        "best": best[1] if best else None,
        "ratio": ratio(ours, best[1] if best else None, row.higher_is_better) if setting == "equal" else None,
        "target": metric.target if metric and setting == "equal" else "",
    }


def comparison(
    ours: dict[str, float] | None, peers: dict[str, dict[str, float]], rule: Fairness | None = None
) -> list[dict[str, Any]]:
    """One row per figure: taskqueue's median, each peer's median, the best peer, the ratio, the target.

    Equal rows (setting "equal"): everyone at C. A peer that cannot run C at once per process (rq) is shown,
    marked "*", but is not a candidate for the best peer of a worker figure, so the ratio only ever compares
    equal concurrency. Then, when any peer has `own.` medians (`--peers-own-settings`), the "own" rows of the
    worker figures: each peer at its own best documented setting (marked "=" where that is its setting at C),
    best peer among them, no taskqueue value and no ratio."""
    rule = rule or Fairness(DEFAULT_CONCURRENCY)
    rows: list[dict[str, Any]] = []
    for row in ROWS:
        values = {name: medians[row.key] for name, medians in peers.items() if row.key in medians}
        processes = WORKER_STEPS.get(row.step)
        marks = {name: "*" for name in values if processes is not None and processes in rule.unequal.get(name, set())}
        mine = ours.get(row.key) if ours is not None else None
        rows.append(_row(row, mine, values, set(values) - set(marks), marks, "equal"))
    if not any(key.startswith(OWN) for medians in peers.values() for key in medians):
        return rows
    for row in ROWS:
        processes = WORKER_STEPS.get(row.step)
        if processes is None:
            continue
        values, marks = {}, {}
        for name, medians in peers.items():
            if f"{OWN}{row.key}" in medians:
                values[name] = medians[f"{OWN}{row.key}"]
            elif processes in rule.own_same.get(name, set()) and row.key in medians:
                values[name], marks[name] = medians[row.key], "="
        rows.append(_row(row, None, values, set(values), marks, "own"))
    return rows


def render(rows: list[dict[str, Any]], names: list[str], cells: dict[str, dict[str, str]]) -> str:
    """The table. `cells[peer][key]` overrides a missing value ("n/a", "err", "-"); a row's `marks[peer]` follows
    the peer's value ("*": not at C per process, "="): own setting = the one at C). The own rows come under a
    heading of their own."""
    header = ["metric", "unit", "taskqueue", *names, "best peer", "tq vs best", "target"]
    table = [header]
    own_at = None
    for row in rows:
        if row.get("setting") == "own" and own_at is None:
            own_at = len(table)
        line = [row["label"], row["unit"], report.fmt(row["taskqueue"]) if row["taskqueue"] is not None else "-"]
        for name in names:
            value = row["peers"].get(name)
            mark = row.get("marks", {}).get(name, "")
            line.append(report.fmt(value) + mark if value is not None else cells.get(name, {}).get(row["key"], "-"))
        line.append(row["best_peer"] or "-")
        line.append(f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-")
        line.append(row["target"])
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = []
    for n, r in enumerate(table):
        if n == own_at:
            out.append("-- each peer at its own best documented setting (where it differs from C; = : the same) --")
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
            for prefix in ("", OWN) if row.step in WORKER_STEPS else ("",):
                key, step = f"{prefix}{row.key}", f"{prefix}{row.step}"
                if peer.error is not None:
                    mine[key] = "failed"
                elif step in peer.unsupported:
                    mine[key] = "n/a"
                elif any(step in run["errors"] for run in peer.runs):
                    mine[key] = "err"
    return found


def _peer_legend(peer: Peer, rule: Fairness) -> list[str]:
    """A peer's version, delivery guarantee, the settings it ran with (at C and its own), n/a reasons."""
    lines: list[str] = []
    facts = peer.facts
    lines.append(
        f"{peer.name} {facts.get('version')} (redis-py {facts.get('redis_py')}, python {facts.get('python')}): "
        f"{facts.get('delivery')}"
    )
    plans = facts.get("plans") or {}
    for setting, title in (("equal", f"at C = {rule.concurrency}"), ("own", "own setting")):
        shown = [plan["what"] for _, plan in sorted((plans.get(setting) or {}).items())]
        if setting == "own" and not any(peer.own_differs(k) for k in (1, 2)):
            shown = ["the same as at C"]
        if shown:
            lines.append(f"    {title}: {' | '.join(shown)}")
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
    return lines


def legend(peers: list[Peer], rule: Fairness | None = None) -> str:
    rule = rule or Fairness(DEFAULT_CONCURRENCY)
    lines = [
        f"C = {rule.concurrency}: in every worker figure taskqueue (workers.max_concurrent_tasks) and each peer run "
        "up to C tasks at once per worker process (threads for sync peers, async slots for async ones); "
        "2 processes = two worker commands, or the peer's own multi-process mode, at C each.",
        "tq vs best: taskqueue / best peer for rates; best peer / taskqueue for lower-is-better figures "
        "(latency, CPU, RSS, bytes, commands, lateness): > 1 means taskqueue is better. Only equal-concurrency "
        "values are compared.",
        "*: the peer cannot run C tasks at once per process (rq: one job at a time by design); shown, but never the "
        "best peer of a worker figure.",
        "n/a: the peer has no such feature; err: that step failed (below); failed: the peer could not run.",
    ]
    for peer in peers:
        if peer.error is None:
            lines += _peer_legend(peer, rule)
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
