"""The built PEX against real Redis topologies on loopback (fixtures in tests/topologies.py): a Redis Cluster
with a manual failover and a SIGKILLed primary, a Sentinel-managed primary/replica with a forced failover, a
mutual-TLS Redis, and a password-protected one. Tasks record their runs in the session's plain Redis
(`redis_url`), so the count survives whatever happens to the Redis under test; duplicates are reported."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskqueue import envelope
from taskqueue.client import AsyncClient, Call, Client, chain, step
from taskqueue.errors import TaskCancelled
from taskqueue.store.connection import RedisOptions, sync_client
from taskqueue.store.keys import split_member
from tests.conftest import wait_for
from tests.e2e.harness import Runner, pex_cmd, runs, store, write_config
from tests.topologies import (
    AUTH_PASSWORD,
    PREFIX,
    SENTINEL_DATA_PASSWORD,
    SENTINEL_SERVICE,
    AuthRedis,
    Cluster,
    SentinelSet,
    TlsRedis,
)

N = 1500
RunnerFactory = Callable[[str], Runner]


def topology_config(folder: Path, redis_yaml: str, workers: int = 2) -> Path:
    """The harness config with its `redis:` line replaced by `redis_yaml` (a flow mapping). Heartbeats every
    1 s (a 3 s lease): a failover takes 1-2 s, so live workers are not mistaken for lost ones."""
    path = write_config(folder, "redis://unused", workers=workers, slots=10, heartbeat="1s")
    lines = path.read_text().splitlines(keepends=True)
    assert lines[0].startswith("redis:")
    lines[0] = f"redis: {redis_yaml}\n"
    path.write_text("".join(lines))
    return path


@pytest.fixture
def make_runner(pex: Path, tmp_path: Path, redis_url: str) -> Iterator[RunnerFactory]:
    """Runners whose tasks record in the session Redis (`redis_url`), whatever Redis they work against."""
    started: list[Runner] = []

    def make(redis_yaml: str) -> Runner:
        config = topology_config(tmp_path, redis_yaml)
        runner = Runner(pex, config, redis_url, tmp_path / f"runner{len(started)}.log")
        started.append(runner)
        return runner.start()

    yield make
    for runner in started:
        runner.stop()


def wait_workers(options: RedisOptions, prefix: str, count: int, runner: Runner) -> None:
    db = sync_client(options)

    def live() -> bool:
        assert runner.alive(), runner.log.read_text()[-3000:]
        return int(db.zcount(f"{prefix}:workers", int(time.time() * 1000), "+inf")) >= count

    wait_for(live, timeout=30, interval=0.1, what=f"{count} live workers")
    db.close()


class Producer:
    """Enqueues `record` tasks 0, 1, 2, ... in batches from a thread until stopped; a batch that fails (the
    primary is moving) is sent again, so a task may be enqueued twice (a duplicate, never a loss).

    With `confirm`, a batch counts as sent only once a replica has it (`WAIT 1`): replication is asynchronous,
    so a write the primary acknowledged a moment before its replica was promoted is gone. Only a producer
    that waits for a replica can rely on its enqueues surviving a failover (see README, Operations)."""

    def __init__(
        self, client: Client, batch: int = 20, pause_s: float = 0.02, sleep_s: float = 0.01, confirm: bool = False
    ) -> None:
        self.client, self.batch, self.pause_s, self.sleep_s = client, batch, pause_s, sleep_s
        self.confirm = confirm
        self.sent = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            calls: list[Call] = [("record", (n, self.sleep_s), {}) for n in range(self.sent, self.sent + self.batch)]
            try:
                self.client.enqueue_many(calls)
                # the same connection (one thread, a plain pool): WAIT covers the LPUSH just made
                if self.confirm and self.client.redis.execute_command("WAIT", 1, 1000) < 1:
                    raise TimeoutError("no replica acknowledged the batch")
            except Exception as exc:  # any failure: send the batch again
                self.errors.append(type(exc).__name__)
                self._stop.wait(0.05)
                continue
            self.sent += self.batch
            self._stop.wait(self.pause_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.sent


def wait_all(redis_url: str, count: int, options: RedisOptions, prefix: str, timeout: float, what: str) -> None:
    """Wait until tasks 0..count-1 have all run; on a timeout, say which did not and where Redis has them."""
    try:
        wait_for(lambda: len(runs(redis_url)) >= count, timeout=timeout, what=what)
    except AssertionError:
        missing = sorted(set(range(count)) - set(runs(redis_url)))
        db = sync_client(options)
        state = {k.decode(): db.type(k).decode() for k in db.keys(f"{prefix}:*") if b":result:" not in k}
        sizes = {k: db.llen(k) if t == "list" else db.zcard(k) if t == "zset" else db.hlen(k) if t == "hash" else 0
                 for k, t in state.items()}  # fmt: skip
        raise AssertionError(f"{what}: {len(missing)} never ran (first {missing[:10]}); keys {sizes}") from None


def report(name: str, done: dict[int, int]) -> int:
    duplicates = sum(count - 1 for count in done.values())
    print(f"\n{name}: {len(done)} distinct tasks completed, {duplicates} duplicate run(s)")
    return duplicates


def in_flight(options: RedisOptions, prefix: str) -> list[int]:
    """The item numbers of every message still in some worker's in-flight hash."""
    db = sync_client(options)
    found = []
    for worker in db.zrange(f"{prefix}:workers", 0, -1):
        for member in db.hvals(f"{prefix}:inflight:{worker.decode()}"):
            _, message = split_member(member)
            found.append(int(envelope.decode(message, len(message)).args[0]))
    db.close()
    return found


