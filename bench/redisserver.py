"""A private, throw-away `redis-server` on a free 127.0.0.1 port, without persistence: the one users' tests
get (`taskqueue.testing.redis_server.PrivateRedis`), plus what the benchmark reads of it."""

from __future__ import annotations

import subprocess
from typing import Any

import redis

from taskqueue.testing.redis_server import PrivateRedis

HOST = "127.0.0.1"  # the benchmark never talks to anything else


class RedisServer(PrivateRedis):
    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self) -> Any:
        """A plain redis-py client (typed Any: redis-py's reply unions add nothing here)."""
        return redis.Redis(host=HOST, port=self.port, db=0)

    def start(self, timeout_s: float = 10.0) -> RedisServer:  # type: ignore[override]  # chained
        super().start(timeout_s)
        return self

    def version(self) -> str:
        found = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False, timeout=10)
        return found.stdout.strip()
