"""Django >= 6's `django.tasks` on taskqueue (issue 16, SPEC §12), end to end: a small real Django project whose
settings point TASKS at `taskqueue.integrations.django.TaskQueueBackend`, its `@task` functions enqueued with
`.enqueue()`, run by a real runner (`python -m taskqueue.ops.cli -c task-queue.yaml run`, with `django:
{settings: ...}`), their results read back with `get_result()`.

Django 6 needs Python >= 3.12, which the dev venv may not be: these tests build a venv of their own with a
3.12+ interpreter found as build.sh finds interpreters (`tq_find_pythons`), with requirements.lock and
requirements-django.lock installed; it is cached under .pythons/ keyed by the interpreter and both lock files.
taskqueue itself is pip-installed (from a copy of the tracked files) into a folder of each test session, so the
cached venv always runs the code under test. No interpreter >= 3.12: the tests fail, saying so
(TQ_SKIP_DJANGO=1 skips them explicitly)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import wait_for
from tests.e2e.test_testing_installed import tracked_copy

REPO = Path(__file__).resolve().parents[2]
LOCKS = (REPO / "requirements.lock", REPO / "requirements-django.lock")

pytestmark = [
    pytest.mark.skipif(os.environ.get("TQ_SKIP_DJANGO") == "1", reason="TQ_SKIP_DJANGO=1"),
    pytest.mark.skipif(
        shutil.which("redis-server") is None and not os.environ.get("TASKQUEUE_TEST_REDIS_URL"),
        reason="redis-server is not installed (.ci/run installs it)",
    ),
]


def python_312() -> str:
    """A CPython >= 3.12 of this machine (the first tq_find_pythons lists), or the test fails saying why."""
    found = subprocess.run(
        ["bash", "-c", "source build-support/bootstrap.sh && tq_find_pythons"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for line in found.stdout.split():
        version = subprocess.run(
            [line, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if version.stdout.strip() == "True":
            return line
    pytest.fail(
        "the Django integration's tests need CPython >= 3.12 (Django 6 does) and none was found "
        f"(tq_find_pythons: {found.stdout.split() or 'none'}): install one (pyenv, or TQ_EXTRA_PYTHONS=3.12 "
        "for build-support's tq_ensure_extra_pythons), or set TQ_SKIP_DJANGO=1 to skip them"
    )


def cached_venv(python: str) -> Path:
    """A venv of `python` with both lock files installed, under .pythons/, reused while neither changes."""
    digest = hashlib.sha256(python.encode() + b"\0" + b"".join(lock.read_bytes() for lock in LOCKS)).hexdigest()
    venv = REPO / ".pythons" / f"django-{digest[:16]}"
    if (venv / ".complete").is_file():
        return venv
    building = venv.with_name(venv.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(building)], check=True, timeout=120)
    pip = [str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = subprocess.run(
        [*pip, *(arg for lock in LOCKS for arg in ("-r", str(lock)))],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    (building / ".complete").write_text("")
    try:
        building.rename(venv)  # whole or not at all; run as `bin/python -m ...` (its scripts' #! name the old path)
    except OSError:  # another session built it meanwhile
        shutil.rmtree(building, ignore_errors=True)
    return venv


@dataclass
class DjangoEnv:
    python: Path  # the venv's interpreter
    site: Path  # taskqueue, pip-installed (--target) from the tracked files
    redis_url: str

    def env(self, project: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
        return {**env, "PYTHONPATH": f"{self.site}{os.pathsep}{project}", "PYTHONDONTWRITEBYTECODE": "1"}

    def run(self, argv: list[str], project: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), *argv],
            cwd=project,
            env=self.env(project),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def django_env(tmp_path_factory: pytest.TempPathFactory, redis_server: object) -> DjangoEnv:
    venv = cached_venv(python_312())
    python = venv / "bin" / "python"  # its pyvenv.cfg is found beside it, wherever the venv was built
    folder = tmp_path_factory.mktemp("django")
    source = tracked_copy(folder / "taskqueue-src")
    site = folder / "site"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), f"{source}[runner]"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    url = os.environ.get("TASKQUEUE_TEST_REDIS_URL") or getattr(redis_server, "url")  # noqa: B009
    return DjangoEnv(python, site, url)


SETTINGS = """\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "test"
USE_TZ = True
INSTALLED_APPS = ["myapp"]
MARKER = "settings of mysite"
TASKS = {
    "default": {
        "BACKEND": "taskqueue.integrations.django.TaskQueueBackend",
        "OPTIONS": {"CONFIG": BASE_DIR / "task-queue.yaml"},
    }
}
"""

TASKS = """\
from django.apps import apps
from django.conf import settings
from django.tasks import task


