"""What every benchmark script shares, in one place, so that their figures are computed one way.

- a throw-away ``AIRFLOW_HOME`` (Airflow reads it on import, so it is set before anything imports it);
- the Agora simulator in its own process (``python -m airflow_provider_agora.simulator``), so it
  shares neither the GIL nor the event loop with what is measured, started with ``--port 0`` and
  ready once its first stdout line names the URL it listens on;
- worker processes with the ready/go handshake: each prints ``ready`` once set up, then reads one
  line ``go <begin epoch> <deadline epoch>`` on stdin, so that start-up is never part of a figure;
- CPU and RSS sampling of this process, of process groups and of the whole machine (Linux ``/proc``);
- ONE quantile definition (``quantile``) for every median, p50, p95, p99 and max;
- the Markdown and number formatters.

This module imports nothing from Airflow or the provider at import time: the scripts import it
first, then call ``use_throwaway_airflow_home`` before they import Airflow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

REPO_ROOT = Path(__file__).resolve().parents[1]
AGORA_RATE = 10  # Agora's documented limit: requests per second per account
# The simulator's default account, and the Airflow connection naming it.
CUSTOMER_ID = "load-customer"
CUSTOMER_SECRET = "load-secret-Xk3p"
APP_ID = "loadapp0123456789abcdef012345678"
CONN_ID = "agora_default"
RSS_SAMPLE_SECONDS = 0.2  # VmHWM gives the exact peak where it can be reset
READY_LINE = "Agora simulator listening on "


# -- environment ----------------------------------------------------------------------------------


def use_throwaway_airflow_home(prefix: str) -> Path:
    """Point ``AIRFLOW_HOME`` at a new temporary folder (the caller removes it at the end).

    Airflow reads ``AIRFLOW_HOME`` once, on import: call this before anything imports Airflow.
    """
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    return home


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment plus the repository on ``PYTHONPATH``, for child processes."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def agora_connection_json(url: str, customer_id: str, secret: str, app_id: str, **extra: Any) -> str:
    """An ``AIRFLOW_CONN_*`` value for the simulator's account (``extra`` goes into the extras)."""
    return json.dumps(
        {
            "conn_type": "agora",
            "host": url,
            "login": customer_id,
            "password": secret,
            "extra": {"app_id": app_id, **extra},
        }
    )


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def package_version(name: str) -> str:
    """The installed version of a distribution, or ``not installed``."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average(digits: int = 2) -> str:
    """The 1/5/15-minute load averages as ``a / b / c`` (``?`` where the OS has none)."""
    try:
        return " / ".join(f"{value:.{digits}f}" for value in os.getloadavg())
    except OSError:
        return "?"


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` s; ``None`` and exited are fine."""
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM raises SystemExit, so ``finally`` blocks still stop the simulator and the workers."""

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def silence_logs() -> None:
    """Keep Airflow's per-poll log lines (structlog and stdlib) rendered, but written to /dev/null,
    so that the cost of logging stays in the CPU figures without flooding the terminal."""
    import logging

    import airflow  # noqa: F401 - Airflow configures its logging on import: silence what it set up
    import structlog

    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    factory = structlog.get_config().get("logger_factory")
    if hasattr(factory, "io"):
        setattr(factory, "io", sink)  # noqa: B010 - Airflow's factory, not typed
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sink)


# -- the simulator process ------------------------------------------------------------------------


class SimulatorProcess:
    """``python -m airflow_provider_agora.simulator`` in a child process, driven over its control API.

    Port 0 lets the child pick a free port; it is ready once its first stdout line names its URL
    (with ``notify_url``, a second line names where it sends notifications).
    """

    def __init__(
        self,
        customer_id: str = CUSTOMER_ID,
        customer_secret: str = CUSTOMER_SECRET,
        app_id: str = APP_ID,
        *,
        speed: float = 1.0,
        rate_limit: int = AGORA_RATE,
        backlog: int = 4096,
        notify_url: str | None = None,
        notify_secret: str | None = None,
    ) -> None:
        self.customer_id = customer_id
        self.customer_secret = customer_secret
        self.app_id = app_id
        self.speed = speed
        self.rate_limit = rate_limit
        # socketserver's default listen queue of 5 drops SYNs when hundreds of new connections arrive
        # at once; Agora's gateway has no such limit, so neither should the simulator.
        self.backlog = backlog
        self.notify_url = notify_url
        self.notify_secret = notify_secret
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.command: list[str] = []

    def start(self) -> SimulatorProcess:
        """Start the child and wait for its ready line; raises if it exits or says anything else."""
        self.command = [
            sys.executable, "-m", "airflow_provider_agora.simulator",
            "--port", "0",
            "--customer-id", self.customer_id,
            "--customer-secret", self.customer_secret,
            "--app-id", self.app_id,
            "--speed", f"{self.speed:g}",
            "--rate-limit", str(self.rate_limit),
            "--backlog", str(self.backlog),
        ]  # fmt: skip
        if self.notify_url is not None:
            self.command += ["--notify-url", self.notify_url, "--notify-secret", self.notify_secret or ""]
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True, env=child_env())
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith(READY_LINE):
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line[len(READY_LINE) :]
        if self.notify_url is not None:
            self.process.stdout.readline()  # "Sending notifications to ..."
        return self

    def stop(self) -> None:
        """Stop the child; safe to call twice."""
        process, self.process = self.process, None
        stop_process(process)
        if process is not None and process.stdout is not None:
            process.stdout.close()

    def control(self, method: str, name: str, payload: Any = None) -> Any:
        """One control request (``/_simulator/<name>``); returns its JSON answer."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_simulator/{name}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read())

    def recordings(self, count: int) -> list[dict[str, Any]]:
        """Recordings at status 5 for the whole run (end in an hour, then held an hour)."""
        return list(self.control("POST", "recordings", {"end_times": [time.time() + 3600] * count, "hold": 3600}))

    def connection_json(self, **extra: Any) -> str:
        """An ``AIRFLOW_CONN_*`` value for this simulator's account."""
        return agora_connection_json(self.url, self.customer_id, self.customer_secret, self.app_id, **extra)