def assert_settled(options: RedisOptions, prefix: str, done: dict[int, int], stale_ok: bool = False) -> int:
    """Nothing dead and, once every task has run, nothing left in flight. With `stale_ok`, entries of tasks
    that did run are tolerated and counted: an ack the old primary took just before a failover is lost with
    it, and a worker whose next round trip succeeds on the new primary never reconciles (see README)."""
    db = sync_client(options)
    assert db.zcard(f"{prefix}:dead:index") == 0
    db.close()
    try:
        wait_for(lambda: not in_flight(options, prefix), timeout=5, what="nothing left in flight")
    except AssertionError:
        left = in_flight(options, prefix)
        if not stale_ok or any(n not in done for n in left):
            raise AssertionError(f"left in flight: {sorted(left)}") from None
        print(f"{len(left)} stale in-flight entries of tasks that ran (they run again when their worker exits)")
        return len(left)
    return 0


# ---- Redis Cluster -------------------------------------------------------------------------------


def cluster_yaml(c: Cluster) -> str:
    return f'{{url: "{c.url}", cluster: true, key_prefix: "{PREFIX}", command_timeout: 2s, connection_timeout: 1s}}'


def test_cluster_runs_delays_retries_and_dead_letters(
    cluster: Cluster, make_runner: RunnerFactory, redis_url: str, pex: Path
) -> None:
    url = cluster.url.replace("redis://", "redis+cluster://")  # the URL form of `cluster: true`
    runner = make_runner(f'{{url: "{url}", key_prefix: "{PREFIX}"}}')
    options = RedisOptions(url=url)
    wait_workers(options, PREFIX, 2, runner)
    client = Client(url, key_prefix=PREFIX)
    client.enqueue_many([("record", (n,), {}) for n in range(50)])
    due = time.time() + 0.5
    client.enqueue("record", 1000, delay=0.5)
    retried = client.enqueue("retry_once", "r1")
    client.enqueue("always_fails", "d1")
    assert client.result(client.enqueue("echo", 1, b=2), timeout=10)["args"] == [1]
    assert client.result(retried, timeout=10) == 2  # second attempt, after a promotion from the delayed set
    wait_for(lambda: len(runs(redis_url)) == 51, timeout=15, what="51 record tasks")
    db = store(redis_url)
    assert float(db.lrange("test:attempts:r1", 1, 1)[0]) >= float(db.lrange("test:attempts:r1", 0, 0)[0]) + 0.2
    wait_for(lambda: db.llen("test:attempts:d1") == 3, timeout=15, what="always_fails: 3 attempts")
    dead = sync_client(options)
    wait_for(lambda: dead.zcard(f"{PREFIX}:dead:index") == 1, timeout=10, what="one dead-lettered task")
    assert runs(redis_url) == {n: 1 for n in [*range(50), 1000]}
    status = pex_cmd(pex, runner.config, "status", "--json", redis_url=redis_url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)
    listed = pex_cmd(pex, runner.config, "dead", "list", "--json", redis_url=redis_url)
    assert [r["task"] for r in json.loads(listed.stdout)] == ["always_fails"]
    reloaded = pex_cmd(pex, runner.config, "reload", redis_url=redis_url)  # asked and answered through the cluster
    assert reloaded.returncode == 0 and "reloaded " in reloaded.stdout, (reloaded.stdout, reloaded.stderr)
    assert time.time() >= due
    client.close()


