"""One venv per peer at bench/.peers/<peer>/ (their redis-py pins conflict with each other and with ours).

Made with `python -m venv` and `pip install -r bench/peers/requirements/<peer>.txt`; a stamp file holds
the sha256 of that requirements file (and the interpreter version), so a venv is reused until its
requirements change. A changed file is installed into the existing venv (pins are exact, so pip moves
every package to its pinned version) instead of deleting it, because another session may be running
that venv at the moment; `fresh=True` (`--peers-fresh`) deletes and rebuilds it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ("huey", "rq", "dramatiq", "celery", "taskiq", "arq", "saq", "streaq")
VENVS = ROOT / "bench" / ".peers"
REQUIREMENTS = ROOT / "bench" / "peers" / "requirements"
STAMP = ".bench-requirements.sha256"
VENV_TIMEOUT_S = 120.0
PIP_TIMEOUT_S = 900.0


class VenvError(RuntimeError):
    """The peer cannot run (no adapter, no requirements, install failed): one line, shown in the table."""


def adapter_path(peer: str) -> Path:
    return ROOT / "bench" / "peers" / f"{peer}_peer.py"


def requirements_path(peer: str) -> Path:
    return REQUIREMENTS / f"{peer}.txt"


def venv_path(peer: str) -> Path:
    return VENVS / peer


def python_path(peer: str) -> Path:
    return venv_path(peer) / "bin" / "python"


def stamp_text(requirements: Path) -> str:
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    return f"{digest} python{sys.version_info.major}.{sys.version_info.minor}\n"


def last_line(text: str) -> str:
    """The last non-empty line (pip and tracebacks put the reason there), shortened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else "(no output)"
    return line if len(line) <= 300 else line[:297] + "..."


def _run(argv: list[str], timeout_s: float, what: str) -> None:
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise VenvError(f"{what} timed out after {timeout_s:g}s") from None
    except OSError as exc:
        raise VenvError(f"{what}: {exc}") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        raise VenvError(f"{what} failed ({done.returncode}): {last_line(errors[-1] if errors else done.stderr)}")


def ensure(peer: str, say: Callable[[str], None], fresh: bool = False) -> Path:
    """The peer's venv python, built or updated if needed. Raises VenvError (one line)."""
    if peer not in PEERS:
        raise VenvError(f"unknown peer (known: {', '.join(PEERS)})")
    if not adapter_path(peer).exists():
        raise VenvError(f"no adapter (bench/peers/{peer}_peer.py)")
    requirements = requirements_path(peer)
    if not requirements.exists():
        raise VenvError(f"no requirements file (bench/peers/requirements/{peer}.txt)")
    venv = venv_path(peer)
    stamp = venv / STAMP
    wanted = stamp_text(requirements)
    if not fresh and python_path(peer).exists() and stamp.exists() and stamp.read_text() == wanted:
        return python_path(peer)
    if fresh and venv.exists():
        say(f"{peer}: deleting {venv} (--peers-fresh)")
        shutil.rmtree(venv)
    stamp.unlink(missing_ok=True)
    if not python_path(peer).exists():
        say(f"{peer}: creating {venv}")
        _run([sys.executable, "-m", "venv", str(venv)], VENV_TIMEOUT_S, "python -m venv")
    say(f"{peer}: pip install -r {requirements.relative_to(ROOT)}")
    pip = [str(python_path(peer)), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _run([*pip, "-r", str(requirements)], PIP_TIMEOUT_S, "pip install")
    stamp.write_text(wanted)
    return python_path(peer)
