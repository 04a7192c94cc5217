"""A private, throw-away `redis-server` on a free 127.0.0.1 port, without persistence."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

HOST = "127.0.0.1"  # the benchmark never talks to anything else
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, folder: Path, binary: str = "redis-server") -> None:
        self.folder = folder
        self.binary = binary
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self) -> Any:
        """A plain redis-py client (typed Any: redis-py's reply unions add nothing here)."""
        return redis.Redis(host=HOST, port=self.port, db=0)

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the free port can be taken between probe and bind: retry a few times
            self.port = free_port()
            argv = [self.binary, "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly", "no"]
            argv += ["--dir", str(self.folder), "--logfile", str(self.folder / "redis.log"), "--daemonize", "no"]
            self.process = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start (see {self.folder / 'redis.log'})")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client()
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return True
                time.sleep(0.02)
            return False
        finally:
            client.close()

    def version(self) -> str:
        found = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False, timeout=10)
        return found.stdout.strip()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # no persistence configured: nothing is written
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