def test_cluster_status_cancel_and_workflow_lookups(
    cluster: Cluster, make_runner: RunnerFactory, redis_url: str, pex: Path
) -> None:
    """#28.5: every lookup of store/lookup.py on a Cluster, from both clients and the CLI: status, workflow()
    with a running step, cancel of a delayed, a running and a workflow, twice, and of an unknown id. redis-py's
    Cluster pipeline refuses EVALSHA: the cancel scripts were queued on one."""
    runner = make_runner(cluster_yaml(cluster))
    wait_workers(RedisOptions(url=cluster.url, cluster=True), PREFIX, 2, runner)
    client = Client(cluster.url, key_prefix=PREFIX, cluster=True)
    db = store(redis_url)
    gate = "test:gate:cluster"
    running = client.enqueue("agated", 1, gate=gate)
    flow = client.enqueue_workflow(chain(step("gated", 2, gate=gate), step("add", 10)))
    wait_for(lambda: db.llen("test:started") == 2, timeout=20, what="both bodies to start")
    assert client.status(running)["state"] == "running"  # type: ignore[index]
    assert [s["state"] for s in client.workflow(flow)["steps"]] == ["running", "pending"]  # type: ignore[index]
    delayed = [client.enqueue("gated", n, gate=gate, delay=60) for n in (3, 4, 5)]
    assert client.status(delayed[0])["state"] == "delayed"  # type: ignore[index]

    assert client.cancel(delayed[0]) == "cancelled"
    assert client.cancel(delayed[0]) == "already_cancelled"

    async def from_async() -> list[Any]:
        producer = AsyncClient(cluster.url, key_prefix=PREFIX, cluster=True)
        try:
            shown = await producer.workflow(flow) or {}
            state = (await producer.status(delayed[1]) or {}).get("state")
            answers = [await producer.cancel(delayed[1]), await producer.cancel("no-such-task")]
            return [state, [s["state"] for s in shown["steps"]], *answers]
        finally:
            await producer.aclose()

    assert asyncio.run(from_async()) == ["delayed", ["running", "pending"], "cancelled", "not_found"]
    cli = pex_cmd(pex, runner.config, "cancel", delayed[2], redis_url=redis_url)
    assert (cli.returncode, cli.stdout, cli.stderr) == (0, f"{delayed[2]}: cancelled\n", "")
    assert client.cancel(running) == "cancelling"
    assert client.cancel(flow) == "cancelled"
    assert client.cancel("no-such-task") == "not_found"
    for task_id in (running, flow, *delayed):
        with pytest.raises(TaskCancelled):
            client.result(task_id, timeout=10)
    assert client.status("no-such-task") is None
    db.set(gate, 1)
    client.close()


