"""Web servers for the mount tests, each in a thread with its own event loop, on a socket bound and listening
before the server starts: a client may connect at once (the kernel queues it), nothing is waited for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import uvicorn
from aiohttp import web

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def _listening() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """`app` served by uvicorn (with its lifespan); yields the base URL."""
    sock, url = _listening()
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def serve_aiohttp(make_app: Callable[[], web.Application]) -> Iterator[str]:
    """The app `make_app()` builds (called on the server's loop) served by aiohttp; yields the base URL."""
    sock, url = _listening()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failed: list[BaseException] = []

    async def main() -> None:
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported by the test, not lost in the thread
            failed.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="aiohttp", daemon=True)
    thread.start()
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the aiohttp server did not stop"
        assert not failed, failed


def call(
    url: str,
    method: str = "GET",
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    raw: bytes | Iterable[bytes] | None = None,
) -> tuple[int, Mapping[str, str], bytes]:
    """One HTTP request: (status, headers with lower-case names, body). `body` is sent as JSON, `raw` as it is
    (chunks of a chunked body when it is not bytes)."""
    if raw is not None and not isinstance(raw, bytes):
        return _chunked(url, method, raw, headers or {})
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(request, timeout=10) as response:
            return int(response.status), _lower(response.headers.items()), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read()


def _chunked(url: str, method: str, chunks: Iterable[bytes], headers: Mapping[str, str]) -> tuple[int, Any, bytes]:
    """A chunked request written in one piece, then read to the end. A server that refuses the body half way
    answers and closes: urllib, which writes chunk by chunk, may then fail to write the rest (EPIPE) and never
    read the answer; written at once, the server has it all before it answers."""
    parsed = urllib.parse.urlsplit(url)
    head = [f"{method} {parsed.path or '/'} HTTP/1.1", f"Host: {parsed.netloc}", "Transfer-Encoding: chunked"]
    head += ["Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    data = "\r\n".join(head).encode() + b"\r\n\r\n"
    data += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    with socket.create_connection((parsed.hostname, parsed.port or 80), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    top, _, found = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    return int(status_line.split()[1]), _lower(line.split(": ", 1) for line in lines), found


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def call_json(
    url: str, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """One request whose answer is JSON: (status, the decoded body, or None when empty)."""
    status, _, found = call(url, method, body, headers)
    return status, json.loads(found) if found else None
