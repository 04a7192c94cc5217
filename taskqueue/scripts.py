"""The Lua scripts in taskqueue/lua/, read once through importlib.resources (so they travel inside the PEX)."""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def source(name: str) -> str:
    return resources.files("taskqueue").joinpath(f"lua/{name}.lua").read_text("utf-8")