def test_cluster_failover_and_primary_sigkill_lose_nothing(
    cluster: Cluster, make_runner: RunnerFactory, redis_url: str
) -> None:
    """The shard holding `{tq}` is the only one that matters (every key lives in its slot): a manual
    `CLUSTER FAILOVER` of its replica while a producer keeps enqueueing, then a SIGKILL of the new primary
    (the cluster promotes the remaining replica by itself) while tasks run, then the killed node restarts and
    rejoins as a replica. A SIGKILL loses what the primary acknowledged but had not yet replicated, so the
    producer stops first and its last enqueue is checked to be on the replica before the kill."""
    runner = make_runner(cluster_yaml(cluster))
    options = RedisOptions(url=cluster.url, cluster=True)
    wait_workers(options, PREFIX, 2, runner)
    client = Client(cluster.url, cluster=True, key_prefix=PREFIX)
    owner = cluster.owner()
    replica = cluster.replica_of(owner)
    with Producer(client) as producer:
        wait_for(lambda: len(runs(redis_url)) >= 300, timeout=30, what="300 tasks done")
        replica.client().execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: cluster.owner_port() == replica.port, timeout=15, what="the replica to take the {tq} slot")
        at_failover = len(runs(redis_url))
        wait_for(lambda: len(runs(redis_url)) >= at_failover + 300, timeout=30, what="300 tasks after the failover")
    client.enqueue_many([("record", (n, 0.01), {}) for n in range(producer.sent, producer.sent + 1000)])
    sent = producer.sent + 1000
    cluster.wait_healthy()
    acknowledged = replica.info("replication")["master_repl_offset"]
    wait_for(lambda: owner.info("replication")["slave_repl_offset"] >= acknowledged, what="the replica in sync")
    replica.kill()
    wait_for(lambda: cluster.owner_port() == owner.port, timeout=20, what="the cluster to promote the old primary")
    at_kill = len(runs(redis_url))
    assert at_kill < sent, "the SIGKILL came too late to test anything"
    replica.start()
    cluster.wait_healthy()

    wait_all(redis_url, sent, options, PREFIX, timeout=40, what="all tasks after the failover and the SIGKILL")
    done = runs(redis_url)
    report(f"Cluster: {sent} tasks, failover at {at_failover}, SIGKILL at {at_kill}", done)
    assert set(done) == set(range(sent))
    assert runner.alive()
    # The workers keep acknowledging while the primary is killed: an ack it took after the replica's last
    # sync is lost with it (asynchronous replication), leaving an in-flight entry of a task that ran (seen
    # once in 4 runs since acks go inside the exchange script, one round trip instead of two). Tolerated and
    # counted, as for Sentinel; a task that did not run would still fail this.
    assert_settled(options, PREFIX, done, stale_ok=True)
    client.close()


def test_cluster_full_restart_resumes(cluster: Cluster, make_runner: RunnerFactory, redis_url: str) -> None:
    """Every node SIGKILLed at once (AOF, appendfsync always) and restarted: redis-py's Cluster client then
    raises RedisClusterException, which is not a RedisError; the runner must wait it out, not hang."""
    runner = make_runner(cluster_yaml(cluster))
    options = RedisOptions(url=cluster.url, cluster=True)
    wait_workers(options, PREFIX, 2, runner)
    client = Client(cluster.url, cluster=True, key_prefix=PREFIX)
    client.enqueue_many([("record", (n, 0.01), {}) for n in range(N)])
    wait_for(lambda: len(runs(redis_url)) >= 300, timeout=30, what="300 tasks done")
    for node in cluster.nodes:
        node.kill()
    at_kill = len(runs(redis_url))
    outage = re.compile(r"Redis (unreachable|answering with errors) while ")  # one line per process
    wait_for(
        lambda: sum(1 for e in runner.logs() if outage.search(str(e.get("msg", "")))) >= 3,
        timeout=15,
        what="the runner and its workers to notice the outage",
    )
    for node in cluster.nodes:
        node.start(wait=False)
    for node in cluster.nodes:
        node.wait_up()
    cluster.wait_healthy()
    wait_all(redis_url, N, options, PREFIX, timeout=40, what="all tasks after the restart")
    done = runs(redis_url)
    report(f"Cluster: all nodes SIGKILLed at {at_kill} and restarted", done)
    assert runner.alive()
    assert not [e for e in runner.logs() if "Traceback" in str(e.get("msg", ""))]
    assert_settled(options, PREFIX, done)
    client.close()


# ---- Sentinel ------------------------------------------------------------------------------------


