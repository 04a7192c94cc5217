"""A private redis-server for one TaskQueueTest: a free loopback port, its files in the test's folder,
nothing persisted; started, waited for and stopped by the test alone."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from taskqueue.testing.errors import TaskQueueTestError

INSTALL_HINT = (
    "install Redis >= 6.2 (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`) "
    "or point the test at a running Redis (TaskQueueTest(redis_url=...), or TASKQUEUE_TEST_REDIS_URL for the "
    "pytest fixture)"
)
_PORT_TRIES = 3  # another process may take the free port between our look and redis-server's bind


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    def __init__(self, folder: Path, binary: str = "redis-server") -> None:
        self.folder = folder
        self.binary = binary
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.folder / "redis.log"

    def start(self, timeout_s: float = 10.0) -> None:
        found = shutil.which(self.binary)
        if found is None:
            raise TaskQueueTestError(f"{self.binary} not found on PATH: {INSTALL_HINT}")
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(_PORT_TRIES):
            self.port = free_port()
            options = {"port": self.port, "bind": "127.0.0.1", "dir": self.folder, "save": "", "appendonly": "no"}
            options |= {"daemonize": "no", "logfile": self.log_path}
            self.process = subprocess.Popen(
                [found, *(arg for name, value in options.items() for arg in (f"--{name}", str(value)))],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._answers(timeout_s):
                return
            self.stop()
            if "in use" not in self._log():
                break
        raise TaskQueueTestError(f"{found} did not start on 127.0.0.1:{self.port}: {self._log()[-500:].strip()}")

    def _answers(self, timeout_s: float) -> bool:
        """Poll until it answers PING (True) or exits / the deadline passes (False)."""
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False
                try:
                    return bool(client.ping())
                except redis.RedisError:
                    time.sleep(0.01)
            return False
        finally:
            client.close()

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # nothing to persist: no need for a graceful shutdown
            self.process.wait(timeout=10)
        self.process = None
