"""Shared fixtures: a private redis-server per test session (or TASKQUEUE_TEST_REDIS_URL), the built PEX."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

# Cluster, Sentinel, TLS and AUTH fixtures; taskqueue_test (taskqueue.testing), whose pytest11 entry point is
# active only where taskqueue is installed (.venv does not install it: the tests import the checkout).
pytest_plugins = ["tests.topologies", "taskqueue.testing.pytest_plugin"]

REPO = Path(__file__).resolve().parent.parent
PEX = REPO / "taskqueue.pex"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> None:
    """Poll `predicate()` until truthy; fail the test with `what` after `timeout` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class RedisServer:
    """A redis-server this test session started itself: it may be flushed, killed and restarted."""

    port: int
    dir: Path
    appendonly: bool = False
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.appendonly:
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        self.process = subprocess.Popen([*cmd, *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, timeout=10, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


def _start_server(tmp: Path, appendonly: bool = False) -> RedisServer:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(port=free_port(), dir=tmp, appendonly=appendonly)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private server for the session; tests get a flushed database via `redis_url`."""
    server = _start_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of a flushed private Redis; TASKQUEUE_TEST_REDIS_URL points tests at another server instead."""
    external = os.environ.get("TASKQUEUE_TEST_REDIS_URL")
    if external:
        return external  # never flushed: not ours
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, with AOF (appendfsync always), for tests that kill or restart Redis."""
    server = _start_server(tmp_path, appendonly=True)
    yield server
    server.stop(kill=True)


@pytest.fixture(scope="session")
def pex() -> Path:
    """The built ./taskqueue.pex (test.sh builds it; built here if missing)."""
    if not PEX.exists():
        subprocess.run([str(REPO / "build.sh")], cwd=REPO, check=True)
    return PEX