@task
def add(a, b):
    # Django is set up in the worker: settings read, apps loaded.
    return {"sum": a + b, "marker": settings.MARKER, "apps_ready": apps.ready}


@task(queue_name="urgent")
async def shout(text):
    return text.upper()


@task
def boom():
    raise ValueError("boom from a Django task")


@task
def undeclared():
    return "must never run"


@task(takes_context=True)
def with_context(context):
    return context.attempt
"""

YAML = """\
redis: {{url: "{url}", key_prefix: "{prefix}"}}
django: {{settings: mysite.settings}}
queues:
  default: {{priority: 5}}
  urgent: {{priority: 10}}
tasks:
{tasks}
workers: {{initial_count: 1, heartbeat_interval: 1s}}
http: {{enabled: false}}
"""

DECLARED = """\
  myapp.tasks.add: {path: "myapp.tasks:add"}
  myapp.tasks.shout: {path: "myapp.tasks:shout"}
  myapp.tasks.boom: {path: "myapp.tasks:boom", max_retries: 0}
"""

DRIVE = """\
import datetime as dt, json, os, sys, time
import django

os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
django.setup()
from django.tasks import task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from myapp import tasks

out = {}
added = tasks.add.enqueue(2, 3)
later = tasks.shout.using(run_after=dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=300)).enqueue("hi")
failed = tasks.boom.enqueue()
out["enqueued_status"] = str(added.status)
try:
    tasks.undeclared.enqueue()
except InvalidTask as exc:
    out["undeclared"] = str(exc)
deadline = time.monotonic() + 60
for result in (added, later, failed):
    while not result.is_finished and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the outcome, bounded by the deadline
        result.refresh()
fetched = tasks.add.get_result(added.id)  # a new TaskResult, from taskqueue's store
out["add"] = {"status": str(fetched.status), "value": fetched.return_value, "task": fetched.task.module_path}
out["shout"] = {"status": str(later.status), "value": later.return_value}
out["boom"] = {
    "status": str(failed.status),
    "errors": [{"class": e.exception_class_path, "traceback": e.traceback} for e in failed.errors],
}
out["backend"] = type(task_backends["default"]).__name__
parked = tasks.add.using(run_after=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).enqueue(1, 1)
out["parked"] = str(tasks.add.get_result(parked.id).status)
out["cancel"] = task_backends["default"].client.cancel(parked.id)
cancelled = tasks.add.get_result(parked.id)
out["cancelled"] = {"status": str(cancelled.status), "errors": [e.traceback for e in cancelled.errors]}
try:
    tasks.add.get_result("no-such-id")
except TaskResultDoesNotExist as exc:
    out["unknown"] = type(exc).__name__
