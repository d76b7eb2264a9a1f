"""What the operating system accounts to each process: CPU seconds and peak memory.

Read from /proc, because `resource.getrusage(RUSAGE_CHILDREN)` only counts children that
have been waited for, and the processes measured here are still running. Linux only.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return text[text.rindex(")") + 2 :].split()


def _own_cpu_s(fields: list[str]) -> float:
    # After the name: state is index 0, so utime (field 14) is 11 and stime (15) is 12.
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it (a script that forks, a server's helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def cpu_s(pid: int) -> float:
    """CPU seconds so far of `pid` and its live descendants (0 if it is gone)."""
    total = 0.0
    for one in descendants(pid):
        fields = _stat_fields(one)
        if fields is not None:
            total += _own_cpu_s(fields)
    return total


def own_cpu_s(pid: int) -> float:
    """CPU seconds so far of `pid` alone (the bench's driver, not the processes it started)."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else _own_cpu_s(fields)


def peak_rss_mb(pid: int) -> float | None:
    """The process's high-water resident set size (VmHWM), in MiB."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # reported in kB
    return None


def snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process."""
    return {name: cpu_s(pid) for name, pid in pids.items()}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}
