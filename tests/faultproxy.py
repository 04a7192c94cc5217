"""A TCP proxy for fault tests, between the processes under test and a Redis server: it can stall (accept and
read, forward nothing, then deliver everything late, also what a client that gave up had sent), cut (reset every
connection at once) and delay (hold each chunk for a while, in order). What it delivers late is what a real
network does after a stall: a request the client already timed out on still reaches Redis, and runs there.

It runs its own event loop on a thread; the methods are called from the test's thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

CHUNK = 65536


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.loop = asyncio.new_event_loop()
        self.flowing = asyncio.Event()
        self.delay_s = 0.0
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port: int = self.sock.getsockname()[1]
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._started = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    # ---- control, from the test's thread -----------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stall(self) -> None:
        """From now on nothing is forwarded either way (connections are still accepted and read)."""
        self._call(self.flowing.clear)

    def resume(self) -> None:
        """Deliver everything held back, in order, then flow again."""
        self._call(self.flowing.set)

    def cut(self) -> None:
        """Reset every open connection, both sides (new ones are accepted as usual)."""
        self._call(self._reset_all)

    def delay(self, seconds: float) -> None:
        """Hold every chunk this long before forwarding it (0: no delay)."""

        def set_delay() -> None:
            self.delay_s = seconds

        self._call(set_delay)

    def close(self) -> None:
        self._call(self._close)
        self._thread.join(timeout=10)
        self.sock.close()

    def _call(self, fn: object) -> None:
        assert callable(fn)
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise RuntimeError("the fault proxy's loop does not answer")

    # ---- the proxy, on its own loop ------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.flowing.set()
        self._server = self.loop.run_until_complete(asyncio.start_server(self._serve, sock=self.sock, limit=CHUNK))
        self._started.set()
        self.loop.run_forever()
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def _close(self) -> None:
        self._reset_all()
        if self._server is not None:
            self._server.close()
        self.loop.call_later(0.05, self.loop.stop)

    def _reset_all(self) -> None:
        for writer in list(self.writers):
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:  # RST, not FIN: the peer sees "connection reset"
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self.writers.clear()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream, limit=CHUNK)
        except OSError:
            client_w.transport.abort()
            return
        self.writers.update((client_w, upstream_w))
        await asyncio.gather(self._pump(client_r, upstream_w), self._pump(upstream_r, client_w))
        self.writers.discard(client_w)
        self.writers.discard(upstream_w)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Forward src to dst chunk by chunk, in order, waiting while stalled and `delay_s` per chunk; at src's
        end (or reset), forward what was read, then close dst."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while chunk := await src.read(CHUNK):
                    pending.put_nowait((loop.time() + self.delay_s, chunk))
            pending.put_nowait((loop.time() + self.delay_s, b""))

        reader = asyncio.create_task(read())
        try:
            while True:
                due, chunk = await pending.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await self.flowing.wait()
                if not chunk:
                    break
                if dst.transport.is_closing():
                    continue  # the other side is gone: what it would have received is lost, as on a network
                dst.write(chunk)
                with contextlib.suppress(OSError, ConnectionError):
                    await dst.drain()
        finally:
            reader.cancel()
            with contextlib.suppress(OSError, ConnectionError, RuntimeError):
                if not dst.transport.is_closing():
                    dst.close()


@contextlib.contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.close()
