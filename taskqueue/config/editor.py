"""The schema as an editor sees the file: before `${VAR}` expansion (issue 16, defect 1).

The loader validates the YAML after expanding `${VAR}`, `${VAR:-default}` and `${VAR-default}`, against the
strict schema (schema/task-queue.schema.json inside the package). An editor's YAML language server checks the
raw text, where `url: '${REDIS_URL:-redis://…}'` or `port: ${PORT}` is a string with a `${…}` in it. This
flavour accepts such a string wherever the loader would expand one: every scalar (string, number, integer,
boolean, enum) may instead be a string holding an expansion. Everything else (required keys, closed objects,
names, structure) is the same. It is what `taskqueue schema` prints and what schema/ in the repository holds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

EXPANSION = "expansion"
_SCALARS = {"string", "number", "integer", "boolean"}
_EXPANSION_DEF = {
    "title": "${VAR}",
    "description": "A value taken from the environment when the runner loads the file: ${VAR}, ${VAR:-default} "
    "(unset or empty) or ${VAR-default} (unset). It is checked against the schema after expansion.",
    "type": "string",
    "pattern": "\\$\\{[A-Za-z_][A-Za-z0-9_]*((:?-)[^}]*)?\\}",
}


def _is_scalar(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind}
    return ("enum" in node or "const" in node or bool(kinds & _SCALARS)) and not (kinds & {"object", "array"})


def _widen(node: Any) -> Any:
    if isinstance(node, list):
        return [_widen(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _widen(value) for key, value in node.items()}
    if _is_scalar(out):
        keep = {k: out.pop(k) for k in ("title", "description", "default", "examples") if k in out}
        return {**keep, "anyOf": [out, {"$ref": f"#/$defs/{EXPANSION}"}]}
    return out


def editor_schema(strict: dict[str, Any]) -> dict[str, Any]:
    widened: dict[str, Any] = _widen(copy.deepcopy(strict))
    widened.setdefault("$defs", {})[EXPANSION] = _EXPANSION_DEF
    return widened


def editor_schema_text(strict: dict[str, Any]) -> str:
    return json.dumps(editor_schema(strict), indent=2) + "\n"
