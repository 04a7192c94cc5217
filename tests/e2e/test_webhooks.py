"""Webhooks through the built PEX (SPEC §13): a real local aiohttp receiver that answers 500 to its first
requests gets every matching event at least once, each signature verifies; an endpoint that is down leaves
undeliverable events that `webhooks list` shows and `webhooks retry` delivers once it is up; a runner
SIGKILLed while delivering 300 tasks' events loses none once a new runner runs; the receiver checks each
signature over `<timestamp>.<body>` and the timestamp's age, so a captured request replayed later is refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from taskqueue.client import Client
from taskqueue.store import eventlog
from tests.conftest import free_port, wait_for
from tests.e2e.harness import RunnerFactory, pex_cmd, runs, store

SECRET = "s3cret-for-tests"


class Receiver:
    """An aiohttp server on its own thread and loop that verifies each request as the README's receiver does:
    the HMAC-SHA256 of `<X-Taskqueue-Timestamp>.<raw body>` must match X-Taskqueue-Signature and the timestamp
    be within `tolerance_s` of its clock (`clock_offset_s` moves that clock), else 401 (kept in `refused`).
    It answers the first `fail_first` verified requests with 500, then 200; keeps every verified request."""

    def __init__(self, port: int, fail_first: int = 0, tolerance_s: float = 300.0, held: bool = False) -> None:
        self.port, self.fail_first, self.tolerance_s = port, fail_first, tolerance_s
        self.held = held  # answer nothing until release(): an endpoint that hangs
        self.released: asyncio.Event | None = None
        self.clock_offset_s = 0.0
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def why_refused(self, headers: Mapping[str, str], body: bytes) -> str | None:
        stamp = headers.get("X-Taskqueue-Timestamp", "")
        if not stamp.isdigit():
            return "no timestamp"
        signed = stamp.encode() + b"." + body
        expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("X-Taskqueue-Signature", ""), expected):
            return "bad signature"
        if abs(time.time() + self.clock_offset_s - int(stamp)) > self.tolerance_s:
            return "too old"
        return None

    async def _handle(self, request: web.Request) -> web.Response:
        if self.held and self.released is not None:
            await self.released.wait()
        body = await request.read()
        refused = self.why_refused(request.headers, body)
        with self.lock:
            if refused is not None:
                self.refused.append(refused)
                return web.Response(status=401, text=refused)
            self.requests.append((dict(request.headers), body))
            count = len(self.requests)
        return web.Response(status=500 if count <= self.fail_first else 200, text="ok")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.released = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> Receiver:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def release(self) -> None:
        assert self.released is not None
        self.loop.call_soon_threadsafe(self.released.set)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def bodies(self) -> list[dict[str, Any]]:
        """The events received (each verified; a refused one fails the test)."""
        with self.lock:
            found, refused = list(self.requests), list(self.refused)
        assert not refused, f"requests refused: {refused}"
        return [json.loads(body) for _, body in found]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(free_port(), fail_first=3).start()
    yield server
    server.stop()


def _hooks(entries: dict[str, str]) -> str:
    return "webhooks:\n" + "".join(f"  {name}: {body}\n" for name, body in entries.items())


def _groups(redis_url: str) -> set[str]:
    db = store(redis_url)
    if not db.exists("tq:events"):
        return set()
    return {g["name"].decode() for g in db.xinfo_groups("tq:events")}


def _stream(redis_url: str) -> list[dict[str, Any]]:
    return [e for i, f in store(redis_url).xrange("tq:events") if (e := eventlog.entry(i, f)) is not None]


def test_every_matching_event_is_delivered_signed_despite_500s(
    make_runner: RunnerFactory, redis_url: str, receiver: Receiver, pex: Path
) -> None:
    backoff = "retry_backoff: {base: 50ms, max: 200ms}"
    extra = "events: {enabled: true}\n" + _hooks(
        {
            "all": f'{{url: "{receiver.url}", secret: "{SECRET}", timeout: 2s, {backoff}}}',
            "finals": f'{{url: "{receiver.url}", secret: "{SECRET}", events: [succeeded, failed], tasks: [record], '
            f"{backoff}}}",
        }
    )
    runner = make_runner(redis_url, workers=1, slots=10, extra=extra).start(expect_workers=1)
    wait_for(lambda: _groups(redis_url) >= {"webhook:all", "webhook:finals"}, timeout=20, what="webhook groups")
    client = Client(redis_url)
    ids = client.enqueue_many([("record", (n,), {}) for n in range(20)])
    failing = [client.enqueue("always_fails", f"wh-{n}") for n in range(3)]

    def delivered() -> bool:
        stream = _stream(redis_url)
        finals = [e for e in stream if e["id"] in failing and e["event"] == "failed"]
        got = {(b["webhook"], b["stream_id"]) for b in receiver.bodies()}
        return len(finals) == 3 and all(("all", e["stream_id"]) in got for e in stream)

    wait_for(delivered, timeout=60, what="every event delivered to 'all'")
    stream = _stream(redis_url)
    want_finals = {e["stream_id"] for e in stream if e["task"] == "record" and e["event"] in ("succeeded", "failed")}
    wait_for(
        lambda: {b["stream_id"] for b in receiver.bodies() if b["webhook"] == "finals"} >= want_finals,
        timeout=30,
        what="every succeeded record delivered to 'finals'",
    )
    bodies = receiver.bodies()  # every signature verified
    assert len(runs(redis_url)) == 20 and len(ids) == 20
    finals = [b for b in bodies if b["webhook"] == "finals"]
    assert {b["stream_id"] for b in finals} == want_finals  # only what it asked for
    assert {(b["event"], b["task"]) for b in finals} == {("succeeded", "record")}
    by_stream = {e["stream_id"]: e for e in stream}
    for body in bodies:
        assert {k: v for k, v in body.items() if k != "webhook"} == by_stream[body["stream_id"]]
    with receiver.lock:
        statuses = len(receiver.requests)
    assert statuses >= len(stream) + len(want_finals) + 3  # the first three got a 500 and came again

    shown = pex_cmd(pex, runner.config, "status", "--json", redis_url=redis_url)
    hooks = {h["name"]: h for h in json.loads(shown.stdout)["webhooks"]}
    assert hooks["all"]["delivered"] >= len(stream) and hooks["all"]["undeliverable"] == 0
    assert hooks["all"]["failed"] + hooks["finals"]["failed"] == 3


def test_an_endpoint_that_is_down_keeps_its_events_until_webhooks_retry(
    make_runner: RunnerFactory, redis_url: str, pex: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    hook = f'{{url: "{url}", secret: "{SECRET}", events: [succeeded], max_attempts: 2, retry_backoff: {{base: 50ms}}}}'
    runner = make_runner(redis_url, workers=1, extra="events: {enabled: true}\n" + _hooks({"down": hook}))
    runner.start(expect_workers=1)
    wait_for(lambda: "webhook:down" in _groups(redis_url), timeout=20, what="the webhook's group")
    ids = Client(redis_url).enqueue_many([("record", (n,), {}) for n in range(2)])

    def kept() -> list[dict[str, Any]]:
        shown = pex_cmd(pex, runner.config, "webhooks", "list", "--json", redis_url=redis_url)
        assert shown.returncode == 0, shown.stderr
        return list(json.loads(shown.stdout))

    wait_for(lambda: len(kept()) == 2, timeout=30, what="two undeliverable events")
    records = kept()
    assert {r["event"]["id"] for r in records} == set(ids)
    assert all(r["attempts"] == 2 and "Connect" in r["error"] for r in records)
    failed = pex_cmd(pex, runner.config, "webhooks", "retry", redis_url=redis_url)
    assert failed.returncode == 1 and "2 still undeliverable" in failed.stdout

    receiver = Receiver(port).start()
    try:
        done = pex_cmd(pex, runner.config, "webhooks", "retry", redis_url=redis_url)
        assert done.returncode == 0, done.stderr
        assert "2 delivered, 0 still undeliverable" in done.stdout
        assert kept() == []
        assert {b["id"] for b in receiver.bodies()} == set(ids)  # signatures verified
    finally:
        receiver.stop()
    metrics = store(redis_url).hgetall("tq:stats")
    assert int(metrics[b"webhook_undeliverable:down"]) == 2 and int(metrics[b"webhook_delivered:down"]) == 2
    assert int(metrics[b"webhook_failed:down"]) == 4


def test_a_runner_killed_mid_delivery_loses_no_event_once_a_new_runner_runs(
    make_runner: RunnerFactory, redis_url: str, receiver: Receiver
) -> None:
    backoff = "retry_backoff: {base: 50ms}"
    hook = f'{{url: "{receiver.url}", secret: "{SECRET}", events: [succeeded], timeout: 1s, {backoff}}}'
    extra = "events: {enabled: true}\n" + _hooks({"ops": hook})
    first = make_runner(redis_url, workers=2, slots=10, extra=extra).start(expect_workers=2)
    wait_for(lambda: "webhook:ops" in _groups(redis_url), timeout=20, what="the webhook's group")
    ids = Client(redis_url).enqueue_many([("record", (n, 0.01), {}) for n in range(300)])

    def delivered() -> set[str]:
        return {b["id"] for b in receiver.bodies()}

    wait_for(lambda: len(delivered()) >= 30, timeout=60, what="some deliveries")
    first.kill_all()  # the runner, its workers and its deliveries, at once
    assert len(delivered()) < 300, "the kill came too late to test anything"
    second = make_runner(redis_url, workers=2, slots=10, extra=extra).start(expect_workers=2)
    wait_for(lambda: delivered() >= set(ids), timeout=120, what="every task's succeeded event delivered")
    succeeded = {e["stream_id"] for e in _stream(redis_url) if e["event"] == "succeeded"}
    assert {b["stream_id"] for b in receiver.bodies()} == succeeded  # every event, each signature verified
    assert second.alive()


def test_two_runners_share_the_deliveries_each_event_once(
    make_runner: RunnerFactory, redis_url: str, receiver: Receiver
) -> None:
    backoff = "retry_backoff: {base: 50ms}"
    hook = f'{{url: "{receiver.url}", secret: "{SECRET}", events: [succeeded], {backoff}}}'
    extra = "events: {enabled: true}\n" + _hooks({"ops": hook})
    first = make_runner(redis_url, workers=1, slots=10, extra=extra).start(expect_workers=1)
    second = make_runner(redis_url, workers=1, slots=10, extra=extra).start()
    wait_for(lambda: len(first.worker_pids()) == len(second.worker_pids()) == 1, timeout=30, what="both runners")
    wait_for(lambda: "webhook:ops" in _groups(redis_url), timeout=20, what="the webhook's group")
    ids = Client(redis_url).enqueue_many([("record", (n,), {}) for n in range(200)])
    wait_for(lambda: {b["id"] for b in receiver.bodies()} >= set(ids), timeout=60, what="all 200 delivered")
    succeeded = [e["stream_id"] for e in _stream(redis_url) if e["event"] == "succeeded"]
    delivered = [b["stream_id"] for b in receiver.bodies()[receiver.fail_first :]]  # those answered 200
    assert sorted(delivered) == sorted(succeeded)  # each once between the two runners (no fault, no duplicate)
    readers = store(redis_url).xinfo_consumers("tq:events", "webhook:ops")
    print(f"\nwebhook deliveries shared by {len(readers)} runner(s): {[r['name'].decode() for r in readers]}")


def _post(url: str, headers: Mapping[str, str], body: bytes) -> int:
    wanted = {k: v for k, v in headers.items() if k.startswith("X-Taskqueue-") or k == "Content-Type"}
    request = urllib.request.Request(url, data=body, headers=wanted, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_a_captured_delivery_replayed_later_is_refused(make_runner: RunnerFactory, redis_url: str) -> None:
    receiver = Receiver(free_port()).start()
    try:
        hook = f'{{url: "{receiver.url}", secret: "{SECRET}", events: [succeeded]}}'
        make_runner(redis_url, workers=1, extra="events: {enabled: true}\n" + _hooks({"ops": hook})).start(1)
        wait_for(lambda: "webhook:ops" in _groups(redis_url), timeout=20, what="the webhook's group")
        task_id = Client(redis_url).enqueue("record", 1)
        wait_for(lambda: [b["id"] for b in receiver.bodies()] == [task_id], timeout=30, what="one delivery")
        with receiver.lock:
            headers, body = receiver.requests[0]
        assert _post(receiver.url, headers, body) == 200  # a replay within the tolerance is not told apart
        receiver.clock_offset_s = receiver.tolerance_s + 1  # the same request, replayed later
        assert _post(receiver.url, headers, body) == 401
        stamp = str(int(time.time() + receiver.clock_offset_s))  # a fresh timestamp cannot be signed without the key
        assert _post(receiver.url, {**headers, "X-Taskqueue-Timestamp": stamp}, body) == 401
        assert _post(receiver.url, headers, body.replace(b"record", b"forged")) == 401
        assert receiver.refused == ["too old", "bad signature", "bad signature"]
    finally:
        receiver.stop()


def _written(redis_url: str) -> int:
    """Lifecycle events written so far, all kinds (each script counts its own)."""
    stats = store(redis_url).hgetall("tq:stats")
    return sum(int(v) for k, v in stats.items() if k.startswith(b"events:"))


def test_a_webhook_that_hangs_loses_no_event_to_the_streams_max_len(make_runner: RunnerFactory, redis_url: str) -> None:
    """Issue 28.3: with `events.max_len` far below the backlog of a webhook whose endpoint hangs, every event is
    still delivered once it answers (it was trimmed unread before, silently), and the stream then shrinks back
    to about max_len."""
    receiver = Receiver(free_port(), held=True).start()
    try:
        hook = f'{{url: "{receiver.url}", secret: "{SECRET}", timeout: 120s}}'
        extra = "events: {enabled: true, max_len: 100}\n" + _hooks({"ops": hook})
        runner = make_runner(redis_url, workers=1, slots=10, extra=extra).start(expect_workers=1)
        wait_for(lambda: "webhook:ops" in _groups(redis_url), timeout=20, what="the webhook's group")
        ids = Client(redis_url).enqueue_many([("record", (n,), {}) for n in range(2000)])
        wait_for(lambda: len(runs(redis_url)) == 2000, timeout=120, what="2000 tasks run")
        wait_for(lambda: _written(redis_url) >= 6000, timeout=30, what="their 6000 events written")
        kept = store(redis_url).xlen("tq:events")
        assert kept >= 6000 - 100, f"the stream kept {kept} of 6000 events its webhook has not read"
        shown = pex_cmd(runner.pex, runner.config, "status", "--json", redis_url=redis_url)
        assert json.loads(shown.stdout)["webhooks"][0]["backlog"] == 6000  # pending or unread, all of them
        want = {e["stream_id"] for e in _stream(redis_url)}
        receiver.release()
        wait_for(lambda: {b["stream_id"] for b in receiver.bodies()} >= want, timeout=180, what="all delivered")
        assert {b["id"] for b in receiver.bodies() if b["event"] == "succeeded"} == set(ids)
        wait_for(lambda: store(redis_url).xlen("tq:events") <= 200, timeout=30, what="the stream trimmed back")
        shown = pex_cmd(runner.pex, runner.config, "status", "--json", redis_url=redis_url)
        (status,) = json.loads(shown.stdout)["webhooks"]
        assert status["lost"] == 0 and status["delivered"] >= 6000
        print(f"\nmax_len 100, endpoint hung: the stream kept {kept} of 6000; {len(want)} delivered, 0 lost")
    finally:
        receiver.stop()


def test_past_max_backlog_a_webhook_loses_the_oldest_events_counted_and_logged(
    make_runner: RunnerFactory, redis_url: str
) -> None:
    """The memory bound: an endpoint that hangs while 3000 events are written holds the stream at about
    `max_backlog` (1000); the events trimmed unread are counted exactly (delivered + lost = written), logged,
    and shown by `status`."""
    receiver = Receiver(free_port(), held=True).start()
    try:
        hook = f'{{url: "{receiver.url}", secret: "{SECRET}", timeout: 120s}}'
        extra = "events: {enabled: true, max_len: 100, max_backlog: 1000}\n" + _hooks({"ops": hook})
        runner = make_runner(redis_url, workers=1, slots=10, extra=extra).start(expect_workers=1)
        wait_for(lambda: "webhook:ops" in _groups(redis_url), timeout=20, what="the webhook's group")
        Client(redis_url).enqueue_many([("record", (n,), {}) for n in range(1000)])
        wait_for(lambda: _written(redis_url) >= 3000, timeout=120, what="3000 events written")
        assert store(redis_url).xlen("tq:events") <= 1000 + 200  # MAXLEN ~: whole nodes of 100 entries
        receiver.release()

        def settled() -> bool:
            lost = int(store(redis_url).hget("tq:stats", "webhook_lost:ops") or 0)
            return lost + len({b["stream_id"] for b in receiver.bodies()}) == _written(redis_url)

        wait_for(settled, timeout=120, what="each event delivered or counted lost")
        lost = int(store(redis_url).hget("tq:stats", "webhook_lost:ops"))
        assert 3000 - 1200 <= lost < 3000 - 800, lost
        delivered = len({b["stream_id"] for b in receiver.bodies()})
        print(f"\nmax_backlog 1000, 3000 events written: {delivered} delivered, {lost} lost (counted)")
        shown = pex_cmd(runner.pex, runner.config, "status", "--json", redis_url=redis_url)
        assert json.loads(shown.stdout)["webhooks"][0]["lost"] == lost
        plain = pex_cmd(runner.pex, runner.config, "status", redis_url=redis_url)
        assert f"LOST={lost}" in plain.stdout
        said = [re.search(r"webhook 'ops' lost (\d+) event", str(r.get("msg", ""))) for r in runner.logs()]
        counts = [int(m[1]) for m in said if m]
        assert counts and sum(counts) == lost
    finally:
        receiver.stop()
