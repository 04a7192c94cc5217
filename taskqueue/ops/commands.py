"""The operational commands behind the CLI: run, worker, enqueue, status, dead, events."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from taskqueue import canvas
from taskqueue import config as config_mod
from taskqueue._loop import run_loop
from taskqueue.config import registry
from taskqueue.errors import ConfigError, UnknownTask, UsageError
from taskqueue.ops import admin, logs
from taskqueue.runner import checking, presence
from taskqueue.runner.runner import Runner, RunOptions
from taskqueue.store import eventlog, lookup, redisboot
from taskqueue.store.broker import HOST, Broker
from taskqueue.store.connection import async_client


def validate(args: argparse.Namespace) -> int:
    registry.build(config_mod.load(args.config))
    print("OK")
    return 0


def schema(args: argparse.Namespace) -> int:
    """The editor's flavour (config/editor.py: `${VAR}` accepted wherever the loader expands it); `--strict`:
    the one the loader checks the expanded file against."""
    from taskqueue.config import validation  # the YAML reader and the schema: not in the runner's process

    if getattr(args, "strict", False):
        sys.stdout.write(validation.schema_text())
    else:
        from taskqueue.config.editor import editor_schema_text

        sys.stdout.write(editor_schema_text(validation.schema()))
    return 0


def run(
    args: argparse.Namespace, *, serve: bool = True, raw: bytes | None = None, early: checking.Pending | None = None
) -> int:
    """The runner; `raw` is the configuration's text when it is not the file's own (taskqueue.testing: the
    user's YAML with the test's overrides, while `args.config` names the user's file); `early`: its check,
    started before this module was imported (cli.py)."""
    raw = config_mod.read(args.config) if raw is None else raw
    early = checking.start(args.config, raw) if early is None else early
    cfg, checked, tasks = early.finish()  # apart: the runner never imports the tasks
    options = RunOptions(Path(args.config).resolve(), raw, checked, args.log_level, args.log_format, serve)

    async def main() -> int:
        client, embedded = await redisboot.connect(cfg, fail_fast=getattr(args, "fail_fast", False))
        try:
            return await Runner(cfg, options, Broker(client, cfg), tasks).run()
        finally:
            await client.aclose()
            if embedded:
                embedded.stop()

    return run_loop(main())


def _with_broker(
    args: argparse.Namespace, action: Callable[[Broker], Awaitable[int]], cfg: config_mod.Config | None = None
) -> int:
    cfg = cfg or config_mod.load(args.config, import_tasks=False, unset_ok=True)

    async def main() -> int:
        client = async_client(redisboot.options(cfg))
        try:
            await redisboot.check(client, cfg)
            return await action(Broker(client, cfg))
        finally:
            await client.aclose()

    return run_loop(main())


def _json_option(flag: str, text: str) -> Any:
    """--args / --kwargs: JSON, or `@FILE` holding it (`@-`: standard input)."""
    source = text
    if text.startswith("@"):
        try:
            source = sys.stdin.read() if text == "@-" else Path(text[1:]).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{flag} {text}: cannot read {text[1:]}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag}{' ' + text if text.startswith('@') else ''} must be JSON: {exc}") from None


def enqueue(args: argparse.Namespace) -> int:
    call_args, call_kwargs = _json_option("--args", args.args), _json_option("--kwargs", args.kwargs)
    if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
        raise UsageError("--args must be a JSON array and --kwargs a JSON object")
    try:
        delay = config_mod.seconds(args.delay) if args.delay else 0.0
    except ValueError as exc:
        raise UsageError(f"--delay: {exc} (e.g. 30s, 5m, 2h)") from None
    cfg = config_mod.load(args.config, import_tasks=False, unset_ok=True)
    problem = _argument_problem(cfg, args.task, call_args, call_kwargs)
    if problem:
        raise UsageError(problem)  # it would only be dead-lettered: refused before it reaches Redis

    async def action(broker: Broker) -> int:
        try:
            task_id, _ = await admin.enqueue(broker, args.task, call_args, call_kwargs, args.queue, delay)
        except (ValueError, UnknownTask) as exc:  # a name or argument the user typed: a usage error (exit 2)
            raise UsageError(str(exc)) from None
        print(task_id)
        return 0

    return _with_broker(args, action, cfg)


def _argument_problem(cfg: config_mod.Config, name: str, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """Why these arguments cannot bind to the task (or to a workflow's first steps), importing only those
    tasks. One that cannot be imported here (say, a dependency only the workers' hosts have) is not checked."""
    if name in cfg.workflows:
        names = {step.task for step, source in canvas.lay_out(cfg.workflows[name]).steps if source is None}
    elif name in cfg.tasks:
        names = {name}
    else:
        return None  # unknown: admin.enqueue says so
    try:
        tasks = registry.build(cfg, names)
    except ConfigError as exc:
        print(f"taskqueue: note: arguments not checked: {exc.problems[0]}", file=sys.stderr)
        return None
    return tasks.call_problem(cfg, name, args, kwargs)


def status(args: argparse.Namespace) -> int:
    async def action(broker: Broker) -> int:
        found = await admin.status(broker)
        if args.json:
            print(json.dumps(found, indent=2))
            return 0
        print(f"{'queue':<20} {'pending':>9} {'processed':>10} {'failed':>8} {'retried':>8} {'dead':>6}")
        for q in found["queues"]:
            print(
                f"{q['name']:<20} {q['pending']:>9} {q['processed']:>10} {q['failed']:>8} "
                f"{q['retried']:>8} {q['dead']:>6}"
            )
        for name, length in found["undeclared_queues"].items():
            print(f"warning: {length} message(s) in queue '{name}', which no queue of this configuration declares")
        print(f"delayed: {found['delayed']}   dead-letter: {found['dead']}   live workers: {len(found['workers'])}")
        for s in found["schedules"]:
            print(
                f"schedule {s['name']:<18} {s['trigger']:<22} last={s['last_fire']}  next={s['next_fire']}"
                f"  fired={s['fired']} skipped={s['skipped']}"
            )
        for h in found.get("webhooks", []):
            print(
                f"webhook {h['name']:<19} delivered={h['delivered']} failed attempts={h['failed']} "
                f"undeliverable={h['undeliverable']} backlog={h['backlog'] if h['backlog'] is not None else '?'}"
                + (f" LOST={h['lost']}" if h["lost"] else "")
            )
        if "webhook_events_kept" in found:
            print(f"undeliverable webhook events kept: {found['webhook_events_kept']} (webhooks list|retry)")
        for runner, d in found["autoscaler"].items():
            when = dt.datetime.fromtimestamp(d["at"], dt.UTC).isoformat(timespec="seconds")
            print(f"autoscaler {runner}: {when} scale {d['direction']} {d['from']}→{d['to']}: {d['reason']}")
        for w in found["workers"]:
            print(f"  {w['id']}  host={w.get('host')} pid={w.get('pid')} active={w.get('active')}/{w.get('slots')}")
        return 0

    return _with_broker(args, action)


def dead(args: argparse.Namespace) -> int:
    if args.ids and args.all:
        raise UsageError(f"dead {args.action}: give task ids or --all, not both")
    if args.action == "purge" and not args.ids and not args.all:  # deleting for good: never by omission
        raise UsageError("dead purge deletes for good: give the task ids, or --all for every dead-lettered task")

    async def action(broker: Broker) -> int:
        ids = list(args.ids) or await broker.dead_ids(limit=100_000 if args.action != "list" else 100)
        records = await broker.dead_records(ids)
        if args.action == "list":
            _print_dead([r.public() for r in records], args.json)
            return 0
        if args.action == "purge":
            print(f"purged {await broker.drop_dead([r.id for r in records])}")
            return 0
        done, problems = await admin.retry_dead(broker, ids)
        for problem in problems:
            print(problem)
        print(f"re-enqueued {len(done)}")
        return 0 if not problems else 1

    return _with_broker(args, action)


def reload(args: argparse.Namespace) -> int:
    """Ask the runners of this config on this host to reload, through Redis (runner/presence.py), and wait for
    their verdicts: 0 when every one applied the file, 2 when one rejected it, 1 when one did not answer."""
    path = str(Path(args.config).resolve())

    async def action(broker: Broker) -> int:
        found = {
            runner_id: info
            for runner_id, info in (await broker.runners()).items()
            if info.get("host") == HOST and info.get("config") == path
        }
        if not found:
            print(f"taskqueue: no running runner of {path} on this host", file=sys.stderr)
            return 1
        answers = await presence.ask(broker, list(found), args.timeout)
        code = 0
        for runner_id, info in found.items():
            who = f"runner {runner_id} (pid {info.get('pid')})"
            verdict = answers.verdicts.get(runner_id)
            if verdict is not None and verdict.applied:
                print(f"{who}: {verdict.reason}")
                continue
            if verdict is not None:
                print(f"taskqueue: {who}: {verdict.reason}", file=sys.stderr)
                for problem in verdict.problems:
                    print(f"  {logs.redact(problem)}", file=sys.stderr)
                code = 2
                continue
            if runner_id in answers.received:
                why = f"took the request but gave no verdict within {args.timeout:g} s; its log tells how it went"
            else:
                why = f"did not take the request within {presence.RECEIPT_WAIT_S:g} s (is it stuck, or Redis slow?)"
            print(f"taskqueue: {who} {why}", file=sys.stderr)
            code = code or 1
        return code

    return _with_broker(args, action)


def workflow(args: argparse.Namespace) -> int:
    async def action(broker: Broker) -> int:
        found = await broker.workflow(args.id)
        if found is None:
            print(f"taskqueue: no workflow {args.id} (unknown, or expired after its result_ttl)", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(found, indent=2))
            return 0
        print(f"workflow {found['id']}: {found['state']}")
        for s in found["steps"]:
            print(f"  {s['index']:>4}  {s['state']:<10} {s['task']:<24} {s['id']}")
        return 0

    return _with_broker(args, action)


def show(args: argparse.Namespace) -> int:
    async def action(broker: Broker) -> int:
        found = await broker.status(args.id)
        if found is None:
            print(
                f"taskqueue: no task {args.id} (unknown, or finished longer ago than its result_ttl)", file=sys.stderr
            )
            return 1
        if args.json:
            print(json.dumps({**found, "result": lookup.jsonable(found["result"])}, indent=2, default=str))
            return 0
        print(describe_status(found))
        return 0

    return _with_broker(args, action)


def describe_status(found: dict[str, Any]) -> str:
    """One line or two for `show`: `<id> <task>: waiting (rate_limit 10/s tenant=acme, next slot in 80 ms)`."""
    head = f"{found['id']}" + (f" {found['task']}" if found.get("task") else "") + f": {found['state']}"
    parts = []
    if found.get("queue"):
        parts.append(f"queue={found['queue']}")
    if found.get("attempt"):
        parts.append(f"attempt={found['attempt']}")
    if found.get("worker"):
        parts.append(f"worker={found['worker']}")
    if found.get("due_at"):
        parts.append(f"due in {max(0.0, found['due_at'] - time.time()):.3g}s")
    waiting = found.get("waiting")
    if waiting:
        until = waiting.get("until")
        when = f", next look in {max(0.0, until - time.time()) * 1000:.0f} ms" if until else ""
        head += f" ({waiting['limit']}{when})"
    progress = found.get("progress")
    if progress:
        shown = f"{progress['fraction'] * 100:.0f}%"
        parts.append(f"progress={shown}" + (f" {progress['message']}" if progress.get("message") else ""))
    if found.get("error"):
        parts.append(f"error: {found['error']}")
    shown = head + ("\n  " + "  ".join(parts) if parts else "")
    if found["state"] == "succeeded":  # what result() returns, as JSON (celery result ID)
        shown += "\n  result: " + json.dumps(lookup.jsonable(found.get("result")), default=str)
    return shown


EXIT_ALREADY_CANCELLED = 4  # `cancel`: none was unknown, and one of the ids had been cancelled before


def cancel(args: argparse.Namespace) -> int:
    """Exit 0 when every id was cancelled now, 1 when one was unknown or had finished, else 4 when one had been
    cancelled before (a script can tell "I stopped it" from "it was stopped already")."""

    async def action(broker: Broker) -> int:
        answers = []
        for task_id in args.ids:
            answer = await broker.cancel(task_id)
            answers.append(answer)
            print(f"{task_id}: {answer.replace('_', ' ')}")
        if "not_found" in answers:
            return 1
        return EXIT_ALREADY_CANCELLED if "already_cancelled" in answers else 0

    return _with_broker(args, action)


TRACEBACK_LINES = 6  # of each record's traceback, the last lines `dead list` shows (--json: all of it)


def events(args: argparse.Namespace) -> int:
    """`events tail`: the newest --count events, oldest first; with --follow, then new ones until Ctrl-C."""
    if args.count < 0:
        raise UsageError("--count must be 0 or more")

    async def action(broker: Broker) -> int:
        stream, block = broker.keys.events, eventlog.blocking_ms(broker.redis, 5000)
        newest = await broker.redis.xrevrange(stream, count=max(args.count, 1))
        last = newest[0][0] if newest else b"0-0"  # follow on from the newest entry: none is missed
        for stream_id, fields in reversed(newest[: args.count]):
            _print_event(eventlog.entry(stream_id, fields), args.json)
        while args.follow:
            reply = await broker.redis.xread({stream: last}, count=1000, block=block)
            for stream_id, fields in reply[0][1] if reply else []:
                _print_event(eventlog.entry(stream_id, fields), args.json)
                last = stream_id
        return 0

    return _with_broker(args, action)


def webhooks(args: argparse.Namespace) -> int:
    """`webhooks list`: the undeliverable events kept; `webhooks retry [ID…]`: deliver them again, once each,
    from this process (exit 1 when some still fail)."""
    from taskqueue.runner import webhooks as hooks  # aiohttp's client: only for this command

    cfg = config_mod.load(args.config, import_tasks=False, unset_ok=args.action == "list")  # retry signs

    async def action(broker: Broker) -> int:
        if args.action == "list":
            kept = await hooks.undeliverable(broker.redis, broker.keys)
            if args.json:
                print(json.dumps(kept, indent=2))
                return 0
            for record in kept:
                event = record["event"]
                print(
                    f"{record['member']}  {event.get('event')} {event.get('id')} {event.get('task')}  "
                    f"after {record['attempts']} attempt(s): {record['error']}"
                )
            print(f"{len(kept)} undeliverable webhook event(s)")
            return 0
        delivered, failures = await hooks.retry(broker.redis, broker.keys, cfg, args.ids or None)
        for line in failures:
            print(f"still failing: {line}", file=sys.stderr)
        print(f"{delivered} delivered, {len(failures)} still undeliverable")
        return 1 if failures else 0

    return _with_broker(args, action, cfg)


def _print_event(event: dict[str, Any] | None, as_json: bool) -> None:
    if event is None:
        return
    if as_json:
        print(json.dumps(event), flush=True)
        return
    at = dt.datetime.fromtimestamp(int(event.get("at", 0)) / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    shown = {k: v for k, v in event.items() if k not in ("at", "event", "id", "task", "stream_id")}
    rest = " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and ' ' in v else v}" for k, v in shown.items())
    print(f"{at[:-4]}Z {event.get('event', '?'):<17} {event.get('id', '')} {event.get('task', '')} {rest}", flush=True)


def _print_dead(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(records, indent=2, default=str))
        return
    for r in records:
        when = dt.datetime.fromtimestamp(r["failed_at"], dt.UTC).isoformat(timespec="seconds")
        print(_plain(f"{r['id']}  {r['task']}  queue={r['queue']}  attempts={r['attempts']}  {when}  {r['error']}"))
        for line in traceback_tail(r.get("traceback") or ""):
            print(f"    {line}")
    print(f"{len(records)} dead task(s)")


def traceback_tail(trace: str, limit: int = TRACEBACK_LINES) -> list[str]:
    """The last `limit` lines of a traceback (where it failed), after a line saying how many came before;
    without the `^^^^` lines under the code (they point into a line the summary may not show whole)."""
    lines = [_plain(line) for line in trace.rstrip().splitlines() if line.strip(" ^~")]
    if len(lines) <= limit:
        return lines
    return [f"… {len(lines) - limit} line(s) above: `dead list --json` shows the whole traceback", *lines[-limit:]]


def _plain(text: str) -> str:
    """Terminal-safe: control characters a task's error may carry (escape sequences) printed escaped."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)
