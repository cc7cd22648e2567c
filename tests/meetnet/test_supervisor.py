"""`meetnet up` end to end: engines, gateway, processor, API and simulator as one supervised
process tree that serves simulated readings, restarts a killed child, and leaves nothing behind
on Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from meetnet import procs

pytestmark = pytest.mark.integration

READY_TIMEOUT_S = 120
DATA_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
COMPONENTS = ("gateway", "processor", "api", "simulator")
COMMANDS = {"gateway": "gateway", "processor": "processor", "api": "api", "simulate": "simulator"}

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with _http.open(url, timeout=timeout) as r:
            return int(r.status), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


# --- /proc ----------------------------------------------------------------------------------
def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def running(pid: int, start: int | None = None) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z" and (start is None or st[2] == start)


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def children_of(ppid: int) -> list[int]:
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None and st[1] == ppid and st[0] != "Z":
            out.append(pid)
    return out


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of ``root``."""
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid in children_of(todo.pop()):
            st = proc_stat(pid)
            if st is not None and pid not in found:
                found[pid] = st[2]
                todo.append(pid)
    return found


def with_env_marker(marker: str) -> list[int]:
    """Live processes whose environment contains ``marker`` (this run's unique state dir)."""
    needle = marker.encode()
    out = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in env and running(pid):
            out.append(pid)
    return out


def component_of(pid: int) -> str | None:
    """'gateway' for `python -m meetnet gateway`, 'simulator' for `... simulate`, and so on."""
    args = cmdline(pid)
    for i in range(len(args) - 2):
        if args[i] == "-m" and args[i + 1] == "meetnet":
            return COMMANDS.get(args[i + 2])
    return None


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


# --- one `meetnet up` -----------------------------------------------------------------------
@dataclass
class UpRun:
    proc: subprocess.Popen[bytes]
    port: int
    state_dir: Path
    lines: list[str] = field(default_factory=list)
    seen: dict[int, int] = field(default_factory=dict)  # every descendant pid -> start time
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "\n".join(self.lines)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def _watch(self) -> None:
        while not self._stop.is_set() and self.proc.poll() is None:
            self.seen.update(descendants(self.proc.pid))
            self._stop.wait(0.5)

    def start_threads(self) -> None:
        for target in (self._read, self._watch):
            threading.Thread(target=target, daemon=True).start()

    def wait_line(self, text: str, timeout: float) -> str:
        def find() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"meetnet up exited with {self.proc.returncode}:\n{self.output()[-5000:]}"
                )
            return next((line for line in self.lines if text in line), None)

        try:
            return str(wait_until(find, timeout, repr(text)))
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- output:\n{self.output()[-5000:]}") from None

    def children(self) -> dict[str, int]:
        """component name -> pid of the supervisor's live children."""
        out = {}
        for pid in children_of(self.proc.pid):
            name = component_of(pid)
            if name:
                out[name] = pid
        return out

    def interrupt_and_wait(self) -> int:
        self.seen.update(descendants(self.proc.pid))
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"meetnet up did not stop within {STOP_TIMEOUT_S}s:\n{self.output()[-5000:]}"
            ) from None
        self._stop.set()
        return rc

    def leftovers(self) -> list[str]:
        alive = {pid for pid, start in self.seen.items() if running(pid, start)}
        alive |= set(with_env_marker(str(self.state_dir)))
        return [f"{pid}: {' '.join(cmdline(pid))}" for pid in sorted(alive)]


