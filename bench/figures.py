"""The measurements (figures 1-8 of PERFORMANCE.md) against the real runner and a private Redis.

Every loop here is bounded by a count and a deadline. Each function returns `(metrics, details)`:
metrics are the numbers the table shows (medians over repeats), details the raw facts kept in JSON.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat
from bench.jobs import DONE_KEY, SAMPLES_KEY
from bench.redisserver import RedisServer
from bench.tqrunner import DEFAULT_SLOTS, QUEUE, Runner, Settings, write_config
from taskqueue.client import AsyncClient, Client, chain, step

PREFIX = "tq"
QUEUE_KEY = f"{PREFIX}:queue:{QUEUE}"
ALL_QUEUE_KEYS = [f"{PREFIX}:queue:{q}" for q in ("high_priority", "default", "low_priority")]
TABLE_KEYS = (f"{PREFIX}:tasks", f"{PREFIX}:queues")
POLL_S = 0.005  # the harness's GET bench:done period
CHUNK = 1000  # enqueue_many chunk size (figure 2 and every pre-filled queue)
WORKERS_UP_TIMEOUT_S = 30.0
LATENCY_RATE = 200
LATENCY_SECONDS = 10
DELAYED_TASKS = 1000
DELAY_S = 1.0
MEMORY_TASKS = 100_000
IDLE_SETTLE_S = 1.0
IDLE_CPU_WINDOW_S = 2.0
WORKFLOW_CHAINS = 1000  # figure 9: this many chains ...
WORKFLOW_STEPS = 10  # ... of this many steps

Metrics = dict[str, float]
Details = dict[str, Any]


class BenchError(RuntimeError):
    """A run could not complete (timeout, runner died); the message says which and why."""


@dataclass
class Context:
    server: RedisServer
    pex: Path
    folder: Path
    n: int
    say: Callable[[str], None]
    store: Any = None  # harness client: polling, INFO, FLUSHALL
    configs: dict[int, Path] = field(default_factory=dict)  # worker count -> YAML path
    yamls: dict[int, str] = field(default_factory=dict)
    tables: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    live: list[Runner] = field(default_factory=list)
    polls: int = 0  # GETs the harness issued (subtracted from the command counts)
    events: bool = False  # every task with lifecycle events on (--events)
    slots: int = DEFAULT_SLOTS  # workers.max_concurrent_tasks, C of the fairness rule (--slots)
    runs: int = 0

    def config(self, workers: int) -> Path:
        if workers not in self.configs:
            settings = Settings(workers=workers, slots=self.slots, events=self.events)
            path, text = write_config(self.folder, self.server.url, settings)
            self.configs[workers], self.yamls[workers] = path, text
        return self.configs[workers]

    # ---- runner lifecycle --------------------------------------------------------------------------
    def start_runner(self, workers: int) -> Runner:
        self.runs += 1
        log = self.folder / f"runner-{self.runs:03d}-{workers}w.log"
        runner = Runner(self.pex, self.config(workers), self.server.url, log)
        self.live.append(runner)
        return runner.start()

    def stop_runner(self, runner: Runner) -> int | None:
        code = runner.stop()  # if this is interrupted, the runner stays in `live` for kill_all()
        self.live.remove(runner)
        return code

    def kill_all(self) -> None:
        for runner in list(self.live):
            runner.kill()
        self.live.clear()

    def wait_workers(self, runner: Runner, count: int) -> float:
        """Seconds from the runner's start until `count` workers have registered (their first heartbeat)."""
        started = time.perf_counter()
        deadline = time.monotonic() + WORKERS_UP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not runner.alive():
                raise BenchError(
                    f"runner exited with {runner.process and runner.process.returncode}: {self.tail(runner)}"
                )
            if int(self.store.zcard(f"{PREFIX}:workers")) >= count:
                return time.perf_counter() - started
            time.sleep(POLL_S)
        raise BenchError(f"{count} worker(s) did not register within {WORKERS_UP_TIMEOUT_S:g}s: {self.tail(runner)}")

    @staticmethod
    def tail(runner: Runner, lines: int = 5) -> str:
        try:
            return " | ".join(runner.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---- Redis state -------------------------------------------------------------------------------
    def publish_tables(self) -> float:
        """Start the runner once so it publishes its task table; keep a copy to restore after FLUSHALL."""
        self.store.flushall()
        runner = self.start_runner(1)
        try:
            up = self.wait_workers(runner, 1)
        finally:
            self.stop_runner(runner)
        for key in TABLE_KEYS:
            self.tables[key] = self.store.hgetall(key)
            if not self.tables[key]:
                raise BenchError(f"the runner did not publish {key}")
        return up

    def reset(self) -> None:
        """FLUSHALL (the server is ours), then put the runner's task table back for the clients."""
        self.store.flushall()
        for key, mapping in self.tables.items():
            self.store.hset(key, mapping=mapping)

    def done(self) -> int:
        self.polls += 1
        return done_count(self.store)

    def redis_cpu_s(self) -> float:
        return process_cpu_s(self.server.pid)

    def commandstats(self) -> dict[str, int]:
        return commandstats(self.store)

    def used_memory(self) -> int:
        return used_memory(self.store)

    def fill(self, client: Client, task: str, count: int, args: tuple[Any, ...] = ()) -> None:
        left = count
        for _ in range(count // CHUNK + 1):
            if left <= 0:
                break
            size = min(CHUNK, left)
            client.enqueue_many([(task, args, {})] * size)
            left -= size

    def wait_done(self, target: int, timeout_s: float, on_first: Callable[[int], None] | None = None) -> float:
        """Poll GET bench:done every 5 ms (monotonic schedule) until it reaches `target`; returns perf_counter()."""
        return wait_done(self.done, target, timeout_s, on_first)


# ---- shared with the peers harness (bench/peers/harness.py) ----------------------------------------------
def done_count(store: Any) -> int:
    """`GET bench:done` (one poll of the harness): completions so far."""
    raw = store.get(DONE_KEY)
    return int(raw) if raw is not None else 0


def process_cpu_s(pid: int) -> float:
    """User+sys seconds of one process (redis-server); 0 when it is gone."""
    sample = procstat.cpu(pid)
    return sample.total_s if sample else 0.0


def commandstats(store: Any) -> dict[str, int]:
    """`INFO commandstats` as {command: calls}."""
    stats = store.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def used_memory(store: Any) -> int:
    return int(store.info("memory")["used_memory"])


def wait_done(
    done: Callable[[], int],
    target: int,
    timeout_s: float,
    on_first: Callable[[int], None] | None = None,
    check: Callable[[], None] | None = None,
) -> float:
    """Poll `done()` (GET bench:done) every 5 ms on a monotonic schedule until it reaches `target`.

    Returns perf_counter() at the poll that saw it. `on_first(count)` runs at the first poll that sees a
    completion; `check()` runs about every 100 ms and may raise BenchError (e.g. the worker died).
    """
    deadline = time.monotonic() + timeout_s
    tick = time.monotonic()
    first = on_first is None
    for poll in range(int(timeout_s / POLL_S) + 2):
        count = done()
        now = time.perf_counter()
        if not first and count > 0:
            first = True
            assert on_first is not None
            on_first(count)
        if count >= target:
            return now
        if time.monotonic() > deadline:
            break
        if check is not None and poll % 20 == 19:
            check()
        tick += POLL_S
        pause = tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            tick = time.monotonic()
    raise BenchError(f"only {done()} of {target} tasks done within {timeout_s:g}s")


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _client(ctx: Context) -> Client:
    client = Client(ctx.server.url)
    client.refresh()  # load the task table now, not inside the timed loop
    return client


# ---- figures 1 and 2: enqueue ---------------------------------------------------------------------------
def enqueue_one_by_one(ctx: Context) -> tuple[Metrics, Details]:
    ctx.reset()
    client = _client(ctx)
    try:
        started = time.perf_counter()
        for _ in range(ctx.n):
            client.enqueue("anoop_incr")
        elapsed = time.perf_counter() - started
        queued = int(ctx.store.llen(QUEUE_KEY))
    finally:
        client.close()
    if queued != ctx.n:
        raise BenchError(f"enqueue: {queued} queued, expected {ctx.n}")
    return {"enqueue": ctx.n / elapsed}, {"seconds": elapsed, "tasks": ctx.n}


def enqueue_async(ctx: Context) -> tuple[Metrics, Details]:
    ctx.reset()

    async def produce() -> float:
        client = AsyncClient(ctx.server.url)
        try:
            await client.refresh()
            started = time.perf_counter()
            for _ in range(ctx.n):
                await client.enqueue("anoop_incr")
            return time.perf_counter() - started
        finally:
            await client.aclose()

    elapsed = asyncio.run(produce())
    queued = int(ctx.store.llen(QUEUE_KEY))
    if queued != ctx.n:
        raise BenchError(f"async enqueue: {queued} queued, expected {ctx.n}")
    return {"enqueue_async": ctx.n / elapsed}, {"seconds": elapsed, "tasks": ctx.n, "loop": "asyncio (default)"}


def enqueue_bulk(ctx: Context) -> tuple[Metrics, Details]:
    ctx.reset()
    client = _client(ctx)
    try:
        started = time.perf_counter()
        ctx.fill(client, "anoop_incr", ctx.n)
        elapsed = time.perf_counter() - started
        queued = int(ctx.store.llen(QUEUE_KEY))
    finally:
        client.close()
    if queued != ctx.n:
        raise BenchError(f"enqueue_many: {queued} queued, expected {ctx.n}")
    return {"bulk_enqueue": ctx.n / elapsed}, {"seconds": elapsed, "tasks": ctx.n, "chunk": CHUNK}


# ---- figures 3, 4, 6, 7: drain a full queue -------------------------------------------------------------
@dataclass
class _First:
    at: float = 0.0
    done: int = 0
    cpu_s: float = 0.0
    redis_cpu_s: float = 0.0


def drain(ctx: Context, workers: int, task: str, key: str) -> tuple[Metrics, Details]:
    """N tasks queued, then start the runner; until bench:done == N. Also CPU, RSS and command counts."""
    ctx.reset()
    client = _client(ctx)
    try:
        ctx.fill(client, task, ctx.n)
    finally:
        client.close()
    if int(ctx.store.llen(QUEUE_KEY)) != ctx.n:
        raise BenchError("the queue was not filled")
    before = ctx.commandstats()
    polls_before = ctx.polls
    redis_before = ctx.redis_cpu_s()
    first = _First()
    started = time.perf_counter()
    runner = ctx.start_runner(workers)
    try:

        def on_first(count: int) -> None:
            first.at, first.done = time.perf_counter(), count
            first.cpu_s, first.redis_cpu_s = runner.cpu_s(), ctx.redis_cpu_s()

        ended = ctx.wait_done(ctx.n, 30.0 + ctx.n / 200, on_first)
        cpu_end, redis_end = runner.cpu_s(), ctx.redis_cpu_s()
        rss, peak, processes = runner.rss()
        after = ctx.commandstats()
        polls = ctx.polls - polls_before
    finally:
        code = ctx.stop_runner(runner)
    checks = _after_drain_checks(ctx, ctx.n)
    commands = command_delta(before, after, polls=polls, task_incrs=ctx.n)
    steady_tasks = ctx.n - first.done
    steady_s = ended - first.at
    metrics: Metrics = {
        key: ctx.n / (ended - started),
        f"{key}_steady": steady_tasks / steady_s if steady_s > 0 else float("nan"),
        f"{key}_first": first.at - started,
        f"{key}_cpu": (cpu_end - first.cpu_s) * 1e6 / steady_tasks if steady_tasks else float("nan"),
        f"{key}_cpu_total": cpu_end * 1e6 / ctx.n,
        f"{key}_redis_cpu": (redis_end - first.redis_cpu_s) * 1e6 / steady_tasks if steady_tasks else float("nan"),
        f"{key}_rss": rss / 2**20,
        f"{key}_peak_rss": peak / 2**20,
        f"{key}_cmds": commands["total"] / ctx.n,
        f"{key}_client_cmds": commands["client_estimate"] / ctx.n,
        f"{key}_evalsha": commands["calls"].get("evalsha", 0) / ctx.n,
    }
    details: Details = {
        "workers": workers,
        "task": task,
        "tasks": ctx.n,
        "seconds": ended - started,
        "first_completion_s": first.at - started,
        "done_at_first_poll": first.done,
        "worker_tree_cpu_s": {"at_first_completion": first.cpu_s, "at_end": cpu_end},
        "redis_cpu_s": {
            "before_start": redis_before,
            "at_first_completion": first.redis_cpu_s,
            "at_end": redis_end,
        },
        "rss_bytes": rss,
        "peak_rss_bytes": peak,
        "processes": processes,
        "harness_polls": polls,
        "commands": commands,
        "runner_exit_code": code,
        "problems": checks,
    }
    return metrics, details


def workflows(ctx: Context) -> tuple[Metrics, Details]:
    """Figure 9: 1,000 chains of 10 async steps (each an INCR) started, then one worker process drains them;
    steps/s and Redis commands per step. A chain is the slowest shape: each step waits for the one before."""
    ctx.reset()
    client = _client(ctx)
    try:
        started_enqueue = time.perf_counter()
        ids = [
            client.enqueue_workflow(chain(*(step("astep_incr") for _ in range(WORKFLOW_STEPS))))
            for _ in range(WORKFLOW_CHAINS)
        ]
        enqueue_s = time.perf_counter() - started_enqueue
    finally:
        client.close()
    steps = WORKFLOW_CHAINS * WORKFLOW_STEPS
    before = ctx.commandstats()
    polls_before = ctx.polls
    started = time.perf_counter()
    runner = ctx.start_runner(1)
    try:
        ended = ctx.wait_done(steps, 60.0 + steps / 200)
        cpu_end = runner.cpu_s()
        after = ctx.commandstats()
        polls = ctx.polls - polls_before
    finally:
        code = ctx.stop_runner(runner)
    commands = command_delta(before, after, polls=polls, task_incrs=steps)
    finished = sum(1 for i in ids if ctx.store.exists(f"{PREFIX}:result:{i}"))
    problems = [] if finished == len(ids) else [f"{len(ids) - finished} workflow result(s) missing"]
    metrics: Metrics = {
        "wf_steps": steps / (ended - started),
        "wf_enqueue": WORKFLOW_CHAINS / enqueue_s,
        "wf_cmds": commands["total"] / steps,
        "wf_cpu": cpu_end * 1e6 / steps,
    }
    details: Details = {
        "chains": WORKFLOW_CHAINS,
        "steps_per_chain": WORKFLOW_STEPS,
        "seconds": ended - started,
        "enqueue_seconds": enqueue_s,
        "commands": commands,
        "runner_exit_code": code,
        "problems": problems,
    }
    return metrics, details


def _after_drain_checks(ctx: Context, expected: int) -> list[str]:
    """What a correct drain leaves: exactly `expected` completions, empty queues, nothing dead or in flight."""
    problems: list[str] = []
    done = ctx.done()
    if done != expected:
        problems.append(f"bench:done = {done}, expected {expected}" + (" (duplicates)" if done > expected else ""))
    for key in ALL_QUEUE_KEYS:
        left = int(ctx.store.llen(key))
        if left:
            problems.append(f"{key} still holds {left}")
    dead = int(ctx.store.hlen(f"{PREFIX}:dead"))
    if dead:
        problems.append(f"{dead} dead-lettered")
    inflight = list(ctx.store.scan_iter(f"{PREFIX}:inflight:*", count=1000))
    if inflight:
        problems.append(f"in-flight hashes left: {[k.decode() for k in inflight]}")
    results = next(iter(ctx.store.scan_iter(f"{PREFIX}:result:*", count=1000)), None)
    if results is not None:
        problems.append("result keys were written although result_ttl is 0")
    return problems


# Connection set-up, not per-task work: the task bodies' own connections (up to one per slot) say HELLO too.
SETUP_COMMANDS = ("hello", "client|setinfo", "select", "auth", "script|load")


# Commands that, in a drain, only run inside the Lua scripts (exchange: HDEL, HINCRBY, RPOP, HSET, and the GET and
# SET of the worker's fence, the harness's GET polls being removed already; promote: ZRANGEBYSCORE, ZRANGE, and
# EXISTS of the limits' waiting index). HSET also comes from heartbeats (heartbeat.lua, with PEXPIRE) and the task
# table (two in one MULTI/EXEC); ZRANGEBYSCORE also from the reaper.
def _lua_inner_estimate(calls: dict[str, int]) -> int:
    promote = calls.get("zrange", 0)
    limits_look = min(promote, calls.get("exists", 0))
    hset_inner = max(0, calls.get("hset", 0) - calls.get("pexpire", 0) - 2 * calls.get("exec", 0))
    return (
        calls.get("rpop", 0)
        + calls.get("get", 0)
        + calls.get("set", 0)
        + calls.get("hdel", 0)
        + calls.get("hincrby", 0)
        + promote
        + min(promote, calls.get("zrangebyscore", 0))
        + limits_look
        + hset_inner
    )


def command_delta(before: dict[str, int], after: dict[str, int], *, polls: int, task_incrs: int) -> dict[str, Any]:
    calls = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    calls = {name: n for name, n in calls.items() if n > 0}
    calls.pop("info", None)  # the harness's own INFO
    calls["get"] = calls.get("get", 0) - polls  # the harness's polling
    body = "incrby" if calls.get("incrby", 0) >= task_incrs else "incr"
    calls[body] = calls.get(body, 0) - task_incrs  # the task body's own INCR (redis-py sends INCRBY key 1)
    calls = {name: n for name, n in calls.items() if n != 0}
    setup = {name: calls.pop(name) for name in SETUP_COMMANDS if name in calls}
    total = sum(calls.values())
    return {
        "calls": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "total": total,
        "client_estimate": total - _lua_inner_estimate(calls),
        "setup": setup,
        "subtracted": {"get (harness polls)": polls, f"{body} (task body)": task_incrs},
    }


# ---- figure 5: latency ---------------------------------------------------------------------------------
def latency(ctx: Context, task: str, key: str) -> tuple[Metrics, Details]:
    ctx.reset()
    count = LATENCY_RATE * LATENCY_SECONDS
    runner = ctx.start_runner(1)
    client = _client(ctx)
    try:
        ctx.wait_workers(runner, 1)
        time.sleep(IDLE_SETTLE_S)
        lags: list[float] = []
        started = time.monotonic()
        for k in range(count):
            due = started + k / LATENCY_RATE
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            lags.append(time.monotonic() - due)
            client.enqueue(task, time.time())
        produced_s = time.monotonic() - started
        ctx.wait_done(count, 30.0)
        samples = [float(v) * 1000 for v in ctx.store.lrange(SAMPLES_KEY, 0, -1)]
    finally:
        client.close()
        code = ctx.stop_runner(runner)
    if len(samples) != count:
        raise BenchError(f"latency: {len(samples)} samples, expected {count}")
    metrics: Metrics = {
        f"{key}_p50": quantile(samples, 0.50),
        f"{key}_p99": quantile(samples, 0.99),
        f"{key}_max": max(samples),
    }
    details: Details = {
        "task": task,
        "tasks": count,
        "rate_target": LATENCY_RATE,
        "rate_achieved": count / produced_s,
        "producer_lag_ms": {"p50": quantile(lags, 0.5) * 1000, "max": max(lags) * 1000},
        "latency_ms": {
            "min": min(samples),
            "mean": statistics.fmean(samples),
            "p90": quantile(samples, 0.90),
            "p999": quantile(samples, 0.999),
        },
        "runner_exit_code": code,
    }
    return metrics, details


# ---- figure 7: idle footprint, Redis bytes per task ---------------------------------------------------------
def idle(ctx: Context) -> tuple[Metrics, Details]:
    ctx.reset()
    runner = ctx.start_runner(1)
    try:
        up = ctx.wait_workers(runner, 1)
        time.sleep(IDLE_SETTLE_S)
        cpu_before = runner.cpu_s()
        redis_before = ctx.redis_cpu_s()
        time.sleep(IDLE_CPU_WINDOW_S)
        cpu_idle = runner.cpu_s() - cpu_before
        redis_idle = ctx.redis_cpu_s() - redis_before
        rss, peak, processes = runner.rss()
    finally:
        code = ctx.stop_runner(runner)
    metrics: Metrics = {
        "startup": up,
        "rss_idle": rss / 2**20,
        "idle_cpu": cpu_idle / IDLE_CPU_WINDOW_S * 100,
    }
    details: Details = {
        "start_to_workers_registered_s": up,
        "rss_bytes": rss,
        "peak_rss_bytes": peak,
        "processes": processes,
        "idle_cpu_pct": {
            "runner_tree": cpu_idle / IDLE_CPU_WINDOW_S * 100,
            "redis": redis_idle / IDLE_CPU_WINDOW_S * 100,
        },
        "runner_exit_code": code,
    }
    return metrics, details


def redis_bytes(ctx: Context) -> tuple[Metrics, Details]:
    ctx.reset()
    client = _client(ctx)
    try:
        before = ctx.used_memory()
        ctx.fill(client, "anoop_incr", MEMORY_TASKS)
        after = ctx.used_memory()
    finally:
        client.close()
    queued = int(ctx.store.llen(QUEUE_KEY))
    if queued != MEMORY_TASKS:
        raise BenchError(f"memory: {queued} queued, expected {MEMORY_TASKS}")
    sample = ctx.store.lindex(QUEUE_KEY, 0)
    ctx.reset()
    per_task = (after - before) / MEMORY_TASKS
    return (
        {"redis_bytes": per_task, "envelope_bytes": float(len(sample))},
        {"used_memory_before": before, "used_memory_after": after, "tasks": MEMORY_TASKS, "envelope": sample.hex()},
    )


# ---- figure 8: delay lateness ----------------------------------------------------------------------------
def delay_lateness(ctx: Context) -> tuple[Metrics, Details]:
    """1,000 tasks with delay=1 s, idle workers: spread (one enqueue per ms), then all due at one instant."""
    ctx.reset()
    runner = ctx.start_runner(1)
    client = _client(ctx)
    try:
        ctx.wait_workers(runner, 1)
        time.sleep(IDLE_SETTLE_S)
        # Spread: due times 1 ms apart over 1 s; each task gets its due (enqueue time + 1 s) as argument.
        started = time.monotonic()
        for k in range(DELAYED_TASKS):
            pause = started + k / 1000 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            client.enqueue("alatency", time.time() + DELAY_S, delay=DELAY_S)
        ctx.wait_done(DELAYED_TASKS, DELAY_S + 30.0)
        spread = [float(v) * 1000 for v in ctx.store.lrange(SAMPLES_KEY, 0, -1)]
        # Burst: one enqueue_many, every task due at the same instant (the score the client wrote).
        ctx.store.delete(SAMPLES_KEY, DONE_KEY)
        time.sleep(IDLE_SETTLE_S)
        planned = time.time() + DELAY_S
        client.enqueue_many([("alatency", (planned,), {})] * DELAYED_TASKS, delay=DELAY_S)
        head = ctx.store.zrange(f"{PREFIX}:delayed", 0, 0, withscores=True)
        tail = ctx.store.zrange(f"{PREFIX}:delayed", -1, -1, withscores=True)
        ctx.wait_done(DELAYED_TASKS, DELAY_S + 30.0)
        due = float(head[0][1]) / 1000 if head else planned
        burst = [(float(v) + planned - due) * 1000 for v in ctx.store.lrange(SAMPLES_KEY, 0, -1)]
    finally:
        client.close()
        code = ctx.stop_runner(runner)
    if len(spread) != DELAYED_TASKS or len(burst) != DELAYED_TASKS:
        raise BenchError(f"delay: {len(spread)} + {len(burst)} samples, expected {DELAYED_TASKS} each")
    metrics: Metrics = {
        "late_p50": quantile(spread, 0.5),
        "late_p99": quantile(spread, 0.99),
        "late_max": max(spread),
        "late_min": min(spread),
        "late_burst_p50": quantile(burst, 0.5),
        "late_burst_p99": quantile(burst, 0.99),
        "late_burst_min": min(burst),
    }
    details: Details = {
        "tasks": DELAYED_TASKS,
        "delay_s": DELAY_S,
        "spread": "one Client.enqueue(delay=1) per ms: due times spread over 1 s; due = time.time() + 1 at the call",
        "burst": "one enqueue_many(delay=1): all due at the same instant; due = the score written to tq:delayed",
        "burst_due_scores_ms": [float(head[0][1]) if head else None, float(tail[0][1]) if tail else None],
        "burst_planned_due": planned,
        "runner_exit_code": code,
    }
    return metrics, details
