"""The build's checks (run by build.sh): exact pins only, no jobs/, every target Python served.

Usage: python3 build-support/verify_pex.py requirements JOBS_REQUIREMENTS LOCK    (before the build)
       python3 build-support/verify_pex.py pex PEX PLATFORMS_DIR LOCK [LOCK...]    (after it)

`requirements`: every line of the jobs' requirements file is an exact pin (`name==version`, an optional
`; marker`), the policy of requirements.lock, and none contradicts a pin of LOCK (a pex holds one version
of each distribution). `pex`:
- every distribution in the pex is pinned (`name==version`) by one of the LOCK files, so a job
  requirement's dependency must be pinned too;
- jobs/ is not packaged (user tasks are imported from the YAML's folder at run time);
- each distribution with compiled code has a wheel for every CPython minor version the build targets
  (the complete platforms PLATFORMS_DIR/*.json), so the pex runs on each of them
  rather than re-executing under another interpreter it finds.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

EXACT = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*(;.*)?")
Version = tuple[int, int]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, requirement) of a requirements file, without comments and blank lines."""
    lines = (
        (n, re.sub(r"(^|\s)#.*", "", raw).strip()) for n, raw in enumerate(path.read_text("utf-8").splitlines(), 1)
    )
    return [(n, line) for n, line in lines if line]


def read_pins(lock: Path) -> dict[str, str]:
    """Normalized name → version of each exact pin in a requirements file (other lines are ignored)."""
    found = {}
    for _, line in requirement_lines(lock):
        exact = EXACT.fullmatch(line)
        if exact:
            found[norm(exact.group(1))] = exact.group(3)
    return found


def minor(text: str) -> Version:
    major, minor_, *_ = text.split(".")
    return int(major), int(minor_)


def target_versions(platforms: Path) -> set[Version]:
    markers = (json.loads(p.read_text("utf-8"))["marker_environment"] for p in platforms.glob("*.json"))
    return {minor(m["python_version"]) for m in markers}


def served(wheel: str) -> tuple[bool, set[Version], Version | None]:
    """(compiled?, minor versions it is built for, lowest version an abi3 wheel serves) of a wheel file name."""
    py_tags, abi_tags, _ = wheel.removesuffix(".whl").split("-")[-3:]
    if abi_tags == "none":
        return False, set(), None
    versions = {(int(t[2]), int(t[3:])) for t in py_tags.split(".") if t.startswith("cp")}
    if "abi3" in abi_tags.split("."):
        return True, set(), min(versions)
    return True, versions, None


def check_requirements(jobs: Path, lock: Path) -> list[str]:
    """Problems of a jobs' requirements file, each `file:line: message` (none: it may be bundled)."""
    pinned = read_pins(lock)
    problems = []
    for number, line in requirement_lines(jobs):
        where = f"{jobs}:{number}"
        exact = EXACT.fullmatch(line)
        if not exact:
            problems.append(f"{where}: {line!r} is not an exact pin: write name==version (dependencies too)")
            continue
        name, version = exact.group(1), exact.group(3)
        theirs = pinned.get(norm(name))
        if theirs is not None and theirs != version:
            problems.append(
                f"{where}: {name}=={version} contradicts {lock.name}'s {name}=={theirs} "
                "(taskqueue's own pin; the pex holds one version of each package)"
            )
    return problems


def check_pex(pex: Path, platforms: Path, locks: list[Path]) -> str:
    pins: dict[str, str] = {}
    for lock in locks:
        pins.update(read_pins(lock))
    with zipfile.ZipFile(pex) as archive:
        wheels = json.loads(archive.read("PEX-INFO"))["distributions"]
        if any(n.startswith("jobs/") for n in archive.namelist()):
            sys.exit("jobs/ must not be packaged into the pex")
    unpinned = [w for w in wheels if pins.get(norm(w.split("-")[0])) != w.split("-")[1]]
    if unpinned:
        sys.exit(f"dists not pinned in {' or '.join(map(str, locks))} (pin each one, dependencies too): {unpinned}")

    targets = target_versions(platforms)
    builds: dict[str, set[Version]] = defaultdict(set)
    for wheel in wheels:
        compiled, versions, abi3_from = served(wheel)
        if compiled:
            builds[norm(wheel.split("-")[0])] |= versions | {t for t in targets if abi3_from and t >= abi3_from}
    missing = {name: sorted(targets - have) for name, have in builds.items() if targets - have}
    if missing:
        sys.exit(f"no wheel for some target Pythons: {missing}")
    pythons = ", ".join(f"{a}.{b}" for a, b in sorted(targets))
    return f"  {len(wheels)} wheels (all pinned), compiled ones ({len(builds)}) for each of CPython {pythons}"


def main(argv: list[str]) -> str:
    match argv:
        case ["requirements", jobs, lock]:
            problems = check_requirements(Path(jobs), Path(lock))
            if problems:
                sys.exit("\n".join(problems))
            return f"  {jobs}: exact pins, none contradicting {lock}"
        case ["pex", pex, platforms, *locks] if locks:
            return check_pex(Path(pex), Path(platforms), [Path(lock) for lock in locks])
    sys.exit(__doc__)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
