"""The runner: starts and replaces worker processes, recovers lost work, promotes due delayed tasks,
and shuts everything down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from taskqueue._loop import outage, raise_if_cancelled, ride_out
from taskqueue.config import Config
from taskqueue.config.registry import Registry
from taskqueue.runner import autoscaler, banner, presence, recovery, reload, timer
from taskqueue.runner.children import worker_env, worker_flags
from taskqueue.runner.schedules import Schedules
from taskqueue.store.broker import HOST, Broker
from taskqueue.worker.execute import EXIT_REPLACE
from taskqueue.worker.worker import EXIT_RECYCLED, lease_s

log = logging.getLogger("taskqueue.runner")

STOP_MARGIN_S = 5.0  # beyond the grace period, before a worker that does not exit is killed
ORPHAN_SCAN_S = 30.0  # how often the reaper looks for in-flight hashes of unregistered workers


@dataclass
class WorkerProcess:
    id: str
    process: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)
    retiring: bool = False


@dataclass(frozen=True)
class RunOptions:
    config_path: Path
    config_raw: bytes
    config_checked: bytes | None = None  # config.load_checked's compact form: what workers read, when there is one
    log_level: str = "info"
    log_format: str = "text"
    serve: bool = True  # `run`: also the delayed-task timer, schedules and HTTP; `worker`: worker processes only


class Runner:
    def __init__(self, config: Config, options: RunOptions, broker: Broker, registry: Registry | None = None) -> None:
        self.config = config
        self.registry = registry  # the tasks as imported here: HTTP checks an enqueue's arguments against them
        self.options = options
        self.broker = broker
        self.workers: dict[str, WorkerProcess] = {}
        self.stopping = False
        self.interrupted = False  # stopped by SIGINT (Ctrl-C): exit code 130
        self.stopped = asyncio.Event()
        self.redis_ok_since: float | None = time.monotonic()
        self._crashes: list[float] = []
        self.last_tick: float | None = None  # when the delayed-task timer last ran (for /health)
        self.last_decision: autoscaler.Decision | None = None
        self.runner_id = f"{HOST}-{os.getpid()}"
        self.reloading = asyncio.Lock()
        self._services: list[asyncio.Task[None]] = []
        self._stop_http: Callable[[], Awaitable[None]] = _nothing
        self.http_urls: list[str] = []  # where the HTTP server listens (for the start banner)
        self.started_at = time.time()
        self._background: set[asyncio.Task[Any]] = set()

    # ---- worker processes ----------------------------------------------------------------------
    async def spawn(self) -> WorkerProcess:
        worker_id = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        checked = self.options.config_checked  # the YAML as this runner checked it: the worker skips YAML and schema
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *worker_flags(),
            "-m",
            "taskqueue.worker",
            "--config",
            str(self.options.config_path),
            "--worker-id",
            worker_id,
            "--runner-pid",
            str(os.getpid()),
            "--log-level",
            self.options.log_level,
            "--log-format",
            self.options.log_format,
            *(["--checked"] if checked is not None else []),
            stdin=asyncio.subprocess.PIPE,
            env=worker_env(),
            start_new_session=True,
        )
        assert process.stdin is not None
        process.stdin.write(self.options.config_raw if checked is None else checked)
        await process.stdin.drain()
        process.stdin.close()
        handle = WorkerProcess(worker_id, process)
        self.workers[worker_id] = handle
        self._spawn_background(self._watch_child(handle))
        log.info("started worker process %s (pid %d)", worker_id, process.pid)
        return handle

    async def _watch_child(self, handle: WorkerProcess) -> None:
        code = await handle.process.wait()
        self.workers.pop(handle.id, None)
        if code != 0 or not (self.stopping or handle.retiring):
            await self._recover(handle.id)
        if self.stopping or handle.retiring:
            return
        if code == EXIT_REPLACE:
            log.warning("worker %s is replaced: a sync task overran its timeout", handle.id)
        elif code == EXIT_RECYCLED:  # it logged why (max_tasks_per_child, max_memory_per_child)
            log.debug("worker %s retired by itself: replacing it", handle.id)
        else:
            log.error(
                "worker process %s exited unexpectedly (code %s): its tasks were re-queued; starting a replacement",
                handle.id,
                code,
            )
            await self._crash_backoff()
        if not self.stopping:
            await self.spawn()

    async def _crash_backoff(self) -> None:
        """A worker that dies at once, again and again, is restarted with growing pauses, not in a hot loop."""
        now = time.monotonic()
        self._crashes = [t for t in self._crashes if now - t < 60] + [now]
        if len(self._crashes) > 3:
            await asyncio.sleep(min(30.0, 0.5 * 2 ** (len(self._crashes) - 3)))

    async def _recover(self, worker_id: str) -> None:
        try:
            requeued, buried = await ride_out(
                lambda: recovery.recover_worker(self.broker, worker_id),
                f"recovering worker {worker_id}",
                attempts=100,
                longest_s=5.0,
            )
        except (RedisError, OSError) as exc:  # its lease still stands: a later pass (or runner) recovers it
            log.error("gave up recovering worker %s for now (%s)", worker_id, exc)
            return
        if requeued or buried:
            log.warning("recovered worker %s: %d task(s) re-queued, %d dead-lettered", worker_id, requeued, buried)

    async def reload(self) -> reload.Verdict:
        """Apply the YAML on disk if it is valid (`reload.read_new`), rolling the worker processes
        gracefully; the verdict says whether the new configuration runs, and why not."""
        async with self.reloading:
            path = self.options.config_path
            try:
                new, raw, checked, self.registry = await reload.read_new(path, self.config)
            except reload.Rejected as exc:
                return exc.verdict
            old, retiring = self.config, self.active_workers()
            await self.stop_services()
            self.config = new
            self.options = dataclasses.replace(self.options, config_raw=raw, config_checked=checked)
            self.broker = Broker(self.broker.redis, new)
            await self.broker.publish_tables()
            for _ in range(reload.worker_count(new, len(retiring))):
                await self.spawn()  # new processes import the new code and config
            for handle in retiring:
                handle.retiring = True  # finishes what it runs, takes nothing new, exits
                handle.process.send_signal(signal.SIGTERM)
            await self.start_services()
            done = f"reloaded {path}: {reload.summary(old, new)}"
            log.info("%s", done)
            return reload.Verdict(True, done)

    # ---- background loops ----------------------------------------------------------------------
    def _spawn_background(self, coro: Any) -> None:
        job = asyncio.create_task(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def _reaper(self) -> None:
        """Recover workers of any runner whose lease ran out (a runner killed with SIGKILL, a lost host)."""
        interval = self.config.workers.heartbeat_interval_s
        orphans = recovery.OrphanWatch()
        next_orphan_scan = time.monotonic() + min(ORPHAN_SCAN_S, lease_s(self.config) * 2)
        while not self.stopping:
            raise_if_cancelled()
            await asyncio.sleep(interval)
            if time.monotonic() >= next_orphan_scan:
                next_orphan_scan = time.monotonic() + ORPHAN_SCAN_S
                with contextlib.suppress(RedisError):
                    await orphans.check(self.broker)
            try:
                expired = await self.broker.expired_workers()
                if self.redis_ok_since is None:
                    self.redis_ok_since = time.monotonic()
                outage.answered()
            except RedisError as exc:
                self.redis_ok_since = None
                outage.failed("looking for expired worker leases", exc)
                continue
            # After an outage every lease looks expired: give live workers a lease to heartbeat first.
            if time.monotonic() - self.redis_ok_since < lease_s(self.config):
                continue
            for worker_id in expired:
                local = self.workers.get(worker_id)
                if local is not None:
                    log.error("worker %s stopped heartbeating: replacing it", worker_id)
                    local.process.kill()
                    continue
                await self._recover(worker_id)

    def active_workers(self) -> list[WorkerProcess]:
        """Local worker processes that are not on their way out."""
        return [w for w in self.workers.values() if not w.retiring]

    async def _autoscale(self) -> None:
        """Every `autoscaler.interval`: compare the shared load with the thresholds; spawn or retire."""
        cfg = self.config.autoscaler
        last_change = float("-inf")
        while not self.stopping:
            raise_if_cancelled()
            await asyncio.sleep(cfg.interval_s)
            try:
                pending, live, oldest = await self.broker.load()
            except RedisError as exc:
                outage.failed("reading the load for the autoscaler (holding)", exc)
                continue
            outage.answered()
            current = len(self.active_workers())
            decision = autoscaler.decide(
                cfg, autoscaler.Load(pending, live, oldest), current, time.monotonic() - last_change
            )
            self.last_decision = decision
            if decision.direction == "hold" or self.stopping:
                log.debug("autoscaler: hold at %d worker process(es): %s", current, decision.reason)
                continue
            last_change = time.monotonic()
            log.info("scale %s %d→%d: %s", decision.direction, current, decision.target, decision.reason)
            note = {
                "at": time.time(),
                "direction": decision.direction,
                "from": current,
                "to": decision.target,
                "reason": decision.reason,
            }
            with contextlib.suppress(RedisError):
                await self.broker.note_decision(self.runner_id, note)
            for _ in range(decision.target - current):
                await self.spawn()
            for handle in self.active_workers()[decision.target :]:
                handle.retiring = True  # finishes its running tasks, takes no new ones, exits
                handle.process.send_signal(signal.SIGTERM)

    # ---- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        await self.broker.publish_tables()
        registration = {"config": str(self.options.config_path), "started": self.started_at}
        await presence.register(self, registration, self._spawn_background)
        for _ in range(self.config.workers.initial_count):
            await self.spawn()
        await self.start_services()
        config_path, serve = str(self.options.config_path), self.options.serve
        await banner.log_banner(self.broker.redis, self.config, config_path, serve, self.http_urls)
        await self.stopped.wait()
        # HTTP stays up while the workers drain: /health/ready answers 503 (draining) until the very end.
        await self._stop_loops()
        await self._stop_workers()
        await self._stop_http()
        with contextlib.suppress(RedisError):
            await self.broker.unregister_runner(self.runner_id)
        for job in list(self._background):
            job.cancel()
        await _settle(list(self._background))
        log.info("runner stopped")
        return 130 if self.interrupted else 0  # Ctrl-C: the shell's convention (128 + SIGINT)

    async def start_services(self) -> None:
        """The loops that follow the configuration (restarted as a whole by a reload)."""
        loops = [self._reaper()]
        if self.config.autoscaler.enabled:
            loops.append(self._autoscale())
        if self.options.serve and self.config.scheduler.enabled:
            loops += [timer.run(self), Schedules(self.broker, self.config).run()]
        if self.options.serve and self.config.webhooks:
            from taskqueue.runner.webhooks import Deliveries  # aiohttp's client: only with webhooks configured

            loops.append(Deliveries(self.broker, self.config, self.runner_id).run())
        self._services = [asyncio.create_task(loop) for loop in loops]
        self._stop_http = await self._start_http()

    async def stop_services(self) -> None:
        await self._stop_http()
        self._stop_http = _nothing
        await self._stop_loops()

    async def _stop_loops(self) -> None:
        for job in self._services:
            job.cancel()
        await _settle(self._services)
        self._services = []

    def _on_hup(self) -> None:
        if not self.stopping:
            self._spawn_background(self.reload())

    async def _start_http(self) -> Callable[[], Awaitable[None]]:
        """The aiohttp server of `run` (not of `worker`, which serves nothing unless asked)."""
        if not (self.options.serve and self.config.http.enabled):
            return _nothing
        from taskqueue.ops import web  # aiohttp is imported only by runners that serve HTTP

        self.http_urls = []
        return await web.start(self, self.http_urls)

    def _on_signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.interrupted = self.interrupted or (sig == signal.SIGINT and not self.stopping)
        if self.stopping:
            log.warning("second signal: handing back running tasks now")
            for handle in self.workers.values():
                handle.process.send_signal(signal.SIGTERM)
            return
        log.info("shutting down: no new tasks; running ones get %.1fs", self.config.workers.shutdown_grace_period_s)
        self.stopping = True
        for handle in self.workers.values():
            handle.process.send_signal(signal.SIGTERM)
        self.stopped.set()

    async def _stop_workers(self) -> None:
        deadline = self.config.workers.shutdown_grace_period_s + STOP_MARGIN_S
        pending = list(self.workers.values())
        waits = [asyncio.create_task(h.process.wait()) for h in pending]
        if waits:
            await asyncio.wait(waits, timeout=deadline)
        for handle in pending:
            if handle.process.returncode is None:
                log.error("worker %s did not stop in time: killing it and re-queueing its tasks", handle.id)
                handle.process.kill()
                await handle.process.wait()
                await self._recover(handle.id)
        await asyncio.sleep(0)  # let the child watchers finish their bookkeeping


async def _nothing() -> None:
    return None


async def _settle(jobs: list[asyncio.Task[Any]], timeout_s: float = 5.0) -> None:
    """Wait for cancelled jobs, but not forever: redis-py may swallow a cancellation (see loop.py)."""
    if jobs:
        await asyncio.wait(jobs, timeout=timeout_s)
