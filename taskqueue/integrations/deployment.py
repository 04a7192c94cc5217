"""What a mounted HTTP API reads of the deployment it serves, in a process that is not its runner."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from taskqueue import config as config_mod
from taskqueue.config import Config
from taskqueue.store import redisboot
from taskqueue.store.broker import Broker
from taskqueue.store.connection import async_client


class Deployment:
    """A health.RunnerView of a deployment seen from outside: its YAML's config and a broker on the event
    loop that serves the requests (made on the first one). It starts no worker process and runs no timer:
    `mounted` makes /health count every runner's live workers and check that due delayed tasks are promoted."""

    mounted = True

    def __init__(self, config: Config) -> None:
        self.config = config
        self._broker: Broker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def load(cls, config_path: str | os.PathLike[str]) -> Deployment:
        """From the deployment's YAML (environment overrides apply, as for the runner; its tasks are not
        imported: an enqueue's arguments are checked by the worker, as for the Python client)."""
        return cls(config_mod.load(config_path, import_tasks=False))

    @property
    def broker(self) -> Broker:
        loop = asyncio.get_running_loop()
        if self._broker is None or self._loop is not loop:  # a client's connections belong to one loop
            self._broker = Broker(async_client(redisboot.options(self.config)), self.config)
            self._loop = loop
        return self._broker

    @property
    def workers(self) -> Mapping[str, object]:
        return {}

    @property
    def last_tick(self) -> float | None:
        return None

    async def aclose(self) -> None:
        """Close the Redis connections (the next request opens new ones)."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.close()
            await broker.redis.aclose()
