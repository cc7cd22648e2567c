"""``meetnet up``: the engines plus every component as supervised child processes.

Inside :func:`meetnet.services.engines` (local brokers when configured, schema migrated,
topics created) the supervisor starts ``python -m meetnet gateway``, ``processor``, ``api`` and
optionally ``simulate``. The children inherit this process's environment, so they read the same
``MEETNET_*`` settings.

* Output: each child's stdout and stderr go through one pipe; a reader thread per child relays
  it line by line to this process's stdout behind a fixed-width coloured name
  (``gateway   | ...``) and appends it to ``<state_dir>/logs/<name>.log``.
* Restarts: a child that exits is restarted after a back-off of 1 s, doubling up to 30 s, back
  to 1 s once a run lasted 60 s. The simulator finishing with exit code 0 is not restarted.
* Ready: once ``GET /health`` of the API answers 200, one line says where the API, its docs and
  the logs are.
* Stop: SIGINT or SIGTERM stops the simulator, gateway, processor and API in that order (each
  SIGTERM, then SIGKILL after a timeout), then the engines. A second signal hurries: everything
  still running is killed at once. Children are in their own process groups (a terminal's
  Ctrl-C reaches only the supervisor) and carry ``PR_SET_PDEATHSIG``, so even a killed
  supervisor leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from rich.console import Console
from rich.text import Text

from meetnet import procs, services
from meetnet.settings import Settings

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 60.0  # a child that ran this long starts again from BACKOFF_FIRST_S
POLL_S = 0.2
HEALTH_EVERY_S = 0.5
HEALTH_SLOW_S = 60.0  # say so once when the API is not healthy after this long
NAME_WIDTH = 10  # at least; wider when a child's name is longer (processor-12)
MAX_LINE = 64 * 1024  # longer output lines are relayed in pieces

# Stop order and how long each may take to stop on SIGTERM before it is killed.
GATEWAY_READY_S = 30.0  # at most this long for the gateway's subscription before the simulator
DRAIN_TIMEOUT_S = 15.0  # at most this long for the processor to catch up before it stops
STOP_TIMEOUT_S = {
    "simulator": 15.0,
    "gateway": 20.0,
    "processor": 20.0,
    "api": 10.0,
    "mqtt-auth": 5.0,
}
STYLES = {
    "gateway": "cyan",
    "processor": "magenta",
    "api": "green",
    "simulator": "yellow",
    "mqtt-auth": "blue",
    "meetnet": "bold blue",
}


@dataclass(frozen=True)
class ChildSpec:
    name: str  # unique: "gateway", or "gateway-2" when there are several
    cmd: list[str]
    restart_after_success: bool = True  # False: exit code 0 means done
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's own
    kind: str = ""  # gateway, processor, api, simulator; default: the name

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.name)


def _instances(
    kind: str, n: int, cmd: list[str], env: Callable[[int], dict[str, str]]
) -> list[ChildSpec]:
    """``n`` children of one kind: named like the kind when alone, else kind-1 ... kind-n."""
    if n == 1:
        return [ChildSpec(kind, cmd, env=env(0), kind=kind)]
    return [ChildSpec(f"{kind}-{i}", cmd, env=env(i), kind=kind) for i in range(1, n + 1)]


def child_specs(
    *,
    simulate: bool,
    sensors: int,
    rate: float,
    api_port: int,
    gateways: int = 1,
    processors: int = 1,
    api_workers: int = 1,
    gateway_client_id: str = "",
    broker_auth: bool = False,
) -> list[ChildSpec]:
    """What ``meetnet up`` runs, in stop order. Several gateways each get their own stable MQTT
    client id (``<gateway_client_id>-<i>``: the broker keeps a session, and re-delivers its
    un-acknowledged messages, per client id); one gateway keeps the configured id. Started
    in reverse order: the broker-auth sync, which keeps the local Mosquitto's credentials
    current, first."""
    meetnet = [sys.executable, "-m", "meetnet"]
    specs = []
    if simulate:
        specs.append(
            ChildSpec(
                "simulator",
                [
                    *meetnet,
                    "simulate",
                    "--sensors",
                    str(sensors),
                    "--rate",
                    str(rate),
                    "--no-progress",
                ],
                restart_after_success=False,
            )
        )
    base_id = gateway_client_id or default_gateway_client_id()

    def gateway_env(i: int) -> dict[str, str]:
        return {"MEETNET_GATEWAY_CLIENT_ID": f"{base_id}-{i}"} if i else {}

    specs += _instances("gateway", gateways, [*meetnet, "gateway"], gateway_env)
    specs += _instances("processor", processors, [*meetnet, "processor"], lambda i: {})
    api = [*meetnet, "api", "--port", str(api_port), "--workers", str(api_workers)]
    specs.append(ChildSpec("api", api))
    if broker_auth:
        specs.append(ChildSpec("mqtt-auth", [*meetnet, "broker-auth"]))
    return specs


def default_gateway_client_id() -> str:
    from ingest.gateway import _default_client_id

    return _default_client_id()


@dataclass
class _Child:
    spec: ChildSpec
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = BACKOFF_FIRST_S
    restart_at: float = 0.0
    restarts: int = 0
    log_start: int = 0  # size of the log file when this run of the child started
    done: bool = False
    readers: list[threading.Thread] = field(default_factory=list)
    log_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.spec.name


class _Interrupted(BaseException):
    """SIGINT/SIGTERM while the engines start (a BaseException so that nothing swallows it)."""


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        specs: list[ChildSpec],
        *,
        api_port: int,
        console: Console | None = None,
    ) -> None:
        self.settings = settings
        self.api_port = api_port
        self.log_dir = settings.state_dir / "logs"
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.children = [_Child(s, self.log_dir / f"{s.name}.log") for s in specs]
        self.name_width = max([NAME_WIDTH, *(len(s.name) + 1 for s in specs)])
        self._signals = 0
        self._phase = "starting"  # starting | running | stopping
        self._console_lock = threading.Lock()
        self._own_log: IO[bytes] | None = None
        self._health = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- output ---------------------------------------------------------------------------
    def _emit(self, name: str, line: str) -> None:
        kind = name.rsplit("-", 1)[0] if name[-1:].isdigit() else name
        text = Text(f"{name:<{self.name_width}}| ", style=STYLES.get(kind, "bold"))
        text.append(line)
        with self._console_lock, contextlib.suppress(OSError, ValueError):
            self.console.print(text)

    def say(self, message: str) -> None:
        """A line of the supervisor's own, on the console and in logs/supervisor.log."""
        self._emit("meetnet", message)
        if self._own_log is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with contextlib.suppress(OSError, ValueError):
                self._own_log.write(f"{stamp} {message}\n".encode())

    def _relay(self, child: _Child, proc: subprocess.Popen[bytes]) -> None:
        """Reader thread: the child's output to the console and its log file, line by line."""
        out = proc.stdout
        assert out is not None
        with open(child.log_path, "ab", buffering=0) as log, out:
            for raw in iter(lambda: out.readline(MAX_LINE), b""):
                with child.log_lock:
                    log.write(raw if raw.endswith(b"\n") else raw + b"\n")
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace").replace("\r", "")
                self._emit(child.name, line)

    # --- signals --------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags and kills here: the main thread reports (it may hold the console lock).
        self._signals += 1
        if self._signals >= 2:
            self._kill_everything()
        elif self._phase == "starting":
            self._phase = "stopping"
            raise _Interrupted

    def _kill_everything(self) -> None:
        """SIGKILL the supervised children's process groups and every other direct child
        (the engines' brokers): the hurried stop."""
        for c in self.children:
            if c.proc is not None and c.proc.returncode is None:
                with contextlib.suppress(OSError):
                    os.killpg(c.proc.pid, signal.SIGKILL)
        for pid in _child_pids(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    # --- children -------------------------------------------------------------------------
    def _start(self, child: _Child) -> None:
        try:
            child.log_start = child.log_path.stat().st_size  # logs append across runs
        except FileNotFoundError:
            child.log_start = 0
        try:
            proc = procs.spawn(
                child.spec.cmd,
                stdout=subprocess.PIPE,
                env={"PYTHONUNBUFFERED": "1", "MEETNET_INSTANCE": child.name, **child.spec.env},
            )
        except OSError as e:
            self.say(f"cannot start {child.name}: {e}")
            self._schedule_restart(child, time.monotonic(), uptime=0.0)
            return
        child.proc = proc
        child.started = time.monotonic()
        reader = threading.Thread(
            target=self._relay, args=(child, proc), name=f"relay-{child.name}", daemon=True
        )
        reader.start()
        child.readers = [t for t in child.readers if t.is_alive()] + [reader]
        if child.restarts:
            self.say(f"{child.name} restarted (pid {proc.pid}, restart {child.restarts})")

    def _schedule_restart(self, child: _Child, now: float, uptime: float) -> None:
        if uptime >= BACKOFF_RESET_AFTER_S:
            child.delay = BACKOFF_FIRST_S
        child.restart_at = now + child.delay
        child.restarts += 1
        self.say(f"restarting {child.name} in {child.delay:g}s")
        child.delay = min(child.delay * 2, BACKOFF_MAX_S)

    def _check(self, child: _Child, now: float) -> None:
        if child.done:
            return
        if child.proc is None:
            if now >= child.restart_at:
                self._start(child)
            return
        rc = child.proc.poll()
        if rc is None:
            return
        uptime = now - child.started
        child.proc = None
        if rc == 0 and not child.spec.restart_after_success:
            child.done = True
            self.say(f"{child.name} finished")
            return
        self.say(f"{child.name} exited unexpectedly ({_describe(rc)}) after {uptime:.1f}s")
        self._schedule_restart(child, now, uptime)

    def _drain(self) -> None:
        """Before the processor stops, let it store what the gateway already put in Kafka: the
        local Kafka-protocol broker keeps records in memory only, so they would be lost."""
        if not self.settings.manage_local_services:
            return  # an external Kafka keeps them; the next processor continues from there
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        lag = -1
        while time.monotonic() < deadline and self._signals < 2:
            try:
                lag = asyncio.run(services.consumer_lag(self.settings))
            except Exception as e:
                self.say(f"cannot read consumer lag ({e}); stopping the processor anyway")
                return
            if lag == 0:
                return
            time.sleep(0.5)
        if lag > 0:
            self.say(
                f"processor still {lag} Kafka records behind; they are lost with the "
                "memory-only local broker"
            )

    def _wait_logged(self, kind: str, needle: str, timeout: float) -> None:
        """Wait until every child of ``kind`` logged ``needle`` in its current run."""
        deadline = time.monotonic() + timeout
        waiting = [c for c in self.children if c.spec.kind == kind]
        while waiting and time.monotonic() < deadline and self._signals == 0:
            waiting = [c for c in waiting if not _logged_since_start(c, needle)]
            if waiting:
                time.sleep(0.1)
        if waiting and self._signals == 0:
            names = ", ".join(c.name for c in waiting)
            self.say(f"{names} not ready after {timeout:.0f} s; starting the rest anyway")

    def _stop_children(self) -> None:
        """Kind by kind in stop order; all instances of a kind stop together."""
        hurried = False
        for kind in dict.fromkeys(c.spec.kind for c in self.children):
            group = [(c, c.proc) for c in self.children if c.spec.kind == kind and c.proc]
            live = [(c, p) for c, p in group if p.poll() is None]
            if kind == "processor" and live:
                self._drain()
            for c, p in live:
                self.say(f"stopping {c.name}")
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S.get(kind, 10.0)
            for c, p in group:
                try:
                    rc = p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    procs.kill9(p)
                    rc = -signal.SIGKILL
                if self._signals >= 2 and not hurried:
                    hurried = True
                    self.say("second signal: killed everything still running")
                elif rc == -signal.SIGKILL and not hurried:
                    self.say(f"{c.name} did not stop within its timeout and was killed")
                # Anything the child left in its process group goes too.
                with contextlib.suppress(OSError):
                    os.killpg(p.pid, signal.SIGKILL)
        for child in self.children:
            for t in child.readers:
                t.join(timeout=2.0)

    # --- health ---------------------------------------------------------------------------
    def _healthy(self) -> bool:
        try:
            with self._health.open(f"http://127.0.0.1:{self.api_port}/health", timeout=5) as r:
                return int(r.status) == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    # --- main -----------------------------------------------------------------------------
    def run(self) -> int:
        if procs.port_open("127.0.0.1", self.api_port):
            self._emit(
                "meetnet",
                f"port {self.api_port} is taken; is another meetnet running? "
                "(choose another with --api-port)",
            )
            return 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        main_thread = threading.current_thread() is threading.main_thread()
        old = (
            {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            if main_thread
            else {}
        )
        try:
            with open(self.log_dir / "supervisor.log", "ab", buffering=0) as own_log:
                self._own_log = own_log
                return self._run()
        except _Interrupted:  # in the instant before _run's own handling
            return 0
        finally:
            self._own_log = None
            for s, h in old.items():
                signal.signal(s, h)

    def _run(self) -> int:
        s = self.settings
        where = (
            f"local Mosquitto on {s.mqtt_host}:{s.mqtt_port} and Kafka-protocol broker on "
            f"{s.kafka_bootstrap}"
            if s.manage_local_services
            else f"external engines (MQTT {s.mqtt_url}, Kafka {s.kafka_bootstrap})"
        )
        self.say(f"starting engines: {where}")
        try:
            with contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(services.engines(s))
                except Exception as e:  # not _Interrupted: that is a BaseException
                    self.say(f"could not start the engines: {e}")
                    self.say(f"logs are in {self.log_dir}")
                    return 1
                self._phase = "running"
                self.say("engines ready; starting " + ", ".join(c.name for c in self.children))
                try:
                    # Start in reverse stop order, and the simulator only once the gateway's
                    # subscription exists: the broker drops what is published to a share group
                    # that has never had a subscriber.
                    for c in reversed(self.children):
                        if c.name == "simulator":
                            self._wait_logged("gateway", " subscribed ", GATEWAY_READY_S)
                        self._start(c)
                    self._supervise()
                finally:
                    self._phase = "stopping"
                    self.say(
                        "stopping everything"
                        + ("" if self._signals >= 2 else " (Ctrl-C again to hurry)")
                    )
                    self._stop_children()
                    self.say("stopping engines")
            self.say("stopped")
            return 0
        except (_Interrupted, KeyboardInterrupt):
            self.say("interrupted while starting; stopped")
            return 0

    def _supervise(self) -> None:
        ready = False
        started = time.monotonic()
        next_health = started
        slow_said = False
        while not self._signals:
            now = time.monotonic()
            for c in self.children:
                self._check(c, now)
            if not ready and now >= next_health:
                next_health = now + HEALTH_EVERY_S
                if self._healthy():
                    ready = True
                    url = f"http://127.0.0.1:{self.api_port}"
                    self.say(
                        f"ready: API {url}  docs {url}/docs  logs {self.log_dir}  "
                        "(Ctrl-C stops everything)"
                    )
                elif not slow_said and now - started > HEALTH_SLOW_S:
                    slow_said = True
                    self.say(
                        f"the API is not answering on port {self.api_port} yet; "
                        f"see {self.log_dir / 'api.log'}"
                    )
            time.sleep(POLL_S)


def _logged_since_start(child: _Child, needle: str) -> bool:
    try:
        with open(child.log_path, "rb") as f:
            f.seek(child.log_start)
            return needle.encode() in f.read()
    except FileNotFoundError:
        return False


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def _child_pids(parent: int) -> list[int]:
    """Direct children of ``parent``, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            out.append(int(entry))
    return out


def run_up(
    settings: Settings,
    *,
    simulate: bool,
    sensors: int,
    rate: float,
    api_port: int,
    gateways: int = 1,
    processors: int = 1,
    api_workers: int = 1,
) -> int:
    """Run everything until SIGINT/SIGTERM; returns the exit code."""
    specs = child_specs(
        simulate=simulate,
        sensors=sensors,
        rate=rate,
        api_port=api_port,
        gateways=gateways,
        processors=processors,
        api_workers=api_workers,
        gateway_client_id=settings.gateway_client_id,
        broker_auth=settings.manage_local_services and settings.mqtt_auth,
    )
    sup = Supervisor(settings, specs, api_port=api_port)
    if processors > settings.kafka_partitions:
        sup.say(
            f"{processors} processors for {settings.kafka_partitions} partitions "
            f"(MEETNET_KAFKA_PARTITIONS): {processors - settings.kafka_partitions} will idle"
        )
    return sup.run()
