"""What a runner has done, counted as it goes: for ``triage status``, the logs and the tests."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    """What a worker has done, for status and tests."""

    consumed: int = 0
    emitted: int = 0
    dead_lettered: int = 0
    transactions: int = 0
    aborts: int = 0
    rebalances: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    """Most records held at once (handling, or done and waiting for their commit); counted per poll, never
    below the true peak."""
    pauses: int = 0
    """Times the partitions were paused (full for longer than ``pause_after_s``)."""
    full_waits: int = 0
    """Times the runner became full (it then waits for a commit to make room, or pauses at once when
    ``pause_after_s`` is 0)."""
    max_hol_wait_s: float = 0.0
    watches: int = 0
    """Times the watchdog looked at the consumer's positions."""
    stalls: int = 0
    """Times the watchdog found a partition with records to read that the consumer did not fetch."""