@pytest.fixture
def up(migrated_db: str, db: psycopg.Connection, tmp_path: Path) -> Iterator[UpRun]:
    tag = uuid.uuid4().hex[:8]
    port = procs.free_port()
    state = tmp_path / f"state-{tag}"
    env = {
        **os.environ,
        "MEETNET_DATABASE_URL": migrated_db,
        "MEETNET_MQTT_URL": f"mqtt://127.0.0.1:{procs.free_port()}",
        "MEETNET_KAFKA_BOOTSTRAP": f"127.0.0.1:{procs.free_port()}",
        "MEETNET_STATE_DIR": str(state),
        "MEETNET_MANAGE_LOCAL_SERVICES": "true",
        "MEETNET_KAFKA_READINGS_TOPIC": f"readings-up-{tag}",
        "MEETNET_KAFKA_DEADLETTER_TOPIC": f"deadletter-up-{tag}",
        "MEETNET_PROCESSOR_GROUP": f"processor-up-{tag}",
        "MEETNET_MQTT_SHARE_GROUP": f"gw-up-{tag}",
        "MEETNET_MQTT_TOPIC_PREFIX": f"up-{tag}/v1",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "meetnet", "up", "--sensors", "20", "--rate", "100"]
    proc = subprocess.Popen(
        [*cmd, "--api-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    run = UpRun(proc, port, state)
    run.start_threads()
    try:
        yield run
    finally:
        if proc.poll() is None:  # the test failed half-way: leave nothing running
            procs.kill9(proc)  # the children follow (PR_SET_PDEATHSIG)
        run._stop.set()
        for line in run.leftovers():
            with contextlib.suppress(OSError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)


def assert_clean_stop(run: UpRun) -> None:
    rc = run.interrupt_and_wait()
    assert rc == 0, f"exit code {rc}:\n{run.output()[-5000:]}"
    # PR_SET_PDEATHSIG and the brokers' own exits are not instantaneous: allow a moment.
    try:
        wait_until(lambda: not run.leftovers(), 5, "the run's processes to exit")
    except AssertionError:
        raise AssertionError(f"processes of the run remain: {run.leftovers()}") from None
    assert "stopped" in run.output()


def test_up_serves_simulated_readings_and_stops_cleanly(up: UpRun) -> None:
    ready = up.wait_line(f"{up.url}/docs", READY_TIMEOUT_S)
    assert up.url in ready
    assert str(up.state_dir / "logs") in ready
    assert http_get(f"{up.url}/health")[0] == 200

    # Every component runs as a child of the supervisor, in its own process group.
    kids = up.children()
    assert set(COMPONENTS) <= set(kids), kids
    for pid in kids.values():
        assert os.getpgid(pid) == pid
    names = {Path(cmdline(pid)[0]).name for pid in children_of(up.proc.pid) if cmdline(pid)}
    assert "mosquitto" in names

    # Simulated readings travel MQTT -> gateway -> Kafka -> processor -> database -> API.
    def readings() -> list[dict[str, Any]] | None:
        status, body = http_get(f"{up.url}/v1/sensors/sim-air-0001/readings")
        return body["readings"] if status == 200 and body and body["readings"] else None

    rows = wait_until(readings, DATA_TIMEOUT_S, "simulated readings in the API", step=1)
    assert {r["metric"] for r in rows} <= {"pm25", "pm10", "no2", "temperature", "humidity"}

    # Output is relayed with a fixed-width name and kept per component.
    assert any(line.startswith("meetnet   | ") for line in up.lines)
    for name in COMPONENTS:
        assert (up.state_dir / "logs" / f"{name}.log").exists()

    up.seen.update(descendants(up.proc.pid))
    assert len(up.seen) >= 6  # four components and two brokers, at least
    assert_clean_stop(up)


def test_killed_child_is_restarted(up: UpRun) -> None:
    up.wait_line(f"{up.url}/docs", READY_TIMEOUT_S)
    old = wait_until(lambda: up.children().get("gateway"), 30, "the gateway")
    os.kill(old, signal.SIGKILL)

    new = wait_until(
        lambda: (pid := up.children().get("gateway")) and pid != old and pid,
        15,
        "a new gateway",
    )
    assert running(new)
    up.wait_line("gateway exited unexpectedly (killed by SIGKILL)", 5)
    up.wait_line("gateway restarted", 5)
    # The others were left alone.
    assert {"processor", "api"} <= set(up.children())
    assert_clean_stop(up)
