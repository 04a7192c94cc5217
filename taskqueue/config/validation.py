"""The JSON Schema: loading it, checking raw YAML data against it, and turning its errors into located lines."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError

from taskqueue.config.yamlsource import Document, JsonPath, dotted

Schema = dict[str, Any]


@functools.cache
def schema() -> Schema:
    """The configuration schema shipped inside the package (also at schema/ in the repository)."""
    text = resources.files("taskqueue.config").joinpath("schema/task-queue.schema.json").read_text("utf-8")
    loaded: Schema = json.loads(text)
    return loaded


def schema_text() -> str:
    return resources.files("taskqueue.config").joinpath("schema/task-queue.schema.json").read_text("utf-8")


def _resolve(node: Schema) -> Schema:
    """Follow a local `$ref` (merging the referring node's own keywords, e.g. its description/default)."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = schema()
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(_resolve(target))
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def subschema(path: JsonPath) -> Schema | None:
    """The schema that governs the value at `path`, or None where the schema does not describe it."""
    node = _resolve(schema())
    for part in path:
        if isinstance(part, int):
            items = node.get("items")
            if not isinstance(items, dict):
                return None
            node = _resolve(items)
            continue
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        if part in props:
            node = _resolve(props[part])
        elif isinstance(extra, dict):
            node = _resolve(extra)
        else:
            return None
    return node


def _types(node: Schema) -> set[str]:
    declared = node.get("type")
    found = {declared} if isinstance(declared, str) else set(declared or ())
    for option in node.get("anyOf", ()):
        found |= _types(_resolve(option))
    return found


def coerce_scalar(path: JsonPath, value: Any) -> Any:
    """A string that came from the environment becomes an int/float/bool where the schema wants one."""
    node = subschema(path)
    if not isinstance(value, str) or (node is not None and "string" in _types(node)) or not value.strip():
        return value  # free-form data (kwargs) resolves as YAML would have resolved the plain scalar
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, bool | int | float) or parsed is None else value


def apply_defaults(instance: Any, node: Schema | None = None) -> None:
    """Fill in `default`s in place; an object default is merged key by key into a partial object."""
    node = _resolve(node if node is not None else schema())
    if isinstance(instance, list) and isinstance(node.get("items"), dict):
        for item in instance:
            apply_defaults(item, node["items"])
    if not isinstance(instance, dict):
        return
    props: dict[str, Schema] = node.get("properties", {})
    for name, declared in props.items():
        sub = _resolve(declared)
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        elif isinstance(instance.get(name), dict) and isinstance(sub.get("default"), dict) and "properties" in sub:
            for key, value in sub["default"].items():
                instance[name].setdefault(key, copy.deepcopy(value))
        if name in instance:
            apply_defaults(instance[name], sub)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in props:
                apply_defaults(value, extra)


def problems(doc: Document) -> Iterator[str]:
    """Every schema violation in the document, one located line each."""
    validator = Draft202012Validator(schema())
    for error in validator.iter_errors(doc.data):
        yield from _explain(doc, error)


@dataclasses.dataclass(frozen=True)
class _Hidden:
    """A secret's value in a message: its kind, never its text."""

    kind: str


def _show(value: Any) -> str:
    if isinstance(value, _Hidden):
        return '"(hidden)"'
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, _Hidden):
        return value.kind
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (allowed: {', '.join(sorted(choices))})" if choices else ""


def _explain(doc: Document, error: ValidationError) -> Iterator[str]:
    path: JsonPath = tuple(error.absolute_path)
    value, rule = error.instance, error.validator
    node: Schema = dict(error.schema) if isinstance(error.schema, Mapping) else {}
    expected: Any = error.validator_value
    if rule == "additionalProperties" and isinstance(value, dict):
        known = list(node.get("properties", {}))
        for key in value:
            if key not in known:
                yield doc.problem((*path, key), f"unknown key '{key}'{_suggest(key, known)}", key=True)
        return
    if rule == "required" and isinstance(value, dict):
        for key in expected:
            if key not in value:
                yield doc.problem(path, f"missing required key '{key}'", key=True)
        return
    if node.get("title") == "name" and isinstance(value, str) and value in _at(doc.data, path):
        # propertyNames: the offending name is a key of the mapping at `path`
        yield f"{doc.where((*path, value), key=True)}: {dotted(path)}: {_message(path, rule, value, node, error)}"
        return
    if path and path[-1] in SECRET_KEYS:
        value = _Hidden(_kind(value))
    message = _message(path, rule, value, node, error)
    if isinstance(value, _Hidden) and message == error.message:  # jsonschema's own message quotes the value
        message = "must not be empty" if rule == "minLength" else f"invalid value (hidden): fails '{rule}'"
    yield doc.problem(path, message, key=rule == "oneOf")


def _at(data: Any, path: JsonPath) -> Any:
    for part in path:
        data = data[part]
    return data if isinstance(data, dict) else {}


SECRET_KEYS = frozenset({"url", "password", "auth_token", "secret"})  # their values never appear in a message

_HINTS = {
    "duration": "a duration: seconds, or a string like 250ms, 30s, 5m, 1h, 7d",
    "positive duration": "a duration above zero: seconds, or a string like 250ms, 30s, 5m, 1h",
    "size": "a size: bytes, or a string like 512KiB, 1MiB, 10MB",
    "name": "use letters, digits, _ . - and start with a letter or _ (up to 100)",
    "rate limit": "a rate like 20/s, 100/m or 5000/h, a list of rates, or {limit: <rate or list>, key: <kwarg name>}",
    "concurrency": "a whole number >= 1, or {limit: <number>, key: <kwarg name>}",
}


def _message(path: JsonPath, rule: Any, value: Any, node: Schema, error: ValidationError) -> str:
    title = node.get("title")
    if rule == "anyOf" and title in _HINTS:
        return f"expected {_HINTS[title]}, got {_kind(value)} {_show(value)}"
    if rule == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"expected {wanted}, got {_kind(value)} {_show(value)}"
    if rule == "enum":
        choices: Any = error.validator_value
        return f"must be one of {', '.join(_show(v) for v in choices)}, got {_show(value)}"
    if rule == "pattern" and title == "name":
        return f"invalid name {_show(value)}: {_HINTS['name']}"
    if rule == "pattern" and path and path[-1] == "url" and path[0] == "webhooks":
        return f"invalid URL {_show(value)}: a webhook's url must start with http:// or https:// and name a host"
    if rule == "pattern" and path and path[-1] == "url":
        return f"invalid URL {_show(value)}: it must start with redis://, rediss:// or unix://"
    if rule == "pattern" and path and path[-1] == "path":
        return f"invalid task path {_show(value)}: expected module:attribute, e.g. jobs.email:send_email"
    if rule == "pattern" and path == ("django", "settings"):
        return f"invalid settings module {_show(value)}: expected a dotted module name, e.g. mysite.settings"
    if rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[rule]
        return f"must be {sign} {error.validator_value}, got {_show(value)}"
    if rule == "oneOf" and path and path[0] == "schedules":
        return "needs exactly one of 'cron' or 'every'"
    if rule == "minProperties":
        return "must declare at least one entry"
    return error.message