# -- worker processes: the ready/go handshake -----------------------------------------------------


@dataclass
class Worker:
    """One worker process; a thread reads its stdout to EOF (so a chatty worker never blocks on a
    full pipe) and notes its ``ready`` line; its last JSON line is its result."""

    role: str
    process: subprocess.Popen[str]
    stderr_path: Path
    sids: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self) -> None:
        """Collect stdout to EOF; set ``ready`` on the worker's ``ready`` line."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "ready":
                self.ready.set()
            self.lines.append(line)

    def result(self) -> dict[str, Any] | None:
        """The last line of stdout that parses as a JSON object."""
        for line in reversed(self.lines):
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    return dict(json.loads(line))
        return None


def spawn_worker(
    role: str, command: list[str], env: dict[str, str], stderr_path: Path, sids: set[str] | None = None
) -> Worker:
    """Start ``command`` with pipes for the handshake and its stderr in ``stderr_path``."""
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
    worker = Worker(role, process, stderr_path, sids or set())
    worker.reader = threading.Thread(target=worker.read, daemon=True)
    worker.reader.start()
    return worker


def wait_until_ready(workers: Sequence[Worker], timeout: float) -> None:
    """Block until every worker said ``ready``; raises with the laggard's stderr after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        if not worker.ready.wait(timeout=max(0.0, deadline - time.monotonic())):
            raise RuntimeError(
                f"a {worker.role} worker was not ready within {timeout:.0f} s "
                f"(exit {worker.process.poll()}): {worker.stderr_path.read_text()[-2000:]}"
            )


def send_go(workers: Sequence[Worker], begin: float, deadline: float) -> None:
    """Tell every worker to start at ``begin`` and to stop at ``deadline`` (epoch seconds)."""
    for worker in workers:
        assert worker.process.stdin is not None
        worker.process.stdin.write(f"go {begin:.6f} {deadline:.6f}\n")
        worker.process.stdin.flush()


