"""The runner's configuration check, in a child process (`python -m taskqueue.config.apart`): the runner itself
never imports the YAML reader, the JSON Schema or the user's code. The child is started as a worker is (same
interpreter, flags, environment), so it imports the tasks exactly as the workers will."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from taskqueue import config as config_mod
from taskqueue.config import registry
from taskqueue.errors import ConfigError, Interrupted
from taskqueue.runner.children import worker_env, worker_flags

Checked = tuple[config_mod.Config, bytes | None, registry.Registry]  # config, its checked form, the signatures


def check(path: str | os.PathLike[str], raw: bytes) -> Checked:
    """`raw` (the file's bytes, or a test's overrides of them) checked as `config.load_checked` and every task
    imported, apart; raises ConfigError with the problems, as loading it here would."""
    return start(path, raw).finish()


class Pending:
    """A check under way (`start`): the runner's own imports run beside it, on the other core."""

    def __init__(self, path: str | os.PathLike[str], raw: bytes) -> None:
        self.path, self.raw = path, raw
        self.process = subprocess.Popen(_command(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env())
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(raw)  # the child reads it first thing (at most 1 MiB: config.MAX_FILE_BYTES)
            self.process.stdin.close()
        except OSError:
            pass  # it died already: finish() says so

    def finish(self) -> Checked:
        assert self.process.stdout is not None
        try:
            out = self.process.stdout.read()
        except KeyboardInterrupt:  # the child ignores Ctrl-C (config/apart.py): stop it, say what was stopped
            self.cancel()
            raise Interrupted(f"interrupted while checking {self.path} (importing its tasks)") from None
        self.process.stdout.close()
        return _answer(self.path, self.raw, self.process.wait(), out)

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def start(path: str | os.PathLike[str], raw: bytes) -> Pending:
    """Start checking `raw` apart; `finish()` waits for the answer."""
    return Pending(path, raw)


async def check_async(path: str | os.PathLike[str], raw: bytes) -> Checked:
    """`check`, without blocking the event loop while the child imports the user's code (a reload)."""
    import asyncio  # not before `start`: the child of cli.py's early check should start at once

    process = await asyncio.create_subprocess_exec(
        *_command(path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=worker_env()
    )
    try:
        out, _ = await process.communicate(raw)
    except BaseException:
        if process.returncode is None:
            process.kill()
        raise
    return _answer(path, raw, process.returncode, out)


def _command(path: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, *worker_flags(), "-m", "taskqueue.config.apart", "--config", str(path)]


def _answer(path: str | os.PathLike[str], raw: bytes, code: int | None, out: bytes) -> Checked:
    try:
        answer: dict[str, Any] = json.loads(out) if code == 0 else {}
    except ValueError:
        answer = {}
    if "problems" in answer:
        raise ConfigError([str(problem) for problem in answer["problems"]])
    if "signatures" not in answer:
        raise ConfigError([f"{path}: the configuration check failed (its process exited with {code}; see above)"])
    checked = answer.get("checked")
    if checked is None:  # a YAML-only value (config.load_checked): read the YAML here, still without the tasks
        config = config_mod.load(path, raw=raw, import_tasks=False)
        return config, None, registry.from_specs(config, answer["signatures"])
    form = str(checked).encode("utf-8")
    config = config_mod.from_checked(form, path)
    return config, form, registry.from_specs(config, answer["signatures"])
