"""The command line as a user meets it: the built ./taskqueue.pex, run as a subprocess from elsewhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import taskqueue
from taskqueue.client import Client
from taskqueue.config import ENV_OVERRIDES
from tests.e2e.harness import RunnerFactory, pex_cmd
from tests.e2e.test_http import http_url
from tests.servers import call_json

REPO = Path(__file__).resolve().parents[2]
INVALID = REPO / "tests" / "configs" / "invalid"
REFERENCE = REPO / "task-queue.yaml"
TIMEOUT_S = 120  # the first run of a --venv pex unpacks itself


def run(
    pex: Path,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the pex with the caller's environment minus anything that would override a config file."""
    clean = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES and not k.startswith("TASKQUEUE_")}
    return subprocess.run(
        [str(pex), *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("validate", "-c", str(REFERENCE)),
        ("-c", str(REFERENCE), "validate"),
        ("--config", str(REFERENCE), "validate", "--log-level", "debug"),
        ("validate", "--log-format", "json", "-c", str(REFERENCE)),
        ("--log-format", "text", "validate", f"--config={REFERENCE}"),
        ("--log-level", "WARNING", "validate", "-c", str(REFERENCE)),
        ("validate", "--log-level", "Error", "-c", str(REFERENCE)),
    ],
    ids=["c-after", "c-before", "long-before-level-after", "json-logs", "text-logs", "level-upper", "level-mixed"],
)
def test_validate_reference_config(pex: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run(pex, *args, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "OK\n"), result.stderr
    assert_no_traceback(result)


def test_validate_defaults_to_task_queue_yaml_in_the_working_directory(pex: Path) -> None:
    result = run(pex, "validate", cwd=REPO)
    assert (result.returncode, result.stdout) == (0, "OK\n"), result.stderr


@pytest.mark.parametrize("path", sorted((REPO / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate(pex: Path, tmp_path: Path, path: Path) -> None:
    result = run(pex, "validate", "-c", str(path), cwd=tmp_path, env={"REDIS_URL": "redis://10.0.0.11:7000/0"})
    assert (result.returncode, result.stdout) == (0, "OK\n"), result.stderr


def test_a_deployment_example_without_redis_url_says_so(pex: Path, tmp_path: Path) -> None:
    result = run(pex, "validate", "-c", str(REPO / "conf" / "production.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert_no_traceback(result)
    assert "production.yaml:16:8: redis.url: environment variable REDIS_URL is not set" in result.stderr


def test_example_configs_exist() -> None:
    assert {p.name for p in (REPO / "conf").glob("*.yaml")} >= {
        "production.yaml",
        "multi-host.yaml",
        "cluster.yaml",
        "sentinel.yaml",
    }


def test_three_mistakes_are_reported_exactly(pex: Path, tmp_path: Path) -> None:
    # Copied next to a jobs/ link and run from there, so the file name in the output is the relative default.
    text = (INVALID / "three-mistakes.yaml").read_text("utf-8")
    text = text.replace('python_path: ["../../.."]', "python_path: [.]")
    (tmp_path / "task-queue.yaml").write_text(text, "utf-8")
    (tmp_path / "jobs").symlink_to(REPO / "jobs")
    result = run(pex, "validate", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_no_traceback(result)
    problems = [line for line in result.stderr.splitlines() if re.match(r"^[^:]+:\d+:\d+: ", line)]
    assert [p.split(": ")[0:2] for p in problems] == [
        ["task-queue.yaml:10:54", "tasks.send_email.queue"],
        ["task-queue.yaml:13:3", "workers.initial_cout"],
        ["task-queue.yaml:16:46", "schedules.nightly_report.cron"],
    ]
    assert "unknown queue 'defualt' (did you mean 'default'?" in problems[0]
    assert "unknown key 'initial_cout' (did you mean 'initial_count'?)" in problems[1]
    assert "invalid cron expression '0 3 * *'" in problems[2]
    assert result.stderr.splitlines()[3:] == ["task-queue.yaml: 3 problem(s); nothing was started"]


def test_invalid_file_given_by_absolute_path(pex: Path, tmp_path: Path) -> None:
    path = INVALID / "unknown-queue.yaml"
    result = run(pex, "-c", str(path), "validate", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}:10:12: tasks.notify.queue: unknown queue 'hihg_priority'")
    assert_no_traceback(result)


def test_schema_prints_the_editor_schema_and_strict_the_package_one(pex: Path, tmp_path: Path) -> None:
    result = run(pex, "schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "schema" / "task-queue.schema.json").read_text("utf-8")  # ${VAR} accepted
    strict = run(pex, "schema", "--strict", cwd=tmp_path)
    package = REPO / "taskqueue" / "config" / "schema" / "task-queue.schema.json"
    assert json.loads(strict.stdout) == json.loads(package.read_text("utf-8"))
    assert strict.stdout == package.read_text("utf-8")


def test_version(pex: Path, tmp_path: Path) -> None:
    source = (REPO / "taskqueue" / "__init__.py").read_text("utf-8")
    declared = re.search(r'^__version__ = "([^"]+)"$', source, re.MULTILINE)
    assert declared is not None and declared.group(1) == taskqueue.__version__
    result = run(pex, "--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"taskqueue {declared.group(1)} ")


def test_missing_config_file_is_one_clear_line(pex: Path, tmp_path: Path) -> None:
    result = run(pex, "validate", cwd=tmp_path)  # no task-queue.yaml here
    assert result.returncode == 2
    assert_no_traceback(result)
    lines = result.stderr.splitlines()
    assert lines[0] == "task-queue.yaml: cannot read config file: No such file or directory"
    assert all(line.startswith("task-queue.yaml: ") for line in lines)


def test_unknown_command_is_a_usage_error(pex: Path, tmp_path: Path) -> None:
    result = run(pex, "frobnicate", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert_no_traceback(result)


def test_unknown_option_value_is_a_usage_error(pex: Path, tmp_path: Path) -> None:
    result = run(pex, "validate", "--log-format", "xml", "-c", str(REFERENCE), cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr


SECRET = "s3cret"


def secret_case(case_id: str, yaml_text: str, env: dict[str, str] | None = None, bug: str = "") -> object:
    marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {bug}")] if bug else []
    return pytest.param(yaml_text, env or {}, marks=marks, id=case_id)


@pytest.mark.parametrize(
    ("yaml_text", "env"),
    [
        secret_case(
            "valid-url-error-elsewhere",
            f"redis:\n  url: redis://user:{SECRET}@127.0.0.1:6379/0\n"
            "tasks:\n  t: {path: 'json:dumps', queue: hihg}\n",
        ),
        secret_case(
            "url-itself-invalid",
            f"redis:\n  url: http://user:{SECRET}@127.0.0.1:6379/0\ntasks:\n  t: {{path: 'json:dumps'}}\n",
        ),
        secret_case(
            "url-from-env-invalid",
            "tasks:\n  t: {path: 'json:dumps'}\n",
            {"REDIS_URL": f"http://user:{SECRET}@cache:6379/0"},
        ),
        secret_case(
            "url-expanded-from-env",
            "redis:\n  url: ${TQ_URL}\ntasks:\n  t: {path: 'json:dumps', queue: hihg}\n",
            {"TQ_URL": f"redis://:{SECRET}@cache:6379/0"},
        ),
        secret_case(
            "error-in-same-section",
            f"redis:\n  url: redis://user:{SECRET}@127.0.0.1:6379/0\n  pool_size: lots\n"
            "tasks:\n  t: {path: 'json:dumps'}\n",
        ),
        secret_case(
            "url-without-scheme",
            f"redis:\n  url: user:{SECRET}@cache.internal:6379/0\ntasks:\n  t: {{path: 'json:dumps'}}\n",
        ),
        secret_case(
            "numeric-auth-token",
            "http:\n  auth_token: 2024061\ntasks:\n  t: {path: 'json:dumps'}\n",
            {"UNUSED": SECRET},
        ),
    ],
)
def test_secrets_never_reach_the_output(
    pex: Path,
    tmp_path: Path,
    yaml_text: str,
    env: dict[str, str],
) -> None:
    (tmp_path / "task-queue.yaml").write_text(yaml_text, "utf-8")
    for args in (("validate",), ("--log-level", "debug", "--log-format", "json", "validate")):
        result = run(pex, *args, cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr
        assert_no_traceback(result)
        output = result.stdout + result.stderr
        assert SECRET not in output and "2024061" not in output
        assert "problem(s)" in output


def test_show_prints_a_succeeded_tasks_result(make_runner: RunnerFactory, redis_url: str) -> None:
    """#29.B10: `show ID` prints what result() returns (as `celery result ID` does), `--json` and HTTP have it
    as "result"; bytes in it are shown as text (undecodable ones as \\xNN escapes)."""
    runner = make_runner(redis_url, workers=1, slots=2, http={"port": 0}).start(expect_workers=1)
    client = Client(redis_url)
    task_id = client.enqueue("echo", 1, b"\xffraw", note="n")
    value = client.result(task_id, timeout=20)
    assert value["args"] == [1, b"\xffraw"]
    shown = {**value, "args": [1, "\\xffraw"]}
    text = pex_cmd(runner.pex, runner.config, "show", task_id, redis_url=redis_url)
    assert (text.returncode, text.stderr) == (0, "")
    assert text.stdout == f"{task_id} echo: succeeded\n  result: {json.dumps(shown)}\n"
    as_json = pex_cmd(runner.pex, runner.config, "show", task_id, "--json", redis_url=redis_url)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["result"] == shown
    assert (json.loads(as_json.stdout)["state"], client.status(task_id)["result"]) == ("succeeded", value)  # type: ignore[index]
    code, body = call_json(f"{http_url(runner)}/tasks/task/{task_id}")
    assert (code, body["state"], body["result"]) == (200, "succeeded", shown)
    client.close()