print(json.dumps(out))
"""


def write_project(folder: Path, url: str, prefix: str, tasks: str = DECLARED) -> Path:
    for name, text in {
        "mysite/__init__.py": "",
        "mysite/settings.py": SETTINGS,
        "myapp/__init__.py": "",
        "myapp/tasks.py": TASKS,
        "drive.py": DRIVE,
        "task-queue.yaml": YAML.format(url=url, prefix=prefix, tasks=tasks),
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def runner(django_env: DjangoEnv, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """The project, and its runner started from the 3.12 venv (its task table published)."""
    project = write_project(tmp_path / "project", django_env.redis_url, "djtest")
    client = redis.Redis.from_url(django_env.redis_url)
    for key in client.scan_iter("djtest:*"):
        client.delete(key)
    log = (tmp_path / "runner.log").open("wb")
    argv = [str(django_env.python), "-m", "taskqueue.ops.cli", "-c", "task-queue.yaml", "run"]
    process = subprocess.Popen(argv, cwd=project, env=django_env.env(project), stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "runner.log").read_text()
        return bool(client.exists("djtest:tasks")) and bool(client.zcard("djtest:workers"))

    try:
        wait_for(ready, timeout=60, what="the runner's task table and a live worker")
        yield project, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        client.close()


@pytest.mark.timeout(900)
def test_django_tasks_enqueued_with_enqueue_run_on_the_runner(
    django_env: DjangoEnv, runner: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    project, _ = runner
    driven = django_env.run(["drive.py"], project, timeout=120)
    assert driven.returncode == 0, driven.stdout + driven.stderr + (tmp_path / "runner.log").read_text()
    out = json.loads(driven.stdout.strip().splitlines()[-1])
    assert out["backend"] == "TaskQueueBackend"
    assert out["enqueued_status"] == "READY"
    assert out["add"] == {
        "status": "SUCCESSFUL",
        "value": {"sum": 5, "marker": "settings of mysite", "apps_ready": True},
        "task": "myapp.tasks.add",
    }
    assert out["shout"] == {"status": "SUCCESSFUL", "value": "HI"}  # async, on queue "urgent", after run_after
    assert out["parked"] == "READY"  # delayed an hour
    assert out["cancel"] == "cancelled"
    assert out["cancelled"] == {"status": "FAILED", "errors": ["cancelled"]}
    assert out["unknown"] == "TaskResultDoesNotExist"
    assert out["boom"]["status"] == "FAILED"
    (error,) = out["boom"]["errors"]
    assert error["class"] == "builtins.ValueError"
    assert "boom from a Django task" in error["traceback"] and "Traceback" in error["traceback"]
    # Only what the YAML declares runs: the undeclared task is refused at enqueue, naming it.
    assert "unknown task 'myapp.tasks.undeclared'" in out["undeclared"], out["undeclared"]
    assert "the YAML declares a Django task under its module path" in out["undeclared"]


def test_an_undeclared_task_that_reaches_a_worker_is_dead_lettered(
    django_env: DjangoEnv, runner: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    """A message naming a Django task the YAML does not declare (pushed by hand, as redis-cli could) is never
    imported: the worker dead-letters it and get_result() says FAILED with the reason."""
    project, _ = runner
    script = textwrap.dedent(
        """\
        import json, os, time
        import django
        os.environ["DJANGO_SETTINGS_MODULE"] = "mysite.settings"
        django.setup()
        from django.tasks import default_task_backend as backend
        from taskqueue import envelope
        from myapp import tasks
        task_id = envelope.new_id()
        message = envelope.pack("myapp.tasks.undeclared", task_id, [], {}, time.time(), None, None)
        backend.client.redis.lpush(backend.client.keys.queue("default"), message)
        deadline = time.monotonic() + 60
        while backend.client.status(task_id) is None or backend.client.status(task_id)["state"] != "failed":
            assert time.monotonic() < deadline, backend.client.status(task_id)
            time.sleep(0.05)  # polling for the outcome, bounded by the deadline
        result = tasks.undeclared.get_result(task_id)
        print(json.dumps({"status": str(result.status), "errors": [e.traceback for e in result.errors]}))
        """
    )
    (project / "push.py").write_text(script)
    pushed = django_env.run(["push.py"], project)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    out = json.loads(pushed.stdout.strip().splitlines()[-1])
    assert out["status"] == "FAILED"
    assert "unknown task 'myapp.tasks.undeclared'" in out["errors"][0]


def test_validate_sets_django_up_and_locates_a_misnamed_django_task(django_env: DjangoEnv, tmp_path: Path) -> None:
    good = write_project(tmp_path / "good", django_env.redis_url, "djvalid")
    checked = django_env.run(["-m", "taskqueue.ops.cli", "-c", "task-queue.yaml", "validate"], good)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "OK"

    misnamed = '  send: {path: "myapp.tasks:add"}\n'
    bad = write_project(tmp_path / "bad", django_env.redis_url, "djvalid", tasks=misnamed)
    refused = django_env.run(["-m", "taskqueue.ops.cli", "-c", "task-queue.yaml", "validate"], bad)
    assert refused.returncode != 0
    assert "task-queue.yaml:7:" in refused.stderr, refused.stderr  # located: the path's line
    assert "tasks.send.path" in refused.stderr or "'myapp.tasks:add' is a Django task" in refused.stderr
    assert "its module path 'myapp.tasks.add'" in refused.stderr, refused.stderr

    with_context = '  myapp.tasks.with_context: {path: "myapp.tasks:with_context"}\n'
    context = write_project(tmp_path / "context", django_env.redis_url, "djvalid", tasks=with_context)
    refused = django_env.run(["-m", "taskqueue.ops.cli", "-c", "task-queue.yaml", "validate"], context)
    assert refused.returncode != 0
    assert "task-queue.yaml:7:" in refused.stderr and "takes_context=True" in refused.stderr, refused.stderr

    no_settings = bad / "task-queue.yaml"
    no_settings.write_text(no_settings.read_text().replace("mysite.settings", "nosuch.settings"))
    broken = django_env.run(["-m", "taskqueue.ops.cli", "-c", "task-queue.yaml", "validate"], bad)
    assert broken.returncode != 0
    assert "django.settings" in broken.stderr and "nosuch" in broken.stderr, broken.stderr


def test_without_a_django_section_nothing_imports_django(tmp_path: Path) -> None:
    """In the dev venv (no Django needed): loading a YAML and importing its tasks, as a worker does."""
    (tmp_path / "plain.py").write_text("def ping():\n    return 'pong'\n")
    (tmp_path / "task-queue.yaml").write_text(
        "queues: {default: {priority: 1}}\ntasks:\n  ping: {path: 'plain:ping'}\n"
    )
    code = (
        "import sys\n"
        "from taskqueue import config\n"
        "from taskqueue.config import registry\n"
        "registry.build(config.load('task-queue.yaml'))\n"
        "print('django' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
