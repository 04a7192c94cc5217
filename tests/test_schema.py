"""The JSON Schema is the contract: valid 2020-12, closed objects, described properties, sound defaults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from taskqueue.config import validation
from taskqueue.config.editor import editor_schema_text

REPO = Path(__file__).resolve().parent.parent
PACKAGE_COPY = REPO / "taskqueue" / "config" / "schema" / "task-queue.schema.json"
TOP_LEVEL_COPY = REPO / "schema" / "task-queue.schema.json"

Schema = dict[str, Any]


def root() -> Schema:
    loaded: Schema = json.loads(PACKAGE_COPY.read_text("utf-8"))
    return loaded


def target(ref: str) -> Schema:
    assert ref.startswith("#/"), f"only local refs are expected, got {ref}"
    node: Any = root()
    for part in ref[2:].split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def subschemas(node: Schema, where: str) -> Iterator[tuple[str, Schema]]:
    """Every schema object nested in `node` (itself included), with a readable location."""
    yield where, node
    for name, sub in node.get("properties", {}).items():
        yield from subschemas(sub, f"{where}.{name}")
    for name, sub in node.get("$defs", {}).items():
        yield from subschemas(sub, f"$defs.{name}")
    for keyword in ("additionalProperties", "items", "propertyNames", "not"):
        if isinstance(node.get(keyword), dict):
            yield from subschemas(node[keyword], f"{where}<{keyword}>")
    for keyword in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(node.get(keyword, ())):
            yield from subschemas(sub, f"{where}<{keyword}[{i}]>")


def properties() -> Iterator[tuple[str, Schema]]:
    for where, node in subschemas(root(), "$"):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}.{name}", sub


def described(node: Schema) -> bool:
    if node.get("description"):
        return True
    ref = node.get("$ref")
    return isinstance(ref, str) and described(target(ref))


def test_schema_is_a_valid_2020_12_schema() -> None:
    schema = root()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_walk_reaches_every_depth() -> None:
    found = {where for where, _ in properties()}
    assert "$.tasks<additionalProperties>.retry_backoff" in found
    assert "$defs.task_retry_backoff.jitter" in found
    assert "$.redis.sentinel.hosts" in found
    assert len(found) > 80


def test_every_property_has_a_description() -> None:
    missing = [where for where, sub in properties() if not described(sub)]
    assert missing == []


def test_every_definition_has_a_description() -> None:
    assert [name for name, sub in root()["$defs"].items() if not described(sub)] == []


def test_every_object_with_properties_is_closed() -> None:
    open_objects = [
        where
        for where, node in subschemas(root(), "$")
        if "properties" in node and node.get("additionalProperties") is not False
    ]
    assert open_objects == []


def test_top_level_copy_is_the_editor_flavour_of_the_package_copy() -> None:
    """schema/ (what the README's yaml-language-server line points editors at) is generated: regenerate with
    `./taskqueue.pex schema > schema/task-queue.schema.json`."""
    assert TOP_LEVEL_COPY.read_text("utf-8") == editor_schema_text(root())


EDITOR_CHECKED = [REPO / "task-queue.yaml", *sorted((REPO / "conf").glob("*.yaml"))]


@pytest.mark.parametrize("path", EDITOR_CHECKED, ids=lambda p: p.name)
def test_the_raw_files_pass_the_schema_as_an_editor_checks_them(path: Path) -> None:
    """Issue 16, defect 1: an editor validates the raw YAML, `${REDIS_URL:-redis://…}` unexpanded."""
    raw = yaml.safe_load(path.read_text("utf-8"))
    editor = Draft202012Validator(json.loads(TOP_LEVEL_COPY.read_text("utf-8")))
    assert [e.message for e in editor.iter_errors(raw)] == []


def test_the_editor_flavour_still_catches_mistakes() -> None:
    editor = Draft202012Validator(json.loads(TOP_LEVEL_COPY.read_text("utf-8")))
    assert editor.is_valid({"tasks": {"t": {"path": "a:b"}}, "http": {"port": "${PORT:-8080}"}})
    wrongs: list[dict[str, Any]] = [
        {"tasks": {"t": {"path": "a:b"}}, "http": {"port": "eighty"}},
        {"tasks": {"t": {"path": "a:b", "rate_limit": "fast"}}},
        {"tasks": {"t": {"path": "a:b", "queue": "default", "tiemout": 5}}},
        {"tasks": {}},
    ]
    for wrong in wrongs:
        assert not editor.is_valid(wrong), wrong


def test_package_loader_returns_the_same_schema() -> None:
    assert validation.schema() == root()
    assert validation.schema_text() == PACKAGE_COPY.read_text("utf-8")


def defaults() -> list[tuple[str, Schema]]:
    return [(where, sub) for where, sub in properties() if "default" in sub]


@pytest.mark.parametrize(("where", "sub"), defaults(), ids=[where for where, _ in defaults()])
def test_every_default_satisfies_its_own_schema(where: str, sub: Schema) -> None:
    own = {key: value for key, value in sub.items() if key != "default"}
    standalone = {**own, "$defs": root()["$defs"]}  # so that "#/$defs/..." still resolves
    errors = [e.message for e in Draft202012Validator(standalone).iter_errors(sub["default"])]
    assert errors == [], where


def test_defaults_are_found() -> None:
    assert len(defaults()) > 40


@pytest.mark.parametrize(
    "path", [REPO / "task-queue.yaml", *sorted((REPO / "conf").glob("*.yaml"))], ids=lambda p: p.name
)
def test_example_configs_satisfy_the_schema_as_written(path: Path) -> None:
    # ${VAR:-default} values are strings before expansion; the schema still accepts these files as written
    # wherever a string is allowed, and expansion happens in config.load (tested in test_config.py).
    data = yaml.safe_load(path.read_text("utf-8"))
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft202012Validator(root()).iter_errors(data)
        if "${" not in json.dumps(e.instance)
    ]
    assert errors == []
