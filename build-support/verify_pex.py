"""Checks of a built taskqueue.pex (run by build.sh): exact pins only, no jobs/, every target Python served.

Usage: python3 build-support/verify_pex.py PEX PLATFORMS_DIR LOCK [LOCK...]

- every distribution in the pex is pinned (`name==version`) by one of the LOCK files;
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

PIN = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")
Version = tuple[int, int]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(lock: Path) -> dict[str, str]:
    found = {}
    for line in lock.read_text("utf-8").splitlines():
        match = PIN.match(line)
        if match:
            found[norm(match.group(1))] = match.group(2)
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


def main(pex: Path, platforms: Path, locks: list[Path]) -> str:
    pins: dict[str, str] = {}
    for lock in locks:
        pins.update(read_pins(lock))
    with zipfile.ZipFile(pex) as archive:
        wheels = json.loads(archive.read("PEX-INFO"))["distributions"]
        if any(n.startswith("jobs/") for n in archive.namelist()):
            sys.exit("jobs/ must not be packaged into the pex")
    unpinned = [w for w in wheels if pins.get(norm(w.split("-")[0])) != w.split("-")[1]]
    if unpinned:
        sys.exit(f"dists not pinned in {', '.join(map(str, locks))}: {unpinned}")

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


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    print(main(Path(sys.argv[1]), Path(sys.argv[2]), [Path(a) for a in sys.argv[3:]]))
