"""One clear line for what a new user trips over at the command line (issue 29, B18): a mistyped task name
gets a did-you-mean, arguments come from a file, a refused login is said as such, and a plain redis:// URL
to a TLS port asks whether it is one. The CLI in-process, against real servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from taskqueue.ops import cli
from tests.topologies import AUTH_PASSWORD, AUTH_USER, AuthRedis, TlsRedis, auth_redis, tls_redis

__all__ = ["auth_redis", "tls_redis"]  # fixtures


def project(folder: Path, url: str) -> Path:
    path = folder / "task-queue.yaml"
    path.write_text(f'redis: {{url: "{url}"}}\ntasks:\n  send_email: {{path: "json:dumps"}}\n')
    return path


def test_an_unknown_task_gets_the_close_name(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project(tmp_path, redis_url)
    assert cli.main(["-c", str(config), "enqueue", "send_emial"]) == 2
    assert (
        capsys.readouterr().err
        == "taskqueue: unknown task 'send_emial' (did you mean 'send_email'? declared: send_email)\n"
    )
    assert cli.main(["-c", str(config), "enqueue", "resize_image"]) == 2
    assert capsys.readouterr().err == "taskqueue: unknown task 'resize_image' (declared: send_email)\n"


def test_kwargs_and_args_come_from_a_file(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = project(tmp_path, redis_url)
    (tmp_path / "kwargs.json").write_text('{"obj": {"to": "a@example.com"}}')
    assert cli.main(["-c", str(config), "enqueue", "send_email", "--kwargs", f"@{tmp_path / 'kwargs.json'}"]) == 0
    task_id = capsys.readouterr().out.strip()
    (message,) = redis.Redis.from_url(redis_url).lrange("tq:queue:default", 0, -1)
    assert task_id.encode() in message and b"a@example.com" in message

    assert cli.main(["-c", str(config), "enqueue", "send_email", "--kwargs", "@missing.json"]) == 2
    assert (
        capsys.readouterr().err
        == "taskqueue: --kwargs @missing.json: cannot read missing.json: No such file or directory\n"
    )
    (tmp_path / "broken.json").write_text("{to: a}")
    assert cli.main(["-c", str(config), "enqueue", "send_email", "--args", f"@{tmp_path / 'broken.json'}"]) == 2
    assert capsys.readouterr().err.startswith(f"taskqueue: --args @{tmp_path / 'broken.json'} must be JSON: ")


def test_a_refused_login_is_said_as_such(
    tmp_path: Path, auth_redis: AuthRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    port = auth_redis.server.port
    for url, said in [
        (f"redis://127.0.0.1:{port}/0", "it requires a login and the URL gives none"),
        (f"redis://{AUTH_USER}:wrong-{AUTH_PASSWORD}@127.0.0.1:{port}/0", "invalid username-password pair"),
    ]:
        assert cli.main(["-c", str(project(tmp_path, url)), "status"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(
            f"taskqueue: Redis at {url.replace(f'wrong-{AUTH_PASSWORD}', '***')} refused the login: {said}"
        )
        assert "cannot reach" not in err and AUTH_PASSWORD not in err and err.count("\n") == 1
    assert cli.main(["-c", str(project(tmp_path, auth_redis.url)), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dead"] == 0


def test_a_plain_url_to_a_tls_port_asks_whether_it_is_one(
    tmp_path: Path, tls_redis: TlsRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://127.0.0.1:{tls_redis.server.port}/0"
    assert cli.main(["-c", str(project(tmp_path, url)), "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"taskqueue: cannot reach Redis at {url}: ")
    assert err.endswith("; is this a TLS port? use rediss://\n") and err.count("\n") == 1
