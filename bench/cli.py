"""`python -m bench`: run the figures against the real runner, print the table, write the JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from bench import figures, report
from bench.figures import Context, Details, Metrics
from bench.peers import harness, venvs
from bench.redisserver import RedisServer
from bench.tqrunner import DEFAULT_SLOTS

ROOT = Path(__file__).resolve().parent.parent
ALL_FIGURES = (1, 2, 3, 4, 5, 6, 7, 8, 9)
Step = tuple[str, Callable[[Context], tuple[Metrics, Details]]]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="tasks per enqueue/drain run (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the table shows medians (default 3)")
    parser.add_argument("--figures", default="1,2,3,4,5,6,7,8,9", help="comma-separated figure numbers")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/<timestamp>.json)")
    parser.add_argument("--pex", type=Path, default=ROOT / "taskqueue.pex", help="the runner (default ./taskqueue.pex)")
    parser.add_argument(
        "--vs",
        type=Path,
        default=None,
        metavar="OLD_PEX",
        help="also measure this (older) pex, in turns with --pex in every repetition on the same redis-server, and "
        "print both tables and new/old per metric",
    )
    parser.add_argument("--no-sync", action="store_true", help="skip the extra sync-task variants")
    parser.add_argument(
        "--events", action="store_true", help="lifecycle events on for every task (events: {enabled: true})"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (YAML, runner logs, redis log)")
    parser.add_argument(
        "--peers",
        nargs="?",
        const="all",
        default=None,
        help=f"also run the peers (all, or a comma-separated subset of {','.join(venvs.PEERS)}), each in its "
        "venv bench/.peers/<peer>, and print the comparison table",
    )
    parser.add_argument(
        "--slots",
        type=int,
        default=DEFAULT_SLOTS,
        metavar="C",
        help="tasks at once per worker process (default %(default)s): taskqueue's workers.max_concurrent_tasks in "
        "every figure that runs a worker, and each peer's threads / async slots per worker process",
    )
    parser.add_argument(
        "--peers-own-settings",
        action="store_true",
        help="with --peers: also run the worker figures at each peer's own best documented setting where it differs "
        "from C (extra rows, never compared with taskqueue)",
    )
    parser.add_argument("--peers-only", action="store_true", help="with --peers: skip taskqueue's own figures")
    parser.add_argument("--peers-fresh", action="store_true", help="with --peers: delete and rebuild the venvs")
    args = parser.parse_args(argv)
    args.peer_names = []
    if args.peers is not None:
        names = venvs.PEERS if args.peers == "all" else [p.strip() for p in args.peers.split(",") if p.strip()]
        unknown = sorted(set(names) - set(venvs.PEERS))
        if unknown or not names:
            parser.error(f"--peers: unknown {unknown}; known: all or {','.join(venvs.PEERS)}")
        args.peer_names = list(dict.fromkeys(names))
    elif args.peers_only or args.peers_fresh or args.peers_own_settings:
        parser.error("--peers-only, --peers-fresh and --peers-own-settings need --peers")
    if not 1 <= args.slots <= 1000:
        parser.error("--slots must be between 1 and 1000")
    try:
        args.figure_set = {int(f) for f in args.figures.split(",") if f.strip()}
    except ValueError:
        parser.error(f"--figures: expected numbers like 1,2,3, got {args.figures!r}")
    if not args.figure_set <= set(ALL_FIGURES):
        parser.error(f"--figures: known figures are {ALL_FIGURES}")
    if args.n < 1 or not 1 <= args.repeat <= 20:
        parser.error("--n must be >= 1 and --repeat between 1 and 20")
    if not args.peers_only and not args.pex.exists():
        parser.error(f"--pex: {args.pex} not found (build it with ./build.sh)")
    if args.vs is not None and (args.peers_only or not args.vs.exists()):
        parser.error(f"--vs: {args.vs} not found, or --peers-only given (nothing of ours to compare)")
    return args


def plan(selected: set[int], with_sync: bool) -> list[Step]:
    steps: list[Step] = []
    if 1 in selected:
        steps += [("enqueue", figures.enqueue_one_by_one), ("enqueue_async", figures.enqueue_async)]
    if 2 in selected:
        steps.append(("bulk_enqueue", figures.enqueue_bulk))
    if 7 in selected:
        steps += [("redis_bytes", figures.redis_bytes), ("idle", figures.idle)]
    if selected & {3, 6, 7}:
        steps.append(("drain1", lambda c: figures.drain(c, 1, "anoop_incr", "drain1")))
    if selected & {3, 6} and with_sync:
        steps.append(("drain1_sync", lambda c: figures.drain(c, 1, "noop_incr", "drain1_sync")))
    if 4 in selected:
        steps.append(("drain2", lambda c: figures.drain(c, 2, "anoop_incr", "drain2")))
        if with_sync:
            steps.append(("drain2_sync", lambda c: figures.drain(c, 2, "noop_incr", "drain2_sync")))
    if 5 in selected:
        steps.append(("latency", lambda c: figures.latency(c, "alatency", "lat")))
        if with_sync:
            steps.append(("latency_sync", lambda c: figures.latency(c, "latency", "lat_sync")))
    if 8 in selected:
        steps.append(("delay", figures.delay_lateness))
    if 9 in selected:
        steps.append(("workflow", figures.workflows))
    return steps


def _terminate(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second one must not interrupt the clean-up
    raise SystemExit(128 + signum)  # unwinds through every finally: runners and redis-server are stopped


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_repeat(ctx: Context, steps: list[Step], repeat: int, repeats: int) -> tuple[dict[str, Any], bool]:
    """One repetition of every step; a failed step is recorded and the rest go on. Returns (run, failed)."""
    failed = False
    run: dict[str, Any] = {"repeat": repeat, "metrics": {}, "details": {}, "errors": {}}
    for name, step in steps:
        ctx.say(f"[{repeat}/{repeats}] {name} ...")
        began = time.perf_counter()
        try:
            metrics, details = step(ctx)
        except figures.BenchError as exc:
            failed = True
            run["errors"][name] = str(exc)
            ctx.say(f"  FAILED: {exc}")
            ctx.kill_all()
            continue
        details["wall_s"] = time.perf_counter() - began
        run["metrics"].update(metrics)
        run["details"][name] = details
        for problem in details.get("problems", []):
            failed = True
            ctx.say(f"  problem: {problem}")
        shown = ", ".join(f"{k} {report.fmt(v)}" for k, v in metrics.items())
        ctx.say(f"  {shown}  ({details['wall_s']:.1f}s)")
    return run, failed


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n": args.n,
        "repeat": args.repeat,
        "figures": sorted(args.figure_set),
        "slots": args.slots,
        "fairness": f"every figure that runs a worker: taskqueue at workers.max_concurrent_tasks = {args.slots}, each "
        f"peer at {args.slots} tasks at once per worker process (threads or async slots; rq: 1 by design)",
        "peers_own_settings": args.peers_own_settings,
        "sync_variants": not args.no_sync,
        "poll_s": figures.POLL_S,
        "enqueue_many_chunk": figures.CHUNK,
        "latency": {"rate": figures.LATENCY_RATE, "seconds": figures.LATENCY_SECONDS},
        "delay": {"tasks": figures.DELAYED_TASKS, "delay_s": figures.DELAY_S},
        "memory_tasks": figures.MEMORY_TASKS,
        "queues": "the default three (high_priority, default, low_priority); tasks in 'default'",
        "peers": args.peer_names,
        "peers_only": args.peers_only,
    }


def show(runs: list[dict[str, Any]], n: int, slots: int) -> dict[str, float]:
    """Print the table (medians), the top commands and any errors; returns the medians."""
    metric_runs = [run["metrics"] for run in runs]
    median = report.medians(metric_runs)
    print(f"taskqueue, C = {slots}: workers.max_concurrent_tasks = {slots} in every figure that runs a worker")
    print(report.table(median, metric_runs))
    last = runs[-1]["details"] if runs else {}
    for name in ("drain1", "drain2"):
        if name in last:
            print(f"top commands per task, {name} (last run): {report.top_commands(last[name], n)}")
    for run in runs:
        for name, error in run["errors"].items():
            print(f"error in run {run['repeat']}, {name}: {error}")
    return median


def show_peers(peers: harness.Harness, ours: dict[str, float] | None) -> list[dict[str, Any]]:
    """Print the comparison table and its legend; returns the rows (kept in the JSON)."""
    rule = harness.fairness(peers.peers, peers.concurrency)
    rows = harness.comparison(ours, {p.name: p.medians() for p in peers.peers if p.error is None}, rule)
    names = [p.name for p in peers.peers]
    print()
    print(
        f"comparison with the peers at C = {peers.concurrency} tasks at once per worker process, for taskqueue and "
        "every peer (medians; same private redis-server, same invocation)"
    )
    print(harness.render(rows, names, harness.missing_cells(peers.peers)))
    print(harness.legend(peers.peers, rule))
    return rows


def show_vs(
    new: dict[str, float], old_runs: list[dict[str, Any]], old_pex: Path, n: int, slots: int
) -> dict[str, float]:
    """--vs: the old pex's table, then new/old of every median both have; returns the old medians."""
    print(f"\n--vs {old_pex}: the same figures, in turns with the new pex in every repetition")
    old = show(old_runs, n, slots)
    print("\nnew / old (medians):")
    for metric in report.METRICS:
        if metric.key in new and metric.key in old and old[metric.key]:
            print(
                f"  {metric.key:<28} {report.fmt(new[metric.key])} / {report.fmt(old[metric.key])} = "
                f"{new[metric.key] / old[metric.key]:.3f}"
            )
    return old


