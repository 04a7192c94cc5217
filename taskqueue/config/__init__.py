"""YAML → schema → semantic checks → frozen dataclasses. No dicts of configuration past this module."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from taskqueue import canvas
from taskqueue.errors import ConfigError

if TYPE_CHECKING:  # imported by load(): a worker process reads the checked form and never loads YAML or the schema
    from taskqueue.config import yamlsource

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_FILE_BYTES = 1 << 20
CHECKED_FORMAT = 1  # the version of the checked form (load_checked, from_checked)

# The seed's environment variables, which override the file (highest priority).
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "REDIS_URL": ("redis", "url"),
        "REDIS_POOL_SIZE": ("redis", "pool_size"),
        "REDIS_CONNECTION_TIMEOUT": ("redis", "connection_timeout"),
        "REDIS_COMMAND_TIMEOUT": ("redis", "command_timeout"),
        "TASK_QUEUE_WORKERS": ("workers", "initial_count"),
        "TASK_QUEUE_SCHEDULER": ("scheduler", "enabled"),
    }
)

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*([0-9]+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "KiB": 1 << 10,
    "MB": 10**6,
    "MiB": 1 << 20,
    "GB": 10**9,
    "GiB": 1 << 30,
}


def cluster_url(url: str) -> tuple[str, bool]:
    """`redis+cluster://…` / `rediss+cluster://…` → (the plain redis:// or rediss:// URL, True)."""
    for scheme in ("redis", "rediss"):
        if url.startswith(f"{scheme}+cluster://"):
            return scheme + url[len(scheme) + 8 :], True
    return url, False


def seconds(value: float | str) -> float:
    """`250ms` → 0.25, `5m` → 300.0; a number is already seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def size_bytes(value: int | str) -> int:
    """`512KiB` → 524288; a number is already bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class SentinelConfig:
    service_name: str
    hosts: tuple[tuple[str, int], ...]
    password: str | None


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    verify: bool


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str
    pool_size: int
    connection_timeout_s: float
    command_timeout_s: float
    key_prefix: str
    cluster: bool
    sentinel: SentinelConfig | None
    tls: TlsConfig | None
    embedded: bool | None  # None = auto: only when url is the default and nothing answers
    embedded_data_dir: Path


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    priority: int
    max_length: int | None


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float
    max_s: float
    jitter: bool


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `count` starts in any window of `window_s` seconds (`text`: as written, e.g. "10/s")."""

    count: int
    window_s: float
    text: str


@dataclass(frozen=True, slots=True)
class Limits:
    """A task's deployment-wide start limits (SPEC §11); `*_key` names the kwarg that splits the budget."""

    rates: tuple[Rate, ...] = ()
    rate_key: str | None = None
    concurrency: int | None = None
    concurrency_key: str | None = None


@dataclass(frozen=True, slots=True)
class TaskConfig:
    name: str
    path: str
    queue: str
    max_retries: int
    timeout_s: float
    retry_backoff: Backoff
    result_ttl_s: float
    unique_for_s: float | None = None
    limits: Limits | None = None
    events: bool = False  # its lifecycle events go to the events stream (its own `events:`, else events.enabled)


@dataclass(frozen=True, slots=True)
class WorkersConfig:
    initial_count: int
    max_concurrent_tasks: int
    heartbeat_interval_s: float
    shutdown_grace_period_s: float
    max_tasks_per_child: int | None = None  # None: no limit
    max_memory_per_child_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    enabled: bool
    min_workers: int
    max_workers: int
    scale_up_threshold: float
    scale_down_threshold: float
    scale_up_count: int
    scale_down_count: int
    interval_s: float
    cooldown_s: float


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    enabled: bool
    tick_interval_s: float
    max_tasks_per_tick: int


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    name: str
    task: str
    cron: str | None
    every_s: float | None
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    queue: str | None
    timezone: str
    misfire_grace_s: float
    catch_up: bool
    jitter_s: float
    enabled: bool


@dataclass(frozen=True, slots=True)
class HttpConfig:
    enabled: bool
    host: str
    port: int
    route_prefix: str
    enable_metrics: bool
    enable_health_check: bool
    auth_token: str
    allowed_hosts: tuple[str, ...] = ()  # lower case


@dataclass(frozen=True, slots=True)
class DeadLetterConfig:
    max_size: int
    max_age_s: float


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """The lifecycle events stream (SPEC §13): `enabled` is the default of every task's `events`."""

    enabled: bool = False
    max_len: int = 100000
    max_backlog: int = 1000000  # with webhooks: the most entries kept for a webhook that lags (never < max_len)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One `webhooks:` entry: matching lifecycle events POSTed to `url`, signed with `secret`."""

    name: str
    url: str
    secret: str
    events: frozenset[str] | None = None  # None: every event
    tasks: frozenset[str] | None = None  # None: every task with events on
    timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0

    def wants(self, event: Mapping[str, Any]) -> bool:
        return (self.events is None or event.get("event") in self.events) and (
            self.tasks is None or event.get("task") in self.tasks
        )


@dataclass(frozen=True, slots=True)
class Config:
    source: Path
    redis: RedisConfig
    python_path: tuple[Path, ...]
    queues: tuple[QueueConfig, ...]  # highest priority first
    tasks: Mapping[str, TaskConfig]
    workers: WorkersConfig
    autoscaler: AutoscalerConfig
    scheduler: SchedulerConfig
    schedules: tuple[ScheduleConfig, ...]
    http: HttpConfig
    dead_letter: DeadLetterConfig
    max_payload_bytes: int
    max_delay_s: float
    workflows: Mapping[str, canvas.Flow] = field(default_factory=lambda: MappingProxyType({}))
    django_settings: str | None = None  # `django: {settings: ...}`: django.setup() before importing tasks
    events: EventsConfig = EventsConfig()
    webhooks: tuple[WebhookConfig, ...] = ()

    @property
    def events_cap(self) -> int:
        """The length every XADD trims the events stream to (MAXLEN ~): `max_len`; with webhooks `max_backlog`,
        and the runners trim it to about `max_len` past what every webhook has read (runner/webhooks.py)."""
        return max(self.events.max_len, self.events.max_backlog) if self.webhooks else self.events.max_len

    @property
    def event_tasks(self) -> tuple[str, ...]:
        """The tasks whose lifecycle events are written (most deployments: none)."""
        return tuple(name for name, t in self.tasks.items() if t.events)

    def queue(self, name: str) -> QueueConfig:
        return next(q for q in self.queues if q.name == name)

    def queue_of(self, name: str) -> str:
        """The queue a message naming `name` goes to: a task's own, or a workflow's first step's."""
        if name in self.tasks:
            return self.tasks[name].queue
        first = canvas.lay_out(self.workflows[name]).steps[0][0].task
        return self.tasks[first].queue


def read(path: str | os.PathLike[str]) -> bytes:
    """The config file's bytes; a missing or unreadable file is a ConfigError, not a traceback."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from None


def load(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    import_tasks: bool = True,
    raw: bytes | None = None,
    unset_ok: bool = False,
) -> Config:
    """Read (or take `raw`), validate and convert a config file; raises ConfigError listing every problem.
    `unset_ok`: for a command that uses Redis and nothing the runner alone needs (status, dead, events…), a
    `${VAR}` unset outside `redis:` is empty instead of a problem (as Celery's and RQ's admin commands need only
    the broker's URL)."""
    data, file, base_dir = _check(path, env, import_tasks=import_tasks, raw=raw, unset_ok=unset_ok)
    return _build(data, file, base_dir)


def load_checked(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    import_tasks: bool = True,
    raw: bytes | None = None,
) -> tuple[Config, bytes | None]:
    """`load`, and the checked data (expanded, overridden from the environment, with every default) as the
    compact form a worker process reads instead of the YAML (`from_checked`): it skips the YAML parser, the
    schema and the checks the runner has just run. None when the data does not survive a JSON round trip
    unchanged (a YAML-only value in a schedule's arguments, say): the worker then gets the YAML."""
    data, file, base_dir = _check(path, env, import_tasks=import_tasks, raw=raw)
    config = _build(data, file, base_dir)
    try:
        text = json.dumps({"format": CHECKED_FORMAT, "data": data}, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return config, None
    return config, (text.encode("utf-8") if json.loads(text)["data"] == data else None)


def from_checked(checked: bytes, path: str | os.PathLike[str]) -> Config:
    """The Config of `load_checked`'s compact form (the runner's, on a worker's stdin); `path` names the
    YAML it came from (its folder resolves the relative paths, as `load` does). Nothing is checked again."""
    file = Path(path)
    try:
        wire = json.loads(checked)
        if wire.get("format") != CHECKED_FORMAT:
            raise ValueError(f"format {wire.get('format')!r}, this version reads {CHECKED_FORMAT}")
        return _build(wire["data"], file, file.resolve().parent)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError([f"{path}: the runner's checked configuration cannot be read: {exc!r}"]) from None


def _check(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None,
    *,
    import_tasks: bool,
    raw: bytes | None,
    unset_ok: bool = False,
) -> tuple[dict[str, Any], Path, Path]:
    """The checked data of a config file with its path and folder; raises ConfigError listing every problem."""
    from taskqueue.config import checks, validation, yamlsource  # YAML, the JSON Schema, cron: only here

    env = os.environ if env is None else env
    file = Path(path)
    shown = str(path)
    raw = read(path) if raw is None else raw
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{shown}: config file is larger than {MAX_FILE_BYTES} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{shown}: not UTF-8 text (byte {exc.start})"]) from None
    doc = yamlsource.load(text, shown, env, unset_ok=unset_ok)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), f"expected a mapping of sections, got {type(doc.data).__name__}")])
    _apply_env(doc, env)
    for expanded in doc.expanded:
        _set(doc.data, expanded, validation.coerce_scalar(expanded, _get(doc.data, expanded)))
    found = doc.problems + list(validation.problems(doc))
    validation.apply_defaults(doc.data)
    base_dir = file.resolve().parent
    found += checks.semantic(doc, base_dir, import_tasks=import_tasks)
    if doc.unset:  # what an empty value there makes wrong does not concern the command at hand
        unset = tuple(yamlsource.dotted(p) for p in doc.unset)
        found = [p for p in found if not _at(p).startswith(unset)]
    if found:
        raise ConfigError(sorted(found, key=_file_order))
    return doc.data, file, base_dir