def test_sentinel_forced_failover_loses_nothing(
    sentinels: SentinelSet, make_runner: RunnerFactory, redis_url: str
) -> None:
    """`SENTINEL FAILOVER` while a producer enqueues and the runner works; the producer keeps going until the
    clients have had time to follow the new primary."""
    hosts = json.dumps(sentinels.hosts)
    login = f"redis://:{SENTINEL_DATA_PASSWORD}@127.0.0.1/0"  # the data nodes' password; the host is unused
    runner = make_runner(
        f'{{url: "{login}", sentinel: {{service_name: {SENTINEL_SERVICE}, hosts: {hosts}}}, command_timeout: 2s, '
        "connection_timeout: 1s}"
    )
    sentinel = (SENTINEL_SERVICE, tuple(("127.0.0.1", s.port) for s in sentinels.sentinels), None)
    options = RedisOptions(url=login, sentinel=sentinel)
    wait_workers(options, "tq", 2, runner)
    client = Client(login, sentinel=sentinel)
    with Producer(client, confirm=True) as producer:
        wait_for(lambda: len(runs(redis_url)) >= 500, timeout=30, what="500 tasks done")
        assert sentinels.failover() is sentinels.replica
        producer.confirm = False  # the new primary has no replica until the old one rejoins (~10 s)
        at_failover = len(runs(redis_url))
        wait_for(lambda: producer.sent >= at_failover + 1500, timeout=30, what="1500 more enqueues after it")
    sent = producer.sent
    wait_all(redis_url, sent, options, "tq", timeout=45, what="all tasks after the failover")
    done = runs(redis_url)
    report(f"Sentinel: {sent} tasks, forced failover at {at_failover}, {len(producer.errors)} enqueue retries", done)
    assert set(done) == set(range(sent))
    assert runner.alive()
    assert_settled(options, "tq", done, stale_ok=True)
    runner.stop()
    assert SENTINEL_DATA_PASSWORD not in runner.log.read_text()
    client.close()


# ---- TLS and AUTH --------------------------------------------------------------------------------


def _tls_yaml(t: TlsRedis, ca: Path) -> str:
    files = {"ca_file": str(ca), "cert_file": str(t.certs["client"]), "key_file": str(t.certs["client-key"])}
    return f'{{url: "{t.url}", tls: {json.dumps(files)}, connection_timeout: 2s}}'


def test_tls_mutual_runs_a_task(tls_redis: TlsRedis, make_runner: RunnerFactory, pex: Path, redis_url: str) -> None:
    runner = make_runner(_tls_yaml(tls_redis, tls_redis.certs["ca"]))
    tls = {"ca_file": tls_redis.certs["ca"], "cert_file": tls_redis.certs["client"]}
    tls["key_file"] = tls_redis.certs["client-key"]
    wait_workers(RedisOptions(url=tls_redis.url, tls=tls), "tq", 2, runner)
    client = Client(tls_redis.url, tls=tls)
    assert client.result(client.enqueue("echo", "over tls"), timeout=10)["args"] == ["over tls"]
    client.enqueue("record", 7, delay=0.2)
    wait_for(lambda: runs(redis_url) == {7: 1}, timeout=10, what="a delayed task over TLS")
    status = pex_cmd(pex, runner.config, "status", "--json", redis_url=redis_url)
    assert status.returncode == 0, status.stderr
    client.close()


def _one_clear_line(result: Any) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def test_tls_wrong_ca_is_one_clear_error(tls_redis: TlsRedis, tmp_path: Path, pex: Path, redis_url: str) -> None:
    config = topology_config(tmp_path, _tls_yaml(tls_redis, tls_redis.certs["other-ca"]))
    for command in ("run", "status"):
        line = _one_clear_line(pex_cmd(pex, config, command, "--log-format", "text", redis_url=redis_url))
        assert "cannot reach Redis" in line and "certificate verify failed" in line, line
        assert "BEGIN" not in line and ".key" not in line


def test_auth_password_never_shown(
    auth_redis: AuthRedis, make_runner: RunnerFactory, pex: Path, redis_url: str, tmp_path: Path
) -> None:
    runner = make_runner(f'{{url: "{auth_redis.url}"}}')
    wait_workers(RedisOptions(url=auth_redis.url), "tq", 2, runner)
    client = Client(auth_redis.url)
    assert client.result(client.enqueue("echo", "authenticated"), timeout=10)["args"] == ["authenticated"]
    status = pex_cmd(pex, runner.config, "status", redis_url=redis_url)
    assert status.returncode == 0, status.stderr
    (tmp_path / "wrong").mkdir()
    wrong = topology_config(tmp_path / "wrong", f'{{url: "{auth_redis.url.replace("Pa55", "Fa11")}"}}')
    line = _one_clear_line(pex_cmd(pex, wrong, "run", "--log-format", "text", redis_url=redis_url))
    assert re.search(r"Redis at redis://tqrunner:\*\*\*@127\.0\.0\.1:\d+/0 refused the login: ", line), line
    runner.stop()
    shown = runner.log.read_text() + status.stdout + status.stderr + line
    assert AUTH_PASSWORD not in shown and "Fa11" not in shown
    client.close()
