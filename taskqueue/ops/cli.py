"""The command line: parses argv, runs one command, and turns exceptions into exit codes (one boundary)."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType

from redis.exceptions import OutOfMemoryError

import taskqueue
from taskqueue.errors import ConfigError, TaskQueueError, UsageError
from taskqueue.ops import logs

log = logging.getLogger("taskqueue")

Command = Callable[[argparse.Namespace], int]
RUNNER_MODULES = ("yaml", "jsonschema", "aiohttp", "apscheduler", "prometheus_client")  # the `runner` extra's


def _commands(name: str) -> ModuleType:
    """Imported only once a command runs, so `--version` and `--help` stay fast."""
    try:
        _require_runner(name)
        from taskqueue.ops import commands
    except ImportError as exc:  # a producer-only install (pip install taskqueue): no runner dependencies
        raise _missing(name, str(exc.name or exc)) from None
    return commands


def _require_runner(name: str) -> None:
    """Found, not imported: the runner itself never loads the YAML reader (its check does, apart)."""
    for module in RUNNER_MODULES:
        if importlib.util.find_spec(module) is None:
            raise _missing(name, module)


def _missing(command: str, module: str) -> TaskQueueError:
    return TaskQueueError(
        f"the '{command}' command needs the runner's dependencies ({module} is missing): "
        "pip install 'taskqueue[runner]', or use taskqueue.pex"
    )


def _runner(name: str) -> Command:
    """`run` / `worker`: the configuration check (a child process, runner/checking.py) starts first, so that
    it imports the YAML reader, the schema and the tasks while this process imports the runner."""

    def command(args: argparse.Namespace) -> int:
        from taskqueue import config as config_mod
        from taskqueue.runner import checking

        _require_runner(name)
        raw = config_mod.read(args.config)
        early = checking.start(args.config, raw)
        try:
            commands = _commands(name)
        except BaseException:
            early.cancel()
            raise
        result: int = commands.run(args, serve=name == "run", raw=raw, early=early)
        return result

    return command


def _command(name: str) -> Command:
    if name in ("run", "worker"):
        return _runner(name)
    commands = _commands(name)
    table: dict[str, Command] = {
        "validate": commands.validate,
        "schema": commands.schema,
        "enqueue": commands.enqueue,
        "status": commands.status,
        "dead": commands.dead,
        "reload": commands.reload,
        "workflow": commands.workflow,
        "show": commands.show,
        "cancel": commands.cancel,
        "events": commands.events,
        "webhooks": commands.webhooks,
    }
    return table[name]  # argparse has already refused any other name


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """-c/--log-level/--log-format work before or after the command (subparsers must not reset them)."""

    def default(value: str) -> str:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "-c",
        "--config",
        default=default("task-queue.yaml"),
        metavar="FILE",
        help="the YAML configuration (default: ./task-queue.yaml)",
    )
    parser.add_argument(
        "--log-level",
        default=default("info"),
        type=str.lower,  # WARNING, Warning and warning alike
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )
    parser.add_argument(
        "--log-format",
        default=default("text"),
        choices=["text", "json"],
        help="log line format (default: text)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskqueue",
        description="Declarative, YAML-configured, Redis-backed job runner.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"taskqueue {taskqueue.__version__} (Python {sys.version.split()[0]})",
    )
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _global_options(cmd, suppress=True)
        return cmd

    run = add("run", "run workers, the delayed-task timer, schedules and HTTP until SIGTERM/SIGINT (the default)")
    worker = add("worker", "run worker processes only (for extra hosts)")
    for starter in (run, worker):
        starter.add_argument(
            "--fail-fast",
            action="store_true",
            help="exit (code 1) when Redis does not answer at start, instead of waiting for it",
        )
    add("validate", "check the configuration and task imports; print OK or every problem")
    schema = add("schema", "print the JSON Schema of the configuration (as editors check the raw file)")
    schema.add_argument(
        "--strict", action="store_true", help="the schema the expanded file is checked against (no ${VAR})"
    )
    enqueue = add("enqueue", "enqueue one task and print its id")
    enqueue.add_argument("task", help="a task name declared in the YAML")
    enqueue.add_argument("--args", default="[]", help="positional arguments as a JSON array (or @FILE, @- for stdin)")
    enqueue.add_argument("--kwargs", default="{}", help="keyword arguments as a JSON object (or @FILE, @- for stdin)")
    enqueue.add_argument("--queue", help="queue to use instead of the task's own")
    enqueue.add_argument("--delay", help="run no earlier than this from now (e.g. 30s, 5m)")
    status = add("status", "queues, live workers and dead-letter size")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    dead = add("dead", "inspect, re-enqueue or delete dead-lettered tasks")
    dead.add_argument("action", choices=["list", "retry", "purge"])
    dead.add_argument("ids", nargs="*", metavar="ID", help="task ids (retry: all when none given)")
    dead.add_argument(
        "--all", action="store_true", help="retry/purge every dead-lettered task (purge needs IDs or this)"
    )
    dead.add_argument("--json", action="store_true", help="machine-readable output")
    reload = add("reload", "ask this config's runners on this host to re-read it; print their verdicts")
    reload.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="wait this long for the verdicts (default: 60)"
    )
    show = add("show", "show a task: where it is, its state, attempt, progress, and what holds it if it waits")
    show.add_argument("id", metavar="ID", help="the task's id (enqueue's return value)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    cancel = add(
        "cancel",
        "cancel tasks or workflows: queued and delayed ones never start, running ones stop "
        "(exit 1: one was unknown or had finished; 4: one was cancelled already)",
    )
    cancel.add_argument("ids", nargs="+", metavar="ID", help="task or workflow ids")
    workflow = add("workflow", "show a workflow: its state and each step's")
    workflow.add_argument("action", choices=["show"])
    workflow.add_argument("id", metavar="ID", help="the workflow's id (enqueue_workflow's return value)")
    workflow.add_argument("--json", action="store_true", help="machine-readable output")
    events = add("events", "print the lifecycle events stream (events: in the YAML), oldest first")
    events.add_argument("action", choices=["tail"])
    events.add_argument("--count", type=int, default=100, metavar="N", help="the newest N events (default: 100)")
    events.add_argument("--follow", "-f", action="store_true", help="then print new events as they come (Ctrl-C)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    webhooks = add("webhooks", "list the webhook events that could not be delivered, or deliver them again")
    webhooks.add_argument("action", choices=["list", "retry"])
    webhooks.add_argument("ids", nargs="*", metavar="ID", help="retry: these (from list; default: all)")
    webhooks.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run one command; expected errors → one line per problem and exit 1/2, Ctrl-C → 130, bugs → 3."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse already printed usage (or --version/--help)
        return exc.code if isinstance(exc.code, int) else 2
    logs.setup(args.log_level, args.log_format)
    return guarded(args, _lookup)


def _lookup(args: argparse.Namespace) -> int:
    """The command found inside the boundary: a producer-only install's "needs the runner's dependencies"
    is one line, not a traceback."""
    return _command(args.command or "run")(args)


OUT_OF_MEMORY = (
    "Redis is out of memory (used_memory > maxmemory, noeviction): nothing was written; "
    "free memory or raise maxmemory (README: A full Redis)"
)


def guarded(args: argparse.Namespace, command: Command) -> int:
    """Run one command at the exit-code boundary (also for taskqueue.testing's runner, which is `run`)."""
    try:
        return command(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(logs.redact(problem), file=sys.stderr)
        print(f"{args.config}: {len(exc.problems)} problem(s); nothing was started", file=sys.stderr)
        return exc.exit_code
    except (TaskQueueError, UsageError) as exc:
        print(f"taskqueue: {logs.redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OutOfMemoryError:
        print(f"taskqueue: {OUT_OF_MEMORY}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("taskqueue: unexpected error (a bug): please report the traceback above", file=sys.stderr)
        return 3


def console_main() -> None:
    """Entry point of the `taskqueue` console script (pip install .)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":  # `python -m taskqueue.ops.cli ...`: the same CLI, for a venv without the script on PATH
    console_main()