def _at(problem: str) -> str:
    """The dotted path of a located problem (`FILE:LINE:COL: path: message`)."""
    match = re.match(r"^.*?:\d+:\d+: (\S+): ", problem)
    return match.group(1) if match else ""


def _file_order(problem: str) -> tuple[int, int]:
    match = re.match(r"^.*?:(\d+):(\d+): ", problem)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _get(data: Any, path: yamlsource.JsonPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: yamlsource.JsonPath, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


def _apply_env(doc: yamlsource.Document, env: Mapping[str, str]) -> None:
    from taskqueue.config import validation

    for name, (section, key) in ENV_OVERRIDES.items():
        if name not in env:
            continue
        holder = doc.data.setdefault(section, {})
        if isinstance(holder, dict):
            holder[key] = validation.coerce_scalar((section, key), env[name])
            doc.origins[(section, key)] = f"${name}"


def _build(data: dict[str, Any], source: Path, base_dir: Path) -> Config:
    defaults = data["defaults"]
    queues = sorted(
        (QueueConfig(name, q["priority"], q["max_length"]) for name, q in data["queues"].items()),
        key=lambda q: (-q.priority, q.name),
    )
    events = data["events"]
    tasks = {name: _task(name, t, defaults, events["enabled"]) for name, t in data["tasks"].items()}
    w, a, s, h, r = data["workers"], data["autoscaler"], data["scheduler"], data["http"], data["redis"]
    return Config(
        source=source,
        redis=_redis(r, base_dir),
        python_path=tuple((base_dir / p).resolve() for p in data["python_path"]),
        queues=tuple(queues),
        tasks=MappingProxyType(tasks),
        workers=WorkersConfig(
            w["initial_count"],
            w["max_concurrent_tasks"],
            seconds(w["heartbeat_interval"]),
            seconds(w["shutdown_grace_period"]),
            w.get("max_tasks_per_child"),
            size_bytes(w["max_memory_per_child"]) if "max_memory_per_child" in w else None,
        ),
        autoscaler=AutoscalerConfig(
            a["enabled"],
            a.get("min_workers", w["initial_count"]),  # by default never below the count the user set
            a["max_workers"],
            float(a["scale_up_threshold"]),
            float(a["scale_down_threshold"]),
            a["scale_up_count"],
            a["scale_down_count"],
            seconds(a["interval"]),
            seconds(a["cooldown"]),
        ),
        scheduler=SchedulerConfig(s["enabled"], seconds(s["tick_interval"]), s["max_tasks_per_tick"]),
        schedules=tuple(_schedule(name, sc) for name, sc in data["schedules"].items()),
        http=HttpConfig(
            h["enabled"],
            h["host"],
            h["port"],
            h["route_prefix"].rstrip("/") or "/",
            h["enable_metrics"],
            h["enable_health_check"],
            h["auth_token"],
            tuple(name.lower() for name in h["allowed_hosts"]),
        ),
        dead_letter=DeadLetterConfig(data["dead_letter"]["max_size"], seconds(data["dead_letter"]["max_age"])),
        max_payload_bytes=size_bytes(data["limits"]["max_payload_size"]),
        max_delay_s=seconds(data["limits"]["max_delay"]),
        workflows=MappingProxyType({name: flow_of(raw) for name, raw in data["workflows"].items()}),
        events=EventsConfig(events["enabled"], events["max_len"], events["max_backlog"]),
        django_settings=data["django"]["settings"] if "django" in data else None,
        webhooks=tuple(_webhook(name, w) for name, w in data["webhooks"].items()),
    )


def _webhook(name: str, raw: Mapping[str, Any]) -> WebhookConfig:
    backoff = raw.get("retry_backoff", {})
    return WebhookConfig(
        name=name,
        url=raw["url"],
        secret=raw["secret"],
        events=frozenset(raw["events"]) if "events" in raw else None,
        tasks=frozenset(raw["tasks"]) if "tasks" in raw else None,
        timeout_s=seconds(raw.get("timeout", "10s")),
        max_attempts=raw.get("max_attempts", 8),
        backoff_base_s=seconds(backoff.get("base", "1s")),
        backoff_max_s=seconds(backoff.get("max", "5m")),
    )


def flow_of(raw: Any) -> canvas.Flow:
    """A YAML workflow part (validated) as a canvas value."""
    if isinstance(raw, str):
        return canvas.step(raw)
    if "task" in raw:
        return canvas.Step(raw["task"], tuple(raw.get("args", ())), MappingProxyType(dict(raw.get("kwargs", {}))))
    if "chain" in raw:
        return canvas.chain(*(flow_of(part) for part in raw["chain"]))
    if "group" in raw:
        return canvas.group([flow_of(part) for part in raw["group"]])
    return canvas.chord([flow_of(part) for part in raw["chord"]["header"]], flow_of(raw["chord"]["callback"]))


def _task(name: str, raw: Mapping[str, Any], defaults: Mapping[str, Any], events: bool) -> TaskConfig:
    backoff = {**defaults["retry_backoff"], **raw.get("retry_backoff", {})}
    return TaskConfig(
        name=name,
        path=raw["path"],
        queue=raw.get("queue", defaults["queue"]),
        max_retries=raw.get("max_retries", defaults["max_retries"]),
        timeout_s=seconds(raw.get("timeout", defaults["timeout"])),
        retry_backoff=Backoff(seconds(backoff["base"]), seconds(backoff["max"]), backoff["jitter"]),
        result_ttl_s=seconds(raw.get("result_ttl", defaults["result_ttl"])),
        unique_for_s=seconds(raw["unique_for"]) if raw.get("unique_for") else None,
        limits=_limits(raw),
        events=raw.get("events", events),
    )


_WINDOWS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _limits(raw: Mapping[str, Any]) -> Limits | None:
    rate, concurrency = raw.get("rate_limit"), raw.get("concurrency")
    if rate is None and concurrency is None:
        return None
    rate_key = concurrency_key = None
    if isinstance(rate, Mapping):
        rate, rate_key = rate["limit"], rate.get("key")
    if isinstance(concurrency, Mapping):
        concurrency, concurrency_key = concurrency["limit"], concurrency.get("key")
    texts = [] if rate is None else ([rate] if isinstance(rate, str) else list(rate))
    rates = []
    for text in texts:
        count, _, unit = text.strip().partition("/")
        rates.append(Rate(int(count), _WINDOWS[unit.strip()], text.strip()))
    return Limits(tuple(rates), rate_key, concurrency, concurrency_key)


def _schedule(name: str, raw: Mapping[str, Any]) -> ScheduleConfig:
    return ScheduleConfig(
        name=name,
        task=raw.get("task") or raw["workflow"],  # one namespace: the fired message names either
        cron=raw.get("cron"),
        every_s=seconds(raw["every"]) if "every" in raw else None,
        args=tuple(raw["args"]),
        kwargs=MappingProxyType(dict(raw["kwargs"])),
        queue=raw["queue"],
        timezone=raw["timezone"],
        misfire_grace_s=seconds(raw["misfire_grace"]),
        catch_up=raw["catch_up"],
        jitter_s=seconds(raw["jitter"]),
        enabled=raw["enabled"],
    )


def _redis(raw: Mapping[str, Any], base_dir: Path) -> RedisConfig:
    sentinel = raw["sentinel"]
    tls = raw["tls"]

    def local(name: str) -> Path | None:
        return (base_dir / tls[name]).resolve() if tls and tls.get(name) else None

    embedded = raw["embedded"]["enabled"]
    return RedisConfig(
        url=raw["url"],
        pool_size=raw["pool_size"],
        connection_timeout_s=seconds(raw["connection_timeout"]),
        command_timeout_s=seconds(raw["command_timeout"]),
        key_prefix=raw["key_prefix"],
        cluster=raw["cluster"] or cluster_url(raw["url"])[1],
        sentinel=SentinelConfig(
            sentinel["service_name"],
            tuple((h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in sentinel["hosts"]),
            sentinel.get("password"),
        )
        if sentinel
        else None,
        tls=TlsConfig(local("ca_file"), local("cert_file"), local("key_file"), tls.get("verify", True))
        if tls
        else None,
        embedded=None if embedded == "auto" else bool(embedded),
        embedded_data_dir=(base_dir / raw["embedded"]["data_dir"]).resolve(),
    )
