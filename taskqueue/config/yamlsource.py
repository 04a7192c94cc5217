"""Safe YAML loading that remembers the line and column of every key and value, with ${VAR} expansion."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from taskqueue.errors import ConfigError

JsonPath = tuple[str | int, ...]

MAX_NODES = 100_000  # an alias bomb ("billion laughs") stops here instead of eating the machine
_VAR = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def dotted(path: JsonPath) -> str:
    """`("tasks", "send_email", "queue")` → `tasks.send_email.queue`; list items as `[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


@dataclass
class Document:
    """The plain data of a YAML file plus where each piece came from."""

    data: Any
    file: str
    value_marks: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    expanded: set[JsonPath] = field(default_factory=set)  # plain scalars that came from ${VAR}
    problems: list[str] = field(default_factory=list)  # found while reading; the data is still usable
    origins: dict[JsonPath, str] = field(default_factory=dict)  # values set outside the file (env)
    unset: list[JsonPath] = field(default_factory=list)  # left empty: a ${VAR} unset where unset_ok allowed it

    def where(self, path: JsonPath, *, key: bool = False) -> str:
        """`FILE:LINE:COL` of the path (its key when `key`), else of its nearest located parent."""
        probe = path
        while True:
            if probe in self.origins:
                return self.origins[probe]
            marks = (self.key_marks, self.value_marks) if key else (self.value_marks, self.key_marks)
            for table in marks:
                if probe in table:
                    line, col = table[probe]
                    return f"{self.file}:{line}:{col}"
            if not probe:
                return f"{self.file}:1:1"
            probe = probe[:-1]

    def problem(self, path: JsonPath, message: str, *, key: bool = False) -> str:
        return f"{self.where(path, key=key)}: {dotted(path)}: {message}"


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Expand `${VAR}`, `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset); `$$` is `$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name, op, default = match.group(2), match.group(3), match.group(4)
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        if value is None:
            raise KeyError(name)
        return value

    return _VAR.sub(one, text)


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, doc: Document, env: Mapping[str, str], unset_ok: bool) -> None:
        self.loader = loader
        self.doc = doc
        self.env = env
        self.unset_ok = unset_ok
        self.problems: list[str] = []
        self.nodes = 0

    def build(self, node: Node, path: JsonPath) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConfigError([f"{self.doc.file}: more than {MAX_NODES} YAML nodes (alias bomb?)"])
        self.doc.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node, path)

    def _mapping(self, node: MappingNode, path: JsonPath) -> dict[str, Any]:
        merge_tag = "tag:yaml.org,2002:merge"
        explicit = {id(k) for k, _ in node.value if k.tag != merge_tag}
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys the way PyYAML does
        out: dict[str, Any] = {}
        written: set[str] = set()  # keys written in this mapping itself (merged ones may be overridden)
        for key_node, value_node in node.value:
            mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            key = self.loader.construct_object(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                where = f"{self.doc.file}:{mark[0]}:{mark[1]}"
                shown = getattr(key_node, "value", "?")
                self.problems.append(f"{where}: {dotted(path)}: key {shown!r} must be a string (quote it)")
                continue
            if id(key_node) in explicit:
                if key in written:
                    where = f"{self.doc.file}:{mark[0]}:{mark[1]}"
                    self.problems.append(f"{where}: {dotted((*path, key))}: duplicate key '{key}'")
                    continue
                written.add(key)
            self.doc.key_marks[(*path, key)] = mark
            out[key] = self.build(value_node, (*path, key))
        return out

    def _scalar(self, node: ScalarNode, path: JsonPath) -> Any:
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # dates stay strings; no field of ours is a date
        value = self.loader.construct_object(node)
        if isinstance(value, str) and "$" in value:
            try:
                value = expand_vars(value, self.env)
            except KeyError as missing:
                if self.unset_ok and path[:1] != ("redis",):
                    self.doc.unset.append(path)
                    return ""
                self.problems.append(
                    self.doc.problem(
                        path,
                        f"environment variable {missing.args[0]} is not set "
                        f"(use ${{{missing.args[0]}:-default}} for a fallback)",
                    )
                )
            if node.style is None:
                self.doc.expanded.add(path)
        return value


def load(text: str, file: str, env: Mapping[str, str], *, unset_ok: bool = False) -> Document:
    """Parse one YAML document safely; every problem is reported as `FILE:LINE:COL: path: message`. With
    `unset_ok` (an admin command: it needs Redis, not a webhook's secret), a `${VAR}` unset outside `redis:` is
    not a problem: its value is empty, and `doc.unset` says where."""
    doc = Document(data=None, file=file)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError([f"{file}:1:1: $: the file is empty; it needs at least a 'tasks:' section"])
        builder = _Builder(loader, doc, env, unset_ok)
        doc.data = builder.build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if "'\\t'" in problem or "\t" in problem:
            problem += " (YAML does not allow tabs for indentation: use spaces)"
        raise ConfigError([f"{file}:{line}:{col}: $: YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}:1:1: $: YAML error: {exc}"]) from None
    finally:
        loader.dispose()
    doc.problems = builder.problems
    return doc
