"""Write a complete platform for a CPython that no machine at hand has, from one that was inspected.

Usage: python build-support/derive_platform.py VERSION FROM.json OUT.json    (e.g. 3.14.0)

The wheel tags are those `packaging.tags` gives that version on the same platform tags (manylinux_2_36 …
linux) as FROM.json; the markers are FROM.json's with the version changed. Derived from each inspected
file in build-support/platforms/ for its own version, this reproduces it tag for tag, so a derived file
differs from an inspected one only in what an inspection of that interpreter could add. Replace it by
`gen-platforms.sh PYTHON` once the interpreter is at hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from packaging import tags


def derive(version: str, template: dict[str, object]) -> dict[str, object]:
    major, minor = (int(part) for part in version.split(".")[:2])
    template_tags = template["compatible_tags"]
    assert isinstance(template_tags, list)
    platforms: list[str] = []
    for tag in template_tags:
        interpreter, abi, platform = tag.split("-")
        if interpreter == abi and abi.startswith("cp") and platform not in platforms:
            platforms.append(platform)  # the interpreter's own ABI: every platform tag, most specific first
    abi = f"cp{major}{minor}"
    compatible = [
        *tags.cpython_tags((major, minor), abis=[abi], platforms=platforms),
        *tags.compatible_tags((major, minor), interpreter=abi, platforms=platforms),
    ]
    markers = dict(template["marker_environment"])  # type: ignore[call-overload]
    markers.update(implementation_version=version, python_full_version=version, python_version=f"{major}.{minor}")
    return {
        "path": f"derived by build-support/derive_platform.py (no CPython {version} at hand to inspect)",
        "compatible_tags": [str(tag) for tag in compatible],
        "marker_environment": markers,
    }


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    version, source, out = sys.argv[1:]
    Path(out).write_text(json.dumps(derive(version, json.loads(Path(source).read_text("utf-8"))), indent=2) + "\n")
