"""CPU time and memory of processes, read from /proc (Linux only).

A process's children show up in its own `cutime`/`cstime` only after they exit and are reaped, so the
CPU of a live process tree is the sum of every live member's own utime+stime (plus each member's
cutime/cstime for descendants that already exited).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU seconds of one process: its own (utime+stime) and that of its exited, reaped children."""

    own_s: float
    children_s: float

    @property
    def total_s(self) -> float:
        return self.own_s + self.children_s


def cpu(pid: int) -> Cpu | None:
    """None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state) of proc(5)
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return Cpu((utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)


def children(pid: int) -> list[int]:
    """Direct children (every thread's `children` file: a child belongs to the thread that forked it)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return sorted(set(found))


def descendants(pid: int, limit: int = 1000) -> list[int]:
    """Every live descendant, breadth first (bounded: a runaway tree cannot hang the benchmark)."""
    found: list[int] = []
    frontier = [pid]
    while frontier and len(found) < limit:
        nxt: list[int] = []
        for parent in frontier:
            nxt += children(parent)
        found += nxt
        frontier = nxt
    return found[:limit]


def tree_cpu_s(root: int, members: list[int] | None = None) -> float:
    """User+sys seconds of `root` and its live descendants, including their reaped children."""
    total = 0.0
    for pid in [root, *(descendants(root) if members is None else members)]:
        sample = cpu(pid)
        if sample is not None:
            total += sample.total_s
    return total


@dataclass(frozen=True, slots=True)
class Memory:
    rss_bytes: int
    peak_rss_bytes: int  # VmHWM: the high-water mark of RSS


def memory(pid: int) -> Memory | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024  # reported in kB
    return Memory(values.get("VmRSS", 0), values.get("VmHWM", 0))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2 :].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