def _prepare(ctx: Context) -> float:
    """Write the runner's YAMLs and publish the task tables (which also warms the PEX's venv cache)."""
    ctx.config(1)
    ctx.config(2)
    return ctx.publish_tables()


def measure(
    args: argparse.Namespace,
    ctx: Context,
    peers: harness.Harness,
    facts: dict[str, Any],
    old: tuple[Context, list[dict[str, Any]]] | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Start Redis, run every repeat (taskqueue's steps, the old pex's with --vs, then the peers'), stop
    everything. (runs, failed)."""
    own = not args.peers_only
    runs: list[dict[str, Any]] = []
    failed = True
    server = ctx.server
    try:
        if args.peer_names:
            peers.install()  # before Redis starts: pip may take minutes
        server.start()
        ctx.store = server.client()
        say(f"redis-server on {server.url} (pid {server.pid}); temp dir {ctx.folder}")
        facts["versions"] = {"redis-server": server.version(), "bench_side": report.local_versions()}
        if own:
            facts["versions"]["pex"] = report.pex_versions(ctx.pex)
            facts["warm_up_start_s"] = _prepare(ctx)
        if old is not None:
            old[0].store = ctx.store
            _prepare(old[0])
        peers.describe()
        steps = plan(args.figure_set, not args.no_sync) if own else []
        failed = False
        for repeat in range(1, args.repeat + 1):  # taskqueue and the peers take turns: the same noise for all
            if own:
                run, bad = run_repeat(ctx, steps, repeat, args.repeat)
                runs.append(run)
                failed = failed or bad
            if old is not None:
                ctx.say(f"[{repeat}/{args.repeat}] --vs {args.vs}")
                run, bad = run_repeat(old[0], steps, repeat, args.repeat)
                old[1].append(run)
                failed = failed or bad
            peers.run_repeat(repeat, args.repeat)
    except (KeyboardInterrupt, SystemExit):
        failed = True
        say("interrupted: stopping everything, writing what was measured")
    except Exception:
        failed = True
        say(traceback.format_exc())
    finally:
        ctx.kill_all()
        if old is not None:
            old[0].kill_all()
        peers.close()
        if ctx.store is not None:
            ctx.store.close()
        server.stop()
    return runs, failed


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    own = not args.peers_only
    started_at = dt.datetime.now(dt.UTC)
    out: Path = args.out or ROOT / "bench" / "results" / f"{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"
    facts: dict[str, Any] = {
        "command": [sys.executable, "-m", "bench", *(sys.argv[1:] if argv is None else argv)],
        "started_at": started_at.isoformat(),
        "machine": report.machine(),  # load average before anything of ours runs
        "source": report.source_state(ROOT, args.pex),
    }
    if own and facts["source"]["sources_newer_than_pex"]:
        say(f"warning: taskqueue/ files are newer than the pex: {facts['source']['sources_newer_than_pex']}")
    folder = Path(tempfile.mkdtemp(prefix="tq-bench-"))
    pex = folder / "taskqueue.pex"  # a snapshot: a rebuild during the run must not change what is measured
    if own:
        shutil.copy2(args.pex, pex)
        facts["source"]["pex_sha256"] = hashlib.sha256(pex.read_bytes()).hexdigest()
    server = RedisServer(folder / "redis")
    ctx = Context(server, pex, folder, args.n, say, events=args.events, slots=args.slots)
    peers = harness.Harness(
        server,
        folder,
        args.n,
        say,
        args.peer_names,
        args.figure_set,
        fresh=args.peers_fresh,
        concurrency=args.slots,
        own_settings=args.peers_own_settings,
    )
    old: tuple[Context, list[dict[str, Any]]] | None = None
    if args.vs is not None:
        (folder / "vs").mkdir()
        shutil.copy2(args.vs, folder / "vs" / "taskqueue.pex")
        facts["source"]["vs_pex_sha256"] = hashlib.sha256((folder / "vs" / "taskqueue.pex").read_bytes()).hexdigest()
        old_ctx = Context(
            server, folder / "vs" / "taskqueue.pex", folder / "vs", args.n, say, events=args.events, slots=args.slots
        )
        old = (old_ctx, [])
    runs, failed = measure(args, ctx, peers, facts, old)
    median = show(runs, args.n, args.slots) if own else {}
    if old is not None:
        facts["vs"] = {
            "pex": str(args.vs),
            "runs": old[1],
            "medians": show_vs(median, old[1], args.vs, args.n, args.slots),
        }
    if args.peer_names:
        facts["comparison"] = show_peers(peers, median if own else None)
        facts["peers"] = peers.to_json()
    facts["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
    facts["settings"] = settings(args)
    facts["yaml"] = {f"{k}_workers": text for k, text in sorted(ctx.yamls.items())}
    facts["jobs_py"] = (ROOT / "bench" / "jobs.py").read_text()
    facts["targets"] = {m.key: m.target for m in report.METRICS if m.target}
    facts["medians"] = median
    facts["runs"] = runs
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(facts, indent=2, default=str) + "\n")
    print(f"JSON: {out}")
    if args.keep or failed or peers.troubled():
        print(f"temp dir kept: {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0
