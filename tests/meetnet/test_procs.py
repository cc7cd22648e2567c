"""Child processes never outlive their parent, and stop() always ends a child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from meetnet import procs


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped does not run)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


PARENT = textwrap.dedent(
    """
    import sys, time
    from meetnet import procs
    child = procs.spawn(["sleep", "60"])
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


def test_child_dies_when_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert alive(child_pid)
        cmdline = Path(f"/proc/{child_pid}/cmdline").read_bytes()
        assert cmdline.split(b"\0")[0] == b"sleep"
        # Own process group: a terminal's Ctrl-C to the parent's group does not reach it.
        assert os.getpgid(child_pid) == child_pid
        parent.kill()  # SIGKILL: the parent gets no chance to clean up
        parent.wait()
        assert wait_gone(child_pid, 5), "the child outlived its SIGKILLed parent"
    finally:
        procs.kill9(parent)


def test_stop_sends_sigterm_first() -> None:
    child = procs.spawn(["sleep", "60"])
    t0 = time.monotonic()
    assert procs.stop(child, timeout=5) == -signal.SIGTERM
    assert time.monotonic() - t0 < 2
    assert procs.stop(child) == -signal.SIGTERM  # idempotent


IGNORES_SIGTERM = textwrap.dedent(
    """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_stop_escalates_to_sigkill() -> None:
    child = procs.spawn([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"  # the handler is in place
        t0 = time.monotonic()
        rc = procs.stop(child, timeout=1.0)
        took = time.monotonic() - t0
        assert rc == -signal.SIGKILL
        assert 0.9 <= took < 5
        assert not alive(child.pid)
    finally:
        procs.kill9(child)
        if child.stdout is not None:
            child.stdout.close()


def test_spawn_logs_to_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "echo.log"
    child = procs.spawn(
        [sys.executable, "-c", "import sys; print('out'); sys.exit('err')"], log=log
    )
    assert child.wait(10) == 1
    assert log.read_text().splitlines() == ["out", "err"]


def test_wait_port_reports_early_exit() -> None:
    child = procs.spawn([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with 3"):
        procs.wait_port("127.0.0.1", procs.free_port(), 10, child)
