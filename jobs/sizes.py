"""An example task that uses a third-party package: humanize, pinned in requirements-jobs.txt, which
./build.sh bundles into taskqueue.pex — the workers import it from there."""

from __future__ import annotations

import humanize


def describe_upload(name: str, size_bytes: int) -> str:
    """Say an upload's size the way a person would: `describe_upload("report.pdf", 1234567)` → 'report.pdf: 1.2 MB'."""
    return f"{name}: {humanize.naturalsize(size_bytes)}"
