"""The Lua scripts in taskqueue/store/lua/, read once through importlib.resources (so they travel inside the PEX).

Some scripts start with shared functions from lua/lib/ (LIBRARIES). A settle script (one that acknowledges,
retries, buries or retires a task) is composed: the hooks prelude,
every effect fragment of lua/hooks/, then the script itself, so a feature takes part in the settle step
atomically by adding one fragment (see taskqueue/features/__init__.py)."""

from __future__ import annotations

import functools
from importlib import resources

SETTLE_SCRIPTS = frozenset({"exchange", "retire", "retry", "bury", "workflow"})  # composed with lua/hooks/
LIBRARIES = {
    "admit": ("limits",),
    "promote": ("limits",),
    **{name: ("events",) for name in ("evented", "unique", "fire", "revive")},  # the `enqueued` event
    **{name: ("streams",) for name in ("webhook_read", "trim_events")},
}  # lua/lib/<name>.lua put before the script
HOOK_LIBRARIES = ("limits",)  # lua/lib/<name>.lua put before every settle script (for the hooks' fragments)


def _read(path: str) -> str:
    return resources.files("taskqueue.store").joinpath(path).read_text("utf-8")


@functools.cache
def source(name: str) -> str:
    body = _read(f"lua/{name}.lua")
    if name in LIBRARIES:
        body = "\n".join([*(_read(f"lua/lib/{lib}.lua") for lib in LIBRARIES[name]), body])
    if name not in SETTLE_SCRIPTS:
        return body
    folder = resources.files("taskqueue.store").joinpath("lua/hooks")
    fragments = sorted(p.name for p in folder.iterdir() if p.name.endswith(".lua") and not p.name.startswith("_"))
    hooked = (_read(f"lua/lib/{lib}.lua") for lib in HOOK_LIBRARIES)
    parts = [*hooked, _read("lua/hooks/_prelude.lua"), *(_read(f"lua/hooks/{f}") for f in fragments), body]
    return "\n".join(parts)
