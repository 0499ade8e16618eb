"""CI stops exactly what its run started (`.ci/contain`, which `.ci/run` wraps around `make test`).

A copy of `.ci/` in a temporary checkout runs a command that leaves behind what a crashed test would: a
service recorded in a pid file with its start time, a worker in its own session recorded nowhere, and a pid
file naming a process the run did not start (a pid the kernel recycled). Around it live a decoy started
outside the run, whose command line names the checkout as another stack's broker's does, and a stale pid file
of an earlier run naming that decoy. Afterwards the run's processes are gone and the decoy still runs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from streams.services import proc
from tests.harness import REPO_ROOT

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]

LEAVE_BEHIND = textwrap.dedent("""
    import json, os, subprocess, sys
    from pathlib import Path
    from streams.services import proc
    sleeper, decoy = json.loads(sys.argv[1]), int(sys.argv[2])
    home = Path(os.environ["TMPDIR"]) / "stack-home"
    service = proc.spawn("svc", sleeper, home)  # own session, pid file with its start time
    worker = subprocess.Popen(sleeper, start_new_session=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)  # no pid file
    (home / "run" / "recycled.pid").write_text(f"{decoy}\\n1\\n")  # names a process this run did not start
    print(json.dumps({"service": service, "worker": worker.pid}))
""")


def _alive(pid: int) -> bool:
    return proc.is_alive(pid)


def _stop_if_left(pid: int) -> None:
    # Only what this test started itself: each is a session leader, so its group is its own.
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ci_stops_what_its_run_started_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / ".ci", root / ".ci")
    # Another stack's broker started from this checkout: its command line names the checkout and a TMPDIR path.
    decoy = subprocess.Popen([*SLEEPER, f"-Dlog4j2.configurationFile={root}/deploy/kafka/log4j2.properties",
                              f"{root}/.ci-tmp/other-stack"], start_new_session=True)
    stale = root / ".ci-tmp" / "earlier-run" / "run" / "kafka-1.pid"
    stale.parent.mkdir(parents=True)
    stale.write_text(f"{decoy.pid}\n")
    left: dict[str, int] = {}
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        out = tmp_path / "out.txt"
        with out.open("w") as fh:  # a file, not a pipe: what the run leaves running would hold a pipe open
            run = subprocess.run([str(root / ".ci" / "contain"), sys.executable, "-c", LEAVE_BEHIND,
                                  json.dumps(SLEEPER), str(decoy.pid)], cwd=tmp_path, env=env, text=True,
                                 stdout=fh, stderr=subprocess.STDOUT, timeout=120)
        left = json.loads(out.read_text().strip().splitlines()[0])
        assert decoy.poll() is None, "CI killed a process it did not start (matched by command line or a stale pid file)"
        assert run.returncode == 0, out.read_text()
        assert not stale.exists(), ".ci-tmp of an earlier run was not cleared at start"
        for name, pid in left.items():
            assert not _alive(pid), f"CI left the {name} its run started running (pid {pid})"
    finally:
        for pid in left.values():
            _stop_if_left(pid)
        decoy.kill()
        decoy.wait(10)


def test_ci_exits_with_the_command_s_status(tmp_path: Path) -> None:
    root = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / ".ci", root / ".ci")
    run = subprocess.run([str(root / ".ci" / "contain"), sys.executable, "-c", "raise SystemExit(3)"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stdout + run.stderr
