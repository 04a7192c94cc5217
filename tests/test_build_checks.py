"""build.sh's checks of the jobs' requirements (build-support/verify_pex.py): exact pins only, none that
contradicts requirements.lock — every problem at once, each with its line, before anything is resolved; and
build.sh's order: a new pex replaces the old one only once every check of it passed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from types import ModuleType

from tests.conftest import REPO


def load_checks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_pex", REPO / "build-support" / "verify_pex.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = load_checks()


def test_the_shipped_jobs_requirements_may_be_bundled() -> None:
    assert checks.check_requirements(REPO / "requirements-jobs.txt", REPO / "requirements.lock") == []


def test_ranges_includes_and_contradicting_pins_are_refused_with_their_lines(tmp_path: Path) -> None:
    lock = REPO / "requirements.lock"
    ours = checks.read_pins(lock)
    jobs = tmp_path / "requirements-jobs.txt"
    jobs.write_text(
        "# a comment\n"
        "humanize==4.17.0  # fine\n"
        "requests>=2\n"
        "\n"
        "redis==0.0.1\n"
        f"idna=={ours['idna']}\n"  # the same pin as requirements.lock: fine
        "-r other.txt\n"
        'socks-thing[extra] == 1.0 ; python_version < "3.13"\n'
    )
    assert checks.check_requirements(jobs, lock) == [
        f"{jobs}:3: 'requests>=2' is not an exact pin: write name==version (dependencies too)",
        f"{jobs}:5: redis==0.0.1 contradicts requirements.lock's redis=={ours['redis']} "
        "(taskqueue's own pin; the pex holds one version of each package)",
        f"{jobs}:7: '-r other.txt' is not an exact pin: write name==version (dependencies too)",
    ]


def test_pins_are_read_with_markers_extras_and_normalized_names(tmp_path: Path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text('PyYAML==6.0.4\nuvloop==0.23.0; sys_platform != "win32"\nFoo_Bar[x]==1.0  # c\n-r other.txt\n')
    assert checks.read_pins(lock) == {"pyyaml": "6.0.4", "uvloop": "0.23.0", "foo-bar": "1.0"}


def build(out: Path, prebuilt: Path) -> subprocess.CompletedProcess[str]:
    """build.sh's checks and install step on `prebuilt` (TQ_PREBUILT_PEX: no pex is built) into `out`."""
    env = {**os.environ, "TQ_PEX_OUT": str(out), "TQ_PREBUILT_PEX": str(prebuilt), "TQ_SKIP_SMOKE": "1"}
    return subprocess.run(
        ["bash", str(REPO / "build.sh")], env=env, capture_output=True, text=True, timeout=240, check=False
    )


def test_a_pex_that_fails_its_checks_leaves_the_old_one_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "taskqueue.pex"
    old = b"#!/bin/sh\necho the previous build\n"
    out.write_bytes(old)
    broken = tmp_path / "broken.pex"
    broken.write_bytes(b"PK\x03\x04 a truncated download, not a pex")
    built = build(out, broken)
    assert built.returncode != 0, built.stderr
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pex", "taskqueue.pex"]  # no partial file left


def test_a_pex_that_passes_its_checks_replaces_the_old_one(tmp_path: Path, pex: Path) -> None:
    out = tmp_path / "taskqueue.pex"
    out.write_bytes(b"#!/bin/sh\necho the previous build\n")
    built = build(out, pex)
    assert built.returncode == 0, built.stderr
    assert out.read_bytes() == pex.read_bytes()