def kill_workers(workers: Sequence[Worker]) -> None:
    """SIGKILL every worker still running (the harness's own children only) and reap them."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
    for worker in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=10)


def wait_for_go() -> tuple[float, float, resource.struct_rusage]:
    """Worker side: say ready; the answer is ``go <begin> <deadline>``. Sleeps until ``begin``.

    Returns (begin, deadline, the rusage at the go line): CPU is counted from the go, not from start-up.
    """
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 3 or line[0] != "go":
        raise SystemExit(f"expected 'go BEGIN DEADLINE', got {line!r}")
    begin, deadline = float(line[1]), float(line[2])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(max(0.0, begin - time.time()))  # the harness's synchronised start
    return begin, deadline, usage


def cpu_since(usage: resource.struct_rusage) -> float:
    """User + system CPU seconds of this process since ``usage`` was taken."""
    now = resource.getrusage(resource.RUSAGE_SELF)
    return (now.ru_utime - usage.ru_utime) + (now.ru_stime - usage.ru_stime)


# -- CPU and RSS ----------------------------------------------------------------------------------


def proc_status_kib(field_name: str, pid: int | str = "self") -> int | None:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/<pid>/status`` in KiB (None off Linux)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so a scenario's peak is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples VmRSS on the event loop being measured; the peak also comes from VmHWM when resettable."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, proc_status_kib("VmRSS") or 0)
            await asyncio.sleep(RSS_SAMPLE_SECONDS)

    def start(self) -> None:
        """Begin sampling on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self, hwm_valid: bool) -> int:
        """Stop sampling; return the peak RSS in KiB."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if hwm_valid:
            self.peak_kib = max(self.peak_kib, proc_status_kib("VmHWM") or 0)
        return self.peak_kib


def _stat_fields(pid: str) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (field 3 onwards), None if it is gone."""
    try:
        return (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def group_pids(pgid: int) -> list[int]:
    """The live processes of a process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


def group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in a process group (a server and any children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in group_pids(pgid):
        if (fields := _stat_fields(str(pid))) is not None:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def thread_count(pid: int) -> int | None:
    """How many threads a process has (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine (Linux ``/proc/stat``); (0, 0) elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


# -- statistics: the one quantile -----------------------------------------------------------------


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile: of the n values sorted, the k-th (1-based), k = max(1, ceil(q * n)).

    Every median, p50, p95, p99 and max of every benchmark is this (median = ``quantile(v, 0.5)``,
    max = ``quantile(v, 1.0)``), so figures in different tables are computed the same way. It is
    always one of the measured values (no interpolation): for an even n the median is the lower
    of the two middle values, and p99 of 100 values is the 99th. ``q * n`` is rounded to 9
    decimals first, so that 0.99 * 5000 counts as 4950 and not 4950.000...1. None for no values.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], not {q!r}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(round(q * len(ordered), 9)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float | None:
    """``quantile(values, 0.5)``: the nearest-rank median (a measured value, never an average)."""
    return quantile(values, 0.5)


def quantiles(values: Sequence[float], qs: Sequence[float] = (0.5, 0.99, 1.0)) -> list[float | None]:
    """``quantile`` at each of ``qs``."""
    return [quantile(values, q) for q in qs]


# -- formatting -----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    """A number with ``digits`` decimals; an int as it is; ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}"


def fmt_quantiles(values: Sequence[float], digits: int = 2, qs: Sequence[float] = (0.5, 0.99, 1.0)) -> str:
    """``median / p99 / max`` (or the given ``qs``) of ``values`` as one cell; ``-`` for none."""
    if not values:
        return "-"
    return " / ".join(fmt(value, digits) for value in quantiles(values, qs))


def ratio(b: float | None, a: float | None) -> str:
    """``b / a`` as ``1.4x``; ``-`` where either is missing or both are 0, ``∞ (A = 0)`` for a = 0."""
    if a is None or b is None:
        return "-"
    if a == 0:
        return "-" if b == 0 else "∞ (A = 0)"
    return f"{b / a:.1f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table's lines; ``align`` has one letter a column (``l`` or ``r``, default ``r``
    except the first column)."""
    letters = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if letter == "r" else "---" for letter in letters]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(rule) + "|",
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser, described by the first paragraph of its docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)


# -- waits and Redis streams ----------------------------------------------------------------------


async def run_wait_to_end(trigger: BaseTrigger) -> tuple[dict[str, Any], int]:
    """Run one wait to its end, as triggerer and sensor do; return its last event's payload and how
    many ``checkpoint`` events it re-deferred on.

    A ``checkpoint`` event (the trigger hands what it learned back to the sensor, which defers
    again with it) is followed at once by a new trigger built from the old one's kwargs with the
    event's ``memory`` and ``end_time``: the worker round trip in between is not modelled.
    """
    checkpoints = 0
    while True:
        payload: dict[str, Any] = {}
        async for event in trigger.run():
            payload = dict(event.payload)
        if payload.get("status") != "checkpoint":
            return payload, checkpoints
        checkpoints += 1
        _, kwargs = trigger.serialize()
        kwargs["memory"] = payload.get("memory")
        kwargs["end_time"] = float(payload.get("end_time") or kwargs["end_time"])
        trigger = type(trigger)(**kwargs)


def stream_entries(client: Any, key: str, count: int = 1000) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Every entry of a Redis stream, oldest first, ``count`` per ``XRANGE`` (each page starts at the
    last id of the one before, which is dropped)."""
    last = "-"
    while True:
        chunk = client.xrange(key, min=last, max="+", count=count)
        if last != "-":
            chunk = chunk[1:]
        if not chunk:
            return
        yield from chunk
        last = chunk[-1][0]


def run_meta() -> dict[str, Any]:
    """When and on what a run was measured: UTC date, cores, platform, Python, Airflow (imported here)."""
    import datetime
    import platform

    import airflow

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "airflow": airflow.__version__,
    }
