"""The supervisor `triage up` leaves running: keeps one worker process per step slot alive.

A worker that dies (a crash, `kill -9`, a stuck Kafka client that exits on purpose) is started again with
the same instance name, so its transactional producer fences the dead one's open transaction at once.
Restarts back off per slot so a worker that cannot start does not spin.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.config import REPO_ROOT, Settings
from streams.services import proc
from streams import pipelines

log = logging.getLogger("triage.supervisor")
NAME = "supervisor"
INSIGHTS = "@insights"
"""The slot of the insights worker (not a step: no pipeline step can be called so)."""
INSIGHTS_NAME = "insights"


@dataclass
class Slot:
    step: str
    index: int
    pid: int | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    @property
    def name(self) -> str:
        return INSIGHTS_NAME if self.step == INSIGHTS else f"worker-{self.step}-{self.index}"


def slots_file(home: Path) -> Path:
    return home / "run" / "slots.json"


def desired_slots(home: Path) -> dict[str, int]:
    """step -> replicas the supervisor keeps running (written by `triage up` / `triage scale`)."""
    try:
        return {k: int(v) for k, v in json.loads(slots_file(home).read_text()).items()}
    except (OSError, ValueError):
        return {}


def write_slots(home: Path, replicas: dict[str, int]) -> None:
    path = slots_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(replicas, indent=2))
    tmp.replace(path)


def metrics_port(step: str, index: int) -> int:
    """Each slot's /metrics port: TRIAGE_METRICS_BASE_PORT (9400) + 10 x step number + replica."""
    return _metrics_base() + 10 * pipelines.active().step_names.index(step) + index


def _metrics_base() -> int:
    return int(os.environ.get("TRIAGE_METRICS_BASE_PORT") or 9400)


def spawn_worker(settings: Settings, step: str, index: int) -> int:
    if step == INSIGHTS:
        return proc.spawn(INSIGHTS_NAME, [sys.executable, "-m", "streams.cli", "insights-worker"], settings.home,
                          env={"TRIAGE_HOME": str(settings.home)}, cwd=REPO_ROOT)
    return proc.spawn(f"worker-{step}-{index}",
                      [sys.executable, "-m", "streams.cli", "worker", step, "--instance", f"{step}-{index}",
                       "--metrics-port", str(metrics_port(step, index))],
                      settings.home, env={"TRIAGE_HOME": str(settings.home)}, cwd=REPO_ROOT)


def run(settings: Settings, poll_s: float = 0.5) -> None:
    """Supervise until SIGTERM; then stop every worker (they drain and commit) and return."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    slots: dict[str, Slot] = {}
    while not stopping:
        wanted = desired_slots(settings.home)
        keep = {Slot(step, i).name for step, n in wanted.items() for i in range(n)}
        for step, n in wanted.items():
            for i in range(n):
                slots.setdefault(Slot(step, i).name, Slot(step, i))
        for name in [n for n in slots if n not in keep]:
            proc.stop(settings.home, name, timeout=20)
            del slots[name]
        now = time.monotonic()
        for slot in slots.values():
            pid = slot.pid or proc.read_pid(settings.home, slot.name)
            if pid is not None and proc.is_alive(pid):
                slot.pid = pid
                if now - slot.started_at > 60:
                    slot.restarts = 0  # healthy for a minute: forget old failures
                continue
            if now < slot.next_start:
                continue
            if slot.pid is not None:
                log.warning("worker died; restarting", extra={"fields": {"worker": slot.name, "pid": slot.pid,
                                                                         "restarts": slot.restarts}})
            slot.pid = spawn_worker(settings, slot.step, slot.index)
            slot.started_at = now
            slot.restarts += 1
            slot.next_start = now + min(30.0, 0.5 * 2 ** min(slot.restarts, 6))
        time.sleep(poll_s)
    for slot in slots.values():
        proc.stop(settings.home, slot.name, timeout=20)
