"""Resolve a YAML `module:attribute` task path to the object it names (used by config checks and registry)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path


def add_to_sys_path(folders: Iterable[Path]) -> None:
    """Add the YAML's import folders to sys.path (once each, in order) after taskqueue's own modules and
    the standard library, so `jobs.email` imports from there but a `signal.py` beside the YAML cannot
    replace the standard library's `signal` (nor a folder named `taskqueue` this package)."""
    for folder in folders:
        text = str(folder)
        if text not in sys.path:
            sys.path.append(text)


def resolve(path: str) -> object:
    """Import `module:attr.sub` and return the attribute; raises ImportError with a one-line reason."""
    module_name, _, attr_path = path.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ImportError(f"module '{exc.name}' not found") from exc
        raise ImportError(f"importing '{module_name}' failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing: report it, do not crash
        raise ImportError(f"importing '{module_name}' raised {type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"'{module_name}' has no attribute '{attr_path}'{_shadowed(module_name)}") from None
    return obj


def _shadowed(module_name: str) -> str:
    """Why a module lacks the attribute when the user's file of that name never got imported: the name is
    the standard library's (its modules come first on sys.path, on purpose: see add_to_sys_path)."""
    top = module_name.split(".", 1)[0]
    if top not in sys.stdlib_module_names:
        return ""
    found = getattr(sys.modules.get(module_name), "__file__", None) or "built in"
    mine = next(
        (f"{p}/{top}.py" for p in sys.path if p and (Path(p) / f"{top}.py").is_file()),
        None,
    )
    beside = f", not {mine}" if mine else ""
    return (
        f": '{top}' is the standard library's module ({found}){beside}; give your module another name "
        f"(e.g. {top}_tasks.py) or put it in a package (jobs/{top}.py as jobs.{top})"
    )
