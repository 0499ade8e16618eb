"""Measuring: CPU seconds and peak RSS of processes (Linux /proc through psutil), percentiles."""
from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import psutil


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 if it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


class CpuMeter:
    """CPU seconds spent by named groups of pids between :meth:`start` and :meth:`stop`."""

    def __init__(self, groups: dict[str, Iterable[int]]) -> None:
        self.groups = {name: [p for p in pids if p] for name, pids in groups.items()}
        self._before: dict[int, float] = {}
        self.spent: dict[str, float] = {}

    def start(self) -> "CpuMeter":
        self._before = {p: cpu_s(p) for pids in self.groups.values() for p in pids}
        return self

    def stop(self) -> dict[str, float]:
        self.spent = {name: sum(max(0.0, cpu_s(p) - self._before.get(p, 0.0)) for p in pids)
                      for name, pids in self.groups.items()}
        return self.spent


def thread_cpu_s(pid: int, name_prefixes: tuple[str, ...]) -> float:
    """CPU seconds so far of the threads of ``pid`` whose name starts with one of ``name_prefixes`` (Linux
    /proc; e.g. the JVM's ``C1 CompilerThre``/``C2 CompilerThre``, its JIT compilers)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name.startswith(name_prefixes):
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of ``pid`` (Linux: ``echo 5 > /proc/PID/clear_refs``)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(pid: int | None) -> float:
    """VmHWM of ``pid`` (None: this process) in MB (10^6 bytes)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
