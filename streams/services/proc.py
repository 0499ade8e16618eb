"""Background processes owned by triage: spawn detached, track by pid file, stop cleanly.

Layout under ``home``: ``run/<name>.pid`` and ``logs/<name>.log``. A pid file holds the pid and,
on Linux, the process start time, so a pid recycled by the kernel for an unrelated process is
recognised as stale instead of being signalled.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Rotate once at spawn time rather than run a log rotator: restarts are when logs pile up.
_MAX_LOG_BYTES = 20 * 1024 * 1024


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"invalid service name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def run_dir(home: Path) -> Path:
    return Path(home) / "run"


def log_path(home: Path, name: str) -> Path:
    """Where :func:`spawn` sends the stdout and stderr of service ``name``."""
    return Path(home) / "logs" / f"{_check_name(name)}.log"


def pid_path(home: Path, name: str) -> Path:
    return run_dir(home) / f"{_check_name(name)}.pid"


def log_tail(home: Path, name: str, lines: int = 40, since: int = 0) -> str:
    """The last ``lines`` lines of the service log (from byte offset ``since``); '' if there is none."""
    path = log_path(home, name)
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            # Read at most the last 256 KiB: enough for 40 lines of Java stack traces.
            start = max(since, size - 256 * 1024, 0)
            fh.seek(start)
            data = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _start_time(pid: int) -> tuple[str, str] | None:
    """(state, starttime) from /proc/<pid>/stat, or None where /proc is unavailable or pid is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None
    # comm (field 2) may contain spaces and parentheses; everything after the last ')' is fixed.
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def is_alive(pid: int) -> bool:
    """True if ``pid`` is a running process. Zombies count as dead (and are reaped if ours)."""
    if pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: someone else reaps it
    stat = _start_time(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(home: Path, name: str) -> int | None:
    """The pid recorded for ``name``, or None if there is no usable pid file.

    None is also returned when the recorded pid now belongs to a different process (start time
    differs). A returned pid may be dead: check with :func:`is_alive`.
    """
    try:
        lines = pid_path(home, name).read_text().split()
        pid = int(lines[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if len(lines) > 1:
        stat = _start_time(pid)
        if stat is not None and stat[1] != lines[1]:
            return None
    return pid


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def spawn(name: str, argv: list[str], home: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start ``argv`` detached (own session) and return its pid.

    stdout and stderr are appended to ``home/logs/<name>.log`` (rotated to ``.log.1`` past 20 MB),
    stdin is /dev/null, and ``home/run/<name>.pid`` is written. ``env`` is added to (and overrides)
    the current environment. ``cwd`` defaults to ``home``. Does not check whether ``name`` is
    already running: callers do that (see :func:`read_pid`, :func:`is_alive`).
    Raises FileNotFoundError/PermissionError if the executable cannot be started.
    """
    home = Path(home)
    log = log_path(home, name)
    log.parent.mkdir(parents=True, exist_ok=True)
    run_dir(home).mkdir(parents=True, exist_ok=True)
    if log.exists() and log.stat().st_size > _MAX_LOG_BYTES:
        os.replace(log, log.with_name(log.name + ".1"))
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with log.open("ab") as out:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"=== {stamp} triage starting {name}: {' '.join(argv)}\n".encode())
        out.flush()
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cwd or home),
            env=full_env,
            start_new_session=True,  # survives the CLI exiting and our terminal's Ctrl-C
            close_fds=True,
        )
    stat = _start_time(child.pid)
    _write_atomic(pid_path(home, name), f"{child.pid}\n{stat[1] if stat else ''}\n")
    return child.pid


def stop(home: Path, name: str, timeout: float = 15.0) -> bool:
    """Stop service ``name``: SIGTERM, wait up to ``timeout`` s, then SIGKILL its process group.

    Removes the pid file in every case. Returns True if a live process was stopped, False if
    nothing was running. Raises PermissionError if the process belongs to another user.
    """
    pid = read_pid(home, name)
    try:
        if pid is None or not is_alive(pid):
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        try:
            wait_until(lambda: not is_alive(pid), timeout, what=f"{name} (pid {pid}) to exit")
        except TimeoutError:
            # The session leader is the group leader (start_new_session), so pgid == pid.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not is_alive(pid), 5.0, what=f"{name} (pid {pid}) to die")
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            pid_path(home, name).unlink()


def list_running(home: Path) -> dict[str, int]:
    """{name: pid} for every pid file under ``home/run`` whose process is alive."""
    found: dict[str, int] = {}
    directory = run_dir(home)
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.pid")):
        pid = read_pid(home, path.stem)
        if pid is not None and is_alive(pid):
            found[path.stem] = pid
    return found


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.1,
               what: str = "condition") -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Raises TimeoutError("timed out after <timeout>s waiting for <what>") when the time is up.
    Exceptions raised by ``predicate`` propagate immediately (use that to fail fast).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def lock(home: Path, name: str) -> Iterator[None]:
    """Exclusive inter-process lock for starting/stopping ``name`` (blocks until acquired)."""
    run_dir(home).mkdir(parents=True, exist_ok=True)
    with (run_dir(home) / f"{_check_name(name)}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
