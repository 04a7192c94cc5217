"""config.load: each file under tests/configs/ states what should happen to it; then conversions and env."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from taskqueue import config
from taskqueue.config import crontab, registry
from taskqueue.errors import ConfigError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
VALID = TESTS / "configs" / "valid"
INVALID = TESTS / "configs" / "invalid"
EXAMPLES = [REPO / "task-queue.yaml", *sorted((REPO / "conf").glob("*.yaml"))]
# conf/'s deployments name their Redis only through $REDIS_URL (no default, no placeholder address).
EXAMPLE_ENV = {"REDIS_URL": "redis://127.0.0.1:6379/0"}


def env_for(path: Path) -> dict[str, str]:
    return EXAMPLE_ENV if path.parent == REPO / "conf" else {}


# The three shapes a problem line may take: located in the file, set by an env variable, about the whole file.
LOCATED = re.compile(r"^[^:]+:\d+:\d+: \S+: .+")
FROM_ENV = re.compile(r"^\$[A-Z_]+: ")
FILE_LEVEL = re.compile(r"^[^:]+: ")


@dataclasses.dataclass
class Expected:
    substring: str
    at: tuple[int, int] | None = None  # LINE:COL of the problem holding the substring


@dataclasses.dataclass
class Header:
    """An invalid config's leading comments: `# expect:`, `# expect-at:`, `# expect-count:`, `# env:`."""

    expected: list[Expected] = dataclasses.field(default_factory=list)
    count: int | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def read_header(path: Path) -> Header:
    header = Header()
    for line in path.read_text("utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(": ")
        if key == "expect":
            header.expected.append(Expected(value))
        elif key == "expect-at":
            line_no, col = value.split(":")
            header.expected[-1].at = (int(line_no), int(col))
        elif key == "expect-count":
            header.count = int(value)
        elif key == "env":
            name, _, env_value = value.partition("=")
            header.env[name] = env_value
    return header


def problems_of(path: Path, env: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        config.load(path, env={} if env is None else env)
    assert caught.value.problems, "ConfigError without problems"
    return caught.value.problems


def invalid_files() -> list[Path]:
    return sorted(INVALID.glob("*.yaml"))


# --- the invalid examples ------------------------------------------------------------------------------


def test_invalid_examples_cover_enough_and_state_their_expectation() -> None:
    files = invalid_files()
    assert len(files) >= 24
    for path in files:
        assert path.read_text("utf-8").startswith("# expect: "), path.name
        assert read_header(path).expected, f"{path.name} states no '# expect:'"


@pytest.mark.parametrize("path", invalid_files(), ids=lambda p: p.stem)
def test_invalid_config_reports_its_expected_problems(path: Path) -> None:
    header = read_header(path)
    found = problems_of(path, header.env)
    shown = "\n".join(found)
    for want in header.expected:
        holders = [p for p in found if want.substring in p]
        assert holders, f"expected {want.substring!r} in:\n{shown}"
        if want.at:
            prefix = f"{path}:{want.at[0]}:{want.at[1]}: "
            where = f"expected {want.substring!r} at {prefix!r}:\n{shown}"
            assert any(p.startswith(prefix) for p in holders), where
    if header.count is not None:
        assert len(found) == header.count, shown


def _format_cases() -> list[Any]:
    return [p for p in invalid_files()]


@pytest.mark.parametrize("path", _format_cases(), ids=lambda p: p.stem)
def test_invalid_config_problem_lines_have_one_shape(path: Path) -> None:
    for problem in problems_of(path, read_header(path).env):
        assert (
            LOCATED.match(problem)
            or FROM_ENV.match(problem)
            or (FILE_LEVEL.match(problem) and not problem.startswith(f"{path}:"))
        ), problem


def test_three_mistakes_are_all_reported_in_file_order() -> None:
    path = INVALID / "three-mistakes.yaml"
    found = problems_of(path)
    assert [p.split(": ")[1] for p in found] == [
        "tasks.send_email.queue",
        "workers.initial_cout",
        "schedules.nightly_report.cron",
    ]
    lines = [int(p[len(str(path)) + 1 :].split(":")[0]) for p in found]
    assert lines == sorted(lines)


def test_env_problem_names_the_variable_not_the_file() -> None:
    path = INVALID / "env-override-not-an-integer.yaml"
    (problem,) = problems_of(path, {"TASK_QUEUE_WORKERS": "many"})
    assert problem.startswith("$TASK_QUEUE_WORKERS: workers.initial_count: ")
    assert config.load(path, env={}).workers.initial_count == 2


def test_a_webhook_secret_never_appears_in_a_problem(tmp_path: Path) -> None:
    """A secret written as a number (or a list, a mapping) is named, never echoed, in every message."""
    path = INVALID / "webhook-secret-a-number.yaml"
    text = path.read_text("utf-8").replace('["../../.."]', json.dumps([str(REPO)]))
    for secret in ("98765432123", "[98765432123, 5]", "{key: 98765432123}"):
        variant = tmp_path / "task-queue.yaml"
        variant.write_text(text.replace("secret: 98765432123", f"secret: {secret}"), "utf-8")
        found = problems_of(variant)
        assert found and all("webhooks.ops.secret" in p for p in found), found
        assert not any("98765432123" in p for p in found), found


def test_import_checks_can_be_skipped() -> None:
    cfg = config.load(INVALID / "task-path-does-not-import.yaml", env={}, import_tasks=False)
    assert cfg.tasks["send_email"].path == "jobs.mail:send_email"


def test_zero_byte_file_is_reported_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "task-queue.yaml"
    path.write_bytes(b"")
    (problem,) = problems_of(path)
    assert problem == f"{path}:1:1: $: the file is empty; it needs at least a 'tasks:' section"


def test_missing_file_is_one_file_level_problem(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    (problem,) = problems_of(path)
    assert problem == f"{path}: cannot read config file: No such file or directory"
    assert FILE_LEVEL.match(problem)


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("tasks:\n  caf\xe9: {path: 'json:dumps'}\n".encode("latin-1"))
    (problem,) = problems_of(path)
    assert problem == f"{path}: not UTF-8 text (byte 12)"


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (config.MAX_FILE_BYTES + 1))
    (problem,) = problems_of(path)
    assert problem.endswith(f"config file is larger than {config.MAX_FILE_BYTES} bytes")


def test_alias_bomb_stops_early(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    head = "tasks:\n  t: {path: 'json:dumps'}\nschedules:\n  s:\n    task: t\n    every: 1s\n    kwargs:\n"
    path.write_text(head + "".join(f"      {level}\n" for level in levels), "utf-8")
    (problem,) = problems_of(path)
    assert "more than 100000 YAML nodes" in problem


# --- edge cases found while writing these tests ----------------------------------------------------------


def test_duration_with_leading_dot_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "dot.yaml"
    path.write_text("tasks:\n  t: {path: 'json:dumps', timeout: .5s}\n", "utf-8")
    (problem,) = problems_of(path)
    assert "tasks.t.timeout: expected a duration above zero" in problem


def test_zero_payload_size_string_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "size.yaml"
    path.write_text("tasks:\n  t: {path: 'json:dumps'}\nlimits: {max_payload_size: '0'}\n", "utf-8")
    (problem,) = problems_of(path)
    assert "limits.max_payload_size" in problem


def test_path_without_colon_is_reported_once() -> None:
    path = INVALID / "task-path-no-colon.yaml"
    (problem,) = problems_of(path)
    assert "invalid task path" in problem


def test_bad_queue_name_is_located_at_its_key() -> None:
    path = INVALID / "bad-queue-name.yaml"
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:6:3: ")


def test_yaml_level_problem_does_not_hide_the_others(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("tasks:\n  t: {path: 'json:dumps', queue: hihg}\n  t: {path: 'json:loads'}\n", "utf-8")
    found = problems_of(path)
    assert any("duplicate key 't'" in p for p in found)
    assert any("unknown queue 'hihg'" in p for p in found)


# --- the valid examples --------------------------------------------------------------------------------


def test_valid_examples_cover_enough() -> None:
    assert len(list(VALID.glob("*.yaml"))) >= 6


@pytest.mark.parametrize("path", sorted(VALID.glob("*.yaml")) + EXAMPLES, ids=lambda p: p.stem)
def test_valid_config_loads_and_its_tasks_resolve(path: Path) -> None:
    cfg = config.load(path, env=env_for(path))
    tasks = registry.build(cfg)
    assert set(tasks.tasks) == set(cfg.tasks)
    known = {q.name for q in cfg.queues}
    assert all(t.queue in known for t in cfg.tasks.values())


def load_valid(name: str, env: dict[str, str] | None = None) -> config.Config:
    return config.load(VALID / name, env={} if env is None else env)


def test_minimal_config_gets_every_default() -> None:
    cfg = load_valid("minimal.yaml")
    assert [(q.name, q.priority, q.max_length) for q in cfg.queues] == [
        ("high_priority", 10, None),
        ("default", 5, None),
        ("low_priority", 1, None),
    ]
    assert cfg.tasks["dump"] == config.TaskConfig(
        name="dump",
        path="json:dumps",
        queue="default",
        max_retries=3,
        timeout_s=300.0,
        retry_backoff=config.Backoff(1.0, 300.0, True),
        result_ttl_s=3600.0,
    )
    assert cfg.redis.url == config.DEFAULT_REDIS_URL
    assert (cfg.redis.pool_size, cfg.redis.key_prefix, cfg.redis.cluster) == (10, "tq", False)
    assert (cfg.redis.sentinel, cfg.redis.tls, cfg.redis.embedded) == (None, None, None)
    assert cfg.workers == config.WorkersConfig(2, 10, 5.0, 30.0)
    assert (cfg.autoscaler.enabled, cfg.autoscaler.min_workers, cfg.autoscaler.max_workers) == (True, 2, 8)
    assert cfg.scheduler == config.SchedulerConfig(True, 1.0, 100)
    assert cfg.schedules == ()
    assert cfg.http == config.HttpConfig(True, "127.0.0.1", 8080, "/tasks", True, True, "")
    assert cfg.dead_letter == config.DeadLetterConfig(10000, 7 * 86400.0)
    assert cfg.max_payload_bytes == 1 << 20
    assert cfg.python_path == (VALID,)


def test_all_sections_are_converted() -> None:
    cfg = load_valid("all-sections.yaml")
    # highest priority first; equal priorities in name order
    assert [q.name for q in cfg.queues] == ["critical", "default", "emails", "bulk"]
    assert cfg.queue("bulk") == config.QueueConfig("bulk", -5, 50000)
    assert cfg.redis.url == "rediss://cache.internal:6380/2"
    assert cfg.redis.tls == config.TlsConfig(VALID / "certs" / "ca.crt", None, None, False)
    assert (cfg.redis.pool_size, cfg.redis.key_prefix, cfg.redis.embedded) == (25, "shop", False)
    assert cfg.redis.embedded_data_dir == VALID / "redis-data"
    assert cfg.python_path == (REPO, REPO / "jobs")
    assert cfg.workers == config.WorkersConfig(3, 16, 2.0, 45.0)
    assert cfg.autoscaler == config.AutoscalerConfig(True, 2, 6, 8.0, 2.0, 3, 2, 10.0, 60.0)
    assert cfg.scheduler == config.SchedulerConfig(True, 0.5, 250)
    assert cfg.http == config.HttpConfig(True, "0.0.0.0", 9000, "/api/v1", False, True, "not-a-real-token")
    assert cfg.dead_letter == config.DeadLetterConfig(500, 86400.0)
    assert cfg.max_payload_bytes == 256 * 1024
    (nightly,) = cfg.schedules
    assert nightly == config.ScheduleConfig(
        name="nightly_report",
        task="build_report",
        cron="0 3 * * *",
        every_s=None,
        args=(),
        kwargs=MappingProxyType({"kind": "nightly"}),
        queue="bulk",
        timezone="UTC",
        misfire_grace_s=300.0,
        catch_up=True,
        jitter_s=30.0,
        enabled=False,
    )


def test_task_inherits_defaults_and_merges_backoff_key_by_key() -> None:
    cfg = load_valid("all-sections.yaml")
    inherited, own = cfg.tasks["build_report"], cfg.tasks["send_email"]
    assert (inherited.queue, inherited.max_retries, inherited.timeout_s, inherited.result_ttl_s) == (
        "default",
        5,
        120.0,
        86400.0,
    )
    assert inherited.retry_backoff == config.Backoff(2.0, 600.0, False)
    assert (own.queue, own.max_retries, own.timeout_s, own.result_ttl_s) == ("emails", 0, 30.0, 0.0)
    # base from the task; max and jitter from defaults
    assert own.retry_backoff == config.Backoff(0.5, 600.0, False)


def test_partial_defaults_are_completed_from_the_schema() -> None:
    task = load_valid("durations.yaml").tasks["fast"]
    assert task.retry_backoff == config.Backoff(1.0, 60.0, True)  # defaults.retry_backoff only sets max


def test_durations_in_every_form() -> None:
    cfg = load_valid("durations.yaml")
    fast, slow, plain, unitless = (cfg.tasks[n] for n in ("fast", "slow", "plain", "unitless"))
    assert (fast.timeout_s, fast.result_ttl_s) == (0.25, 0.0)
    assert (slow.timeout_s, slow.result_ttl_s) == (5400.0, 7 * 86400.0)
    assert (plain.timeout_s, plain.result_ttl_s) == (45.0, 0.5)
    assert (unitless.timeout_s, unitless.result_ttl_s) == (90.0, 120.0)
    assert cfg.workers.heartbeat_interval_s == 0.5
    assert cfg.workers.shutdown_grace_period_s == 0.0
    assert (cfg.autoscaler.interval_s, cfg.autoscaler.cooldown_s) == (2.0, 60.0)
    assert cfg.scheduler.tick_interval_s == 0.2
    assert (cfg.redis.connection_timeout_s, cfg.redis.command_timeout_s) == (1.5, 0.75)
    assert cfg.dead_letter.max_age_s == 30 * 86400.0
    assert cfg.max_payload_bytes == 512 * 1024
    (ping,) = cfg.schedules
    assert (ping.every_s, ping.misfire_grace_s, ping.jitter_s) == (90.0, 10.0, 0.25)
    assert all(isinstance(v, float) for v in (fast.result_ttl_s, plain.timeout_s, ping.every_s))


def test_worker_recycling_limits_are_off_unless_set() -> None:
    workers = load_valid("minimal.yaml").workers
    assert (workers.max_tasks_per_child, workers.max_memory_per_child_bytes) == (None, None)
    recycling = load_valid("recycling.yaml").workers
    assert (recycling.max_tasks_per_child, recycling.max_memory_per_child_bytes) == (10000, 512 << 20)


@pytest.mark.parametrize(
    ("written", "size"),
    [("1GiB", 1 << 30), ("300MB", 300 * 10**6), ("64KiB", 65536), ("1048576", 1 << 20), ("2000000", 2000000)],
)
def test_max_memory_per_child_takes_sizes_and_plain_bytes(tmp_path: Path, written: str, size: int) -> None:
    path = tmp_path / "memory.yaml"
    path.write_text(f"tasks:\n  t: {{path: 'json:dumps'}}\nworkers: {{max_memory_per_child: {written}}}\n", "utf-8")
    assert config.load(path, env={}).workers.max_memory_per_child_bytes == size


def test_env_defaults_apply_when_variables_are_unset() -> None:
    cfg = load_valid("env-expansion.yaml")
    assert cfg.redis.url == "redis://127.0.0.1:6379/3"
    assert (cfg.redis.pool_size, cfg.redis.key_prefix, cfg.redis.command_timeout_s) == (12, "tq", 1.5)
    assert (cfg.http.port, cfg.http.enabled, cfg.http.auth_token) == (8081, True, "")
    (ping,) = cfg.schedules
    assert dict(ping.kwargs) == {"target": "db", "note": "costs $5", "raw": "${NOT_EXPANDED}"}


def test_env_values_are_expanded_and_typed_by_the_schema() -> None:
    env = {
        "TQ_REDIS_URL": "redis://cache:6379/9",
        "TQ_POOL": "40",
        "TQ_PREFIX": "",
        "TQ_CMD_TIMEOUT": "3",
        "TQ_HTTP_PORT": "9100",
        "TQ_HTTP": "false",
        "TQ_TOKEN": "12345",
        "TQ_PING_TARGET": "cache",
    }
    cfg = load_valid("env-expansion.yaml", env)
    assert cfg.redis.url == "redis://cache:6379/9"
    assert cfg.redis.pool_size == 40 and type(cfg.redis.pool_size) is int
    assert cfg.http.port == 9100 and type(cfg.http.port) is int
    assert cfg.http.enabled is False
    assert cfg.http.auth_token == "12345"  # a string field stays a string, digits or not
    assert cfg.redis.command_timeout_s == 3.0
    assert cfg.schedules[0].kwargs["target"] == "cache"


def test_set_but_empty_variable_uses_the_default_only_with_colon_dash(tmp_path: Path) -> None:
    path = tmp_path / "empty-var.yaml"
    path.write_text(
        "redis:\n  key_prefix: ${TQ_PREFIX-fallback}\n"
        "http:\n  auth_token: ${TQ_TOKEN:-fallback}\n"
        "tasks:\n  t: {path: 'json:dumps'}\n",
        "utf-8",
    )
    cfg = config.load(path, env={"TQ_PREFIX": "p", "TQ_TOKEN": ""})
    assert (cfg.redis.key_prefix, cfg.http.auth_token) == ("p", "fallback")
    (problem,) = problems_of(path, {"TQ_PREFIX": ""})  # an empty key_prefix is not allowed
    assert "redis.key_prefix" in problem


def test_environment_overrides_win_over_the_file() -> None:
    env = {
        "REDIS_URL": "rediss://override.internal:6380/4",
        "REDIS_POOL_SIZE": "42",
        "REDIS_CONNECTION_TIMEOUT": "250ms",
        "REDIS_COMMAND_TIMEOUT": "2",
        "TASK_QUEUE_WORKERS": "5",
        "TASK_QUEUE_SCHEDULER": "false",
    }
    file_only = load_valid("all-sections.yaml")
    cfg = load_valid("all-sections.yaml", env)
    assert (file_only.redis.url, file_only.redis.pool_size, file_only.workers.initial_count) == (
        "rediss://cache.internal:6380/2",
        25,
        3,
    )
    assert cfg.redis.url == "rediss://override.internal:6380/4"
    assert cfg.redis.pool_size == 42 and type(cfg.redis.pool_size) is int
    assert (cfg.redis.connection_timeout_s, cfg.redis.command_timeout_s) == (0.25, 2.0)
    assert cfg.workers.initial_count == 5 and type(cfg.workers.initial_count) is int
    assert cfg.scheduler.enabled is False


def test_environment_override_creates_a_missing_section() -> None:
    cfg = load_valid("minimal.yaml", {"TASK_QUEUE_WORKERS": "4", "TASK_QUEUE_SCHEDULER": "true"})
    assert cfg.workers.initial_count == 4
    assert cfg.scheduler.enabled is True


def test_environment_override_is_checked_like_the_file() -> None:
    found = problems_of(VALID / "minimal.yaml", {"TASK_QUEUE_WORKERS": "20", "REDIS_POOL_SIZE": "0"})
    assert found == (
        "$REDIS_POOL_SIZE: redis.pool_size: must be >= 1, got 0",
        "$TASK_QUEUE_WORKERS: workers.initial_count: initial_count (20) is above autoscaler max_workers (8)",
    )


def test_min_workers_defaults_to_the_worker_count_the_user_set() -> None:
    """The autoscaler never undoes an explicit count: it scales up from it and back down to it."""
    assert load_valid("minimal.yaml").autoscaler.min_workers == 2  # workers.initial_count's default
    assert load_valid("minimal.yaml", {"TASK_QUEUE_WORKERS": "4"}).autoscaler.min_workers == 4
    assert load_valid("all-sections.yaml").autoscaler.min_workers == 2  # explicit: it wins
    assert load_valid("all-sections.yaml", {"TASK_QUEUE_WORKERS": "5"}).autoscaler.min_workers == 2


def test_anchors_and_merge_keys() -> None:
    cfg = load_valid("anchors.yaml")
    email, bulk, notify = cfg.tasks["send_email"], cfg.tasks["send_bulk_email"], cfg.tasks["notify"]
    assert (bulk.path, bulk.timeout_s, bulk.queue, bulk.max_retries) == (email.path, 30.0, "default", 1)
    assert email.max_retries == 3
    fast = config.Backoff(0.1, 2.0, False)
    assert bulk.retry_backoff == email.retry_backoff == notify.retry_backoff == fast
    by_name = {s.name: s for s in cfg.schedules}
    assert by_name["ping_cache"].every_s == by_name["ping_db"].every_s == 60.0
    assert (dict(by_name["ping_db"].kwargs), dict(by_name["ping_cache"].kwargs)) == ({}, {"target": "cache"})


def test_merge_key_can_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "override.yaml"
    path.write_text(
        "tasks:\n  a: &a {path: 'json:dumps', queue: default}\n  b:\n    <<: *a\n    queue: low_priority\n", "utf-8"
    )
    cfg = config.load(path, env={})
    assert (cfg.tasks["b"].path, cfg.tasks["b"].queue) == ("json:dumps", "low_priority")


def test_class_task_is_instantiated_with_kwargs() -> None:
    cfg = load_valid("class-task.yaml")
    report = registry.build(cfg).tasks["build_report"]
    assert report.is_class and not report.is_async
    assert report.call((), {"kind": "weekly"})["report"] == "weekly"
    assert not registry.build(cfg).tasks["ping"].is_class


def test_six_field_cron_fires_on_seconds() -> None:
    by_name = {s.name: s for s in load_valid("cron-seconds.yaml").schedules}
    start = dt.datetime(2024, 5, 6, 12, 0, 1, tzinfo=dt.UTC)
    quarter = crontab.trigger(by_name["every_15s"].cron or "", by_name["every_15s"].timezone)
    assert quarter.get_next_fire_time(None, start) == start.replace(second=15)
    half_past = crontab.trigger(by_name["nightly_at_30s"].cron or "", by_name["nightly_at_30s"].timezone)
    assert half_past.get_next_fire_time(None, start) == dt.datetime(2024, 5, 7, 3, 0, 30, tzinfo=dt.UTC)


def test_schedule_time_zone_is_kept_and_used() -> None:
    (standup,) = load_valid("schedule-timezone.yaml").schedules
    assert (standup.timezone, standup.cron) == ("Europe/Paris", "30 9 * * 1-5")
    trigger = crontab.trigger(standup.cron or "", standup.timezone)
    friday_evening = dt.datetime(2024, 7, 5, 18, 0, tzinfo=dt.UTC)
    fire = trigger.get_next_fire_time(None, friday_evening)
    assert fire is not None
    assert fire.astimezone(dt.UTC) == dt.datetime(2024, 7, 8, 7, 30, tzinfo=dt.UTC)  # Monday 09:30 CEST


@pytest.mark.parametrize("path", sorted(VALID.glob("*.yaml")) + EXAMPLES, ids=lambda p: p.stem)
def test_the_checked_form_a_worker_reads_gives_the_same_config(path: Path) -> None:
    cfg, checked = config.load_checked(path, env=env_for(path))
    assert checked is not None
    assert config.from_checked(checked, path) == cfg


def test_the_checked_form_holds_what_the_environment_set() -> None:
    env = {"REDIS_URL": "redis://10.0.0.9:6390/2", "TASK_QUEUE_WORKERS": "3"}
    cfg, checked = config.load_checked(REPO / "task-queue.yaml", env=env)
    assert checked is not None
    restored = config.from_checked(checked, REPO / "task-queue.yaml")  # the worker's environment is not read
    assert (
        (restored.redis.url, restored.workers.initial_count)
        == ("redis://10.0.0.9:6390/2", 3)
        == (
            cfg.redis.url,
            cfg.workers.initial_count,
        )
    )


@pytest.mark.parametrize("value", ["!!binary aGVsbG8=", ".inf"])
def test_no_checked_form_for_a_value_json_cannot_carry(tmp_path: Path, value: str) -> None:
    """The worker then gets the YAML, as before."""
    path = tmp_path / "task-queue.yaml"
    path.write_text(
        'tasks:\n  dump: {path: "json:dumps"}\n'
        f"schedules:\n  odd: {{task: dump, every: 1h, args: [1], kwargs: {{value: {value}}}}}\n"
    )
    cfg, checked = config.load_checked(path, env={})
    assert checked is None
    assert cfg == config.load(path, env={})


def test_a_checked_form_of_another_version_is_refused() -> None:
    _, checked = config.load_checked(VALID / "minimal.yaml", env={})
    assert checked is not None
    with pytest.raises(ConfigError, match="checked configuration cannot be read"):
        config.from_checked(checked.replace(b'"format":1', b'"format":99'), VALID / "minimal.yaml")
    with pytest.raises(ConfigError, match="checked configuration cannot be read"):
        config.from_checked(b"tasks: {}", VALID / "minimal.yaml")


def test_config_is_frozen() -> None:
    cfg = load_valid("minimal.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers.initial_count = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.tasks["other"] = cfg.tasks["dump"]  # type: ignore[index]


@pytest.mark.parametrize("name", ["production.yaml", "cluster.yaml", "multi-host.yaml"])
def test_a_deployment_example_needs_its_redis_url_from_the_environment(name: str) -> None:
    """No placeholder address to connect to by mistake: an unset REDIS_URL is a problem at redis.url."""
    with pytest.raises(ConfigError) as raised:
        config.load(REPO / "conf" / name, env={}, import_tasks=False)
    assert any(
        re.match(r"^.*conf/[a-z-]+\.yaml:\d+:8: redis\.url: environment variable REDIS_URL is not set", p)
        for p in raised.value.problems
    ), raised.value.problems
    assert config.load(REPO / "conf" / name, env=EXAMPLE_ENV, import_tasks=False).redis.url == EXAMPLE_ENV["REDIS_URL"]


def test_sentinel_hosts_are_split_into_host_and_port() -> None:
    sentinel = config.load(REPO / "conf" / "sentinel.yaml", env={}).redis.sentinel
    assert sentinel is not None
    assert sentinel.service_name == "mymaster"
    assert [(type(host), type(port)) for host, port in sentinel.hosts] == [(str, int)] * len(sentinel.hosts)
    assert sentinel.hosts[0][1] == 26379


def test_a_job_module_named_like_the_standard_library_gets_the_reason(tmp_path: Path) -> None:
    """Issue 19, item 14: `email.py` beside the YAML loses to the standard library's `email` (on purpose);
    the error must say so, not only "has no attribute"."""
    (tmp_path / "email.py").write_text("def send_email(to):\n    return to\n", encoding="utf-8")
    path = tmp_path / "task-queue.yaml"
    path.write_text("tasks:\n  send: {path: 'email:send_email'}\n", encoding="utf-8")
    (problem,) = problems_of(path)
    assert "'email' has no attribute 'send_email': 'email' is the standard library's module" in problem
    assert re.search(r"\(\S+/email/__init__\.py\), not \S+/email\.py;", problem)  # which file won, which lost
    assert "give your module another name (e.g. email_tasks.py)" in problem
