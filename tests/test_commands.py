"""The text output of `dead list`: each record's line, then the end of its traceback, indented."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis as redis_lib

from taskqueue import config as config_mod
from taskqueue.ops import cli, commands
from taskqueue.store import redisboot
from taskqueue.store.broker import Broker
from taskqueue.store.connection import async_client
from tests.test_web import bury

TRACE = """Traceback (most recent call last):
  File "/srv/app/taskqueue/worker/execute.py", line 193, in _call
    value = await task.call(env.args, env.kwargs)
  File "/srv/app/jobs/email.py", line 12, in send_email
    raise ValueError(f"no such mailbox {to}")
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
ValueError: no such mailbox a@example.com
"""


def _record(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {"id": "t1", "task": "send_email", "queue": "default", "attempts": 4}
    record.update(failed_at=0.0, error="ValueError: no such mailbox a@example.com", traceback=TRACE)
    return {**record, **changes}


def test_dead_list_shows_the_last_lines_of_each_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    commands._print_dead([_record(), _record(id="t2", traceback=None, error="rejected: spam")], as_json=False)
    assert capsys.readouterr().out.splitlines() == [
        "t1  send_email  queue=default  attempts=4  1970-01-01T00:00:00+00:00  "
        "ValueError: no such mailbox a@example.com",
        "    Traceback (most recent call last):",
        '      File "/srv/app/taskqueue/worker/execute.py", line 193, in _call',
        "        value = await task.call(env.args, env.kwargs)",
        '      File "/srv/app/jobs/email.py", line 12, in send_email',
        '        raise ValueError(f"no such mailbox {to}")',
        "    ValueError: no such mailbox a@example.com",
        "t2  send_email  queue=default  attempts=4  1970-01-01T00:00:00+00:00  rejected: spam",
        "2 dead task(s)",
    ]


def test_a_long_traceback_is_cut_to_its_end_and_says_so() -> None:
    trace = (
        "Traceback (most recent call last):\n"
        + '  File "x.py", line 1, in f\n    f()\n' * 50
        + "RecursionError: deep\n"
    )
    tail = commands.traceback_tail(trace)
    assert tail[0] == "… 96 line(s) above: `dead list --json` shows the whole traceback"
    frame = ['  File "x.py", line 1, in f', "    f()"]
    assert tail[1:] == [*frame[1:], *frame, *frame, "RecursionError: deep"]


def test_control_characters_of_an_error_are_printed_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    commands._print_dead([_record(error="ValueError: \x1b[2Jgone\nsecond line", traceback="")], as_json=False)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("ValueError: \\x1b[2Jgone\\nsecond line")


def test_dead_purge_deletes_only_what_it_is_told_to(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dead purge` with no id used to delete every dead letter without asking: it needs ids or --all."""
    path = tmp_path / "task-queue.yaml"
    path.write_text(f'redis: {{url: "{redis_url}"}}\ntasks:\n  send: {{path: "json:dumps"}}\n')
    config = config_mod.load(path, import_tasks=False)

    async def bury_two() -> None:
        client = async_client(redisboot.options(config))
        try:
            broker = Broker(client, config)
            await bury(broker, "d1")
            await bury(broker, "d2")
        finally:
            await client.aclose()

    asyncio.run(bury_two())
    capsys.readouterr()

    def dead_ids() -> list[str]:
        assert cli.main(["-c", str(path), "dead", "list", "--json"]) == 0
        return sorted(record["id"] for record in json.loads(capsys.readouterr().out))

    assert cli.main(["-c", str(path), "dead", "purge"]) == 2
    assert capsys.readouterr().err == (
        "taskqueue: dead purge deletes for good: give the task ids, or --all for every dead-lettered task\n"
    )
    assert dead_ids() == ["d1", "d2"]
    assert cli.main(["-c", str(path), "dead", "purge", "d1", "--all"]) == 2
    assert dead_ids() == ["d1", "d2"]
    assert cli.main(["-c", str(path), "dead", "purge", "d1"]) == 0
    assert capsys.readouterr().out == "purged 1\n"
    assert dead_ids() == ["d2"]
    assert cli.main(["-c", str(path), "dead", "purge", "--all"]) == 0
    assert capsys.readouterr().out == "purged 1\n"
    assert dead_ids() == []


def test_status_names_a_list_pushed_to_a_queue_nobody_declares(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29 B14: a message LPUSHed to an undeclared queue sat forever, shown nowhere."""
    path = tmp_path / "task-queue.yaml"
    path.write_text(f'redis: {{url: "{redis_url}"}}\ntasks:\n  send: {{path: "json:dumps"}}\n')
    redis_client = redis_lib.Redis.from_url(redis_url)
    redis_client.lpush("tq:queue:defualt", b"a", b"b")
    redis_client.lpush("tq:queue:default", b"c")
    redis_client.close()
    assert cli.main(["-c", str(path), "status"]) == 0
    out = capsys.readouterr().out
    assert "warning: 2 message(s) in queue 'defualt', which no queue of this configuration declares" in out
    assert "'default'" not in out
    assert cli.main(["-c", str(path), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["undeclared_queues"] == {"defualt": 2}


def test_admin_commands_need_only_the_variables_they_use(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29 B8: an unset webhook secret blocked `status`, `dead list`, `events tail`. An admin command needs
    Redis only; `validate`, `run` and `webhooks retry` (which signs) still refuse it, at its line."""
    monkeypatch.delenv("TQ_UNSET_SECRET", raising=False)
    path = tmp_path / "task-queue.yaml"
    path.write_text(
        f'redis: {{url: "{redis_url}"}}\ntasks:\n  send: {{path: "json:dumps"}}\nevents: {{enabled: true}}\n'
        'webhooks:\n  ops: {url: "http://127.0.0.1:9/hook", secret: "${TQ_UNSET_SECRET}"}\n'
    )
    for command in (["status"], ["dead", "list"], ["events", "tail"], ["webhooks", "list"]):
        assert cli.main(["-c", str(path), *command]) == 0, capsys.readouterr().err
    capsys.readouterr()
    for command in (["validate"], ["webhooks", "retry"]):
        assert cli.main(["-c", str(path), *command]) == 2
        assert "webhooks.ops.secret: environment variable TQ_UNSET_SECRET is not set" in capsys.readouterr().err
