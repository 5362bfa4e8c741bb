"""Benchmark: one Agora request budget per process, or one for all processes in Redis (redis_conn_id).

Separate worker processes, each importing Airflow and the provider as a task process or a
triggerer does, talk to one Agora simulator that limits like Agora (10 accepted requests in any
sliding second per account, 429 above; its own process on loopback). Each load runs twice: with
the in-process budget (no ``redis_conn_id``: every process keeps its own 10/s) and with the shared
budget (``redis_conn_id`` naming a real ``redis-server`` started on a free loopback port).

Loads (each with one process starting recordings: ``acquire`` then ``start``, every --start-gap s):

1. 8 poke-mode sensors: one process each, ``query`` on its own recording, then --poke-interval s.
2. 32 of them.
3. 2 triggerer-like processes, each with --waits deferred waits on one event loop
   (``AgoraAsyncHook.query`` loops, --wait-interval s apart, first polls spread over one interval).

Everything is counted from the simulator's request log (arrival times, status, path), the workers'
own reports (CPU time from the start signal to the end, the ``SharedBudget.round_trips`` counter)
and Redis's ``INFO``. A script, not a test: nothing fails on the figures.

    .venv/bin/python benchmarks/shared_budget.py                      # ~6-8 min; Markdown on stdout
    .venv/bin/python benchmarks/shared_budget.py --loads 1 --seconds 20 --json /tmp/shared.json

Workers synchronise like ``tests/integration/budget_worker.py`` (``ready`` on stdout, then one line
on stdin), so start-up of 32 Airflow-importing processes is not part of any figure. The worker
logic is this file run with ``--worker`` (its own copy, because it also times CPU from the start
signal only, pre-imports the HTTP and Redis clients, spreads waits over their interval and stops
every wait at one wall-clock deadline).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from airflow_provider_agora.simulator import max_in_sliding_second  # noqa: E402  (stdlib only)

CUSTOMER_ID = "budget-customer"
CUSTOMER_SECRET = "budget-secret-Vn4r"
APP_ID = "budgetapp0123456789abcdef0123456"
REDIS_PASSWORD = "bench-redis-pw-Tq2m"
LIMIT = 10  # Agora's limit: requests per second per account
READY_TIMEOUT = 300.0  # 32 Airflow-importing processes on 2 cores take ~1 min
DRAIN_TIMEOUT = 90.0  # after the deadline: retries in flight finish (5 attempts, <= ~19 s of waits)
START_TIMING_SLACK = 1.0  # the start signal names a moment this far ahead, so all begin together


# ================================================================================================
# Worker side: ``python benchmarks/shared_budget.py --worker ROLE JOB_FILE``
# ================================================================================================


def _worker_main(role: str, job_file: str) -> None:
    if "AIRFLOW_HOME" not in os.environ:  # the harness gives each worker its own
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="agora-shared-budget-worker-")
    with open(job_file) as handle:
        job = json.load(handle)
    if role == "poll":
        result = _worker_poll(job)
    elif role == "start":
        result = _worker_start(job)
    elif role == "waits":
        result = _worker_waits(job)
    else:
        raise SystemExit(f"unknown role {role!r}")
    print(json.dumps(result), flush=True)


def _wait_for_go() -> tuple[float, float, resource.struct_rusage]:
    """Say ready; the answer is ``go <begin epoch> <deadline epoch>``. CPU is counted from here."""
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 3 or line[0] != "go":
        raise SystemExit(f"expected 'go BEGIN DEADLINE', got {line!r}")
    begin, deadline = float(line[1]), float(line[2])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(max(0.0, begin - time.time()))  # the harness's synchronised start
    return begin, deadline, usage


def _cpu_since(usage: resource.struct_rusage) -> float:
    now = resource.getrusage(resource.RUSAGE_SELF)
    return (now.ru_utime - usage.ru_utime) + (now.ru_stime - usage.ru_stime)


def _warm_up_sync(hook: Any) -> None:
    """Everything a long-running task process has done before: read the connection, import the
    HTTP and Redis clients, create the session and the Redis client (neither connects yet)."""
    hook.settings  # noqa: B018
    hook.session  # noqa: B018  (imports requests)
    budget = hook.transport.budget
    if hasattr(budget, "_script"):
        import redis  # noqa: F401

        budget._script()


def _round_trips(budget: Any) -> int | None:
    return getattr(budget, "round_trips", None)


def _worker_poll(job: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_agora.exceptions import AgoraError
    from airflow_provider_agora.hooks.agora import AgoraHook

    hook = AgoraHook()  # the default retry policy: 5 attempts, 1, 2, 4, 8 s (+ jitter, >= Retry-After)
    _warm_up_sync(hook)
    _begin, deadline, usage = _wait_for_go()
    done = failed = 0
    while time.time() < deadline:
        try:
            hook.query(job["resource_id"], job["sid"], "mix")
            done += 1
        except AgoraError as error:
            failed += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
        time.sleep(job["interval"])
    return {
        "role": "poll",
        "sid": job["sid"],
        "done": done,
        "failed": failed,
        "round_trips": _round_trips(hook.transport.budget),
        "cpu_seconds": _cpu_since(usage),
    }


def _worker_start(job: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_agora.exceptions import AgoraError
    from airflow_provider_agora.hooks.agora import AgoraHook

    hook = AgoraHook()
    _warm_up_sync(hook)
    begin, deadline, usage = _wait_for_go()
    started: list[dict[str, Any]] = []
    failed_acquires = failed_starts = 0
    number = 0
    # One recording every `gap` seconds, the first `gap` / 2 in; none begun in the last 2 s.
    while (planned := begin + job["gap"] * (number + 0.5)) < deadline - 2.0:
        time.sleep(max(0.0, planned - time.time()))
        cname = f"bench-room-{os.getpid()}-{number}"
        number += 1
        try:
            resource_id = hook.acquire(cname, 4242)["resourceId"]
        except AgoraError as error:  # gave up after the retry policy's attempts
            failed_acquires += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
            continue
        acquired = time.time()  # the acquire's answer, retries included
        try:
            sid = hook.start(resource_id, cname, 4242, "mix", {})["sid"]
        except AgoraError as error:
            failed_starts += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
            continue
        started.append({"cname": cname, "sid": sid, "start_call_seconds": time.time() - acquired})
    return {
        "role": "start",
        "attempted": number,
        "started": started,
        "failed": failed_acquires + failed_starts,
        "failed_acquires": failed_acquires,
        "failed_starts": failed_starts,
        "round_trips": _round_trips(hook.transport.budget),
        "cpu_seconds": _cpu_since(usage),
    }


def _worker_waits(job: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    from airflow_provider_agora.exceptions import AgoraError
    from airflow_provider_agora.hooks.agora import AgoraAsyncHook

    async def run() -> dict[str, Any]:
        hook = AgoraAsyncHook()
        await hook.get_settings()
        shared = await hook._shared_client()  # imports httpx, creates the account's shared client
        budget = shared.transport.budget
        if hasattr(budget, "_async_script"):
            import redis.asyncio  # noqa: F401

            budget._async_script()
        # Blocking here is fine: nothing runs on this loop yet.
        _begin, deadline, usage = _wait_for_go()
        counts = {"done": 0, "failed": 0, "in_query": 0}
        rng = random.Random(job["seed"])
        interval = job["interval"]

        async def wait(recording: dict[str, str], first_after: float) -> None:
            one = AgoraAsyncHook()
            await asyncio.sleep(first_after)
            while time.time() < deadline:
                counts["in_query"] += 1
                try:
                    await one.query(recording["resource_id"], recording["sid"], "mix")
                    counts["done"] += 1
                except AgoraError as error:
                    counts["failed"] += 1
                    print(f"error: {error}", file=sys.stderr, flush=True)
                finally:
                    counts["in_query"] -= 1
                await asyncio.sleep(interval)

        tasks = [asyncio.ensure_future(wait(recording, rng.uniform(0, interval))) for recording in job["recordings"]]
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.time()))
        in_query_at_deadline = counts.pop("in_query")  # polls queued for the budget (or in flight)
        for task in pending:  # every wait ends with the run, queued or asleep
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        result = {
            "role": "waits",
            **counts,
            "in_query_at_deadline": in_query_at_deadline,
            "round_trips": _round_trips(budget),
            "cpu_seconds": _cpu_since(usage),
        }
        await AgoraAsyncHook.close_shared_clients()
        return result

    return asyncio.run(run())


# ================================================================================================
# Harness side
# ================================================================================================


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SimulatorProcess:
    """``python -m airflow_provider_agora.simulator`` in its own process, driven over its control API."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.command: list[str] = []

    def start(self) -> SimulatorProcess:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.command = [
            sys.executable, "-m", "airflow_provider_agora.simulator",
            "--port", "0",
            "--customer-id", CUSTOMER_ID,
            "--customer-secret", CUSTOMER_SECRET,
            "--app-id", APP_ID,
            "--speed", str(self.speed),
            "--rate-limit", str(LIMIT),
            "--backlog", "1024",
        ]  # fmt: skip
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        prefix = "Agora simulator listening on "
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line[len(prefix) :]
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def control(self, method: str, name: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_simulator/{name}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read())

    def recordings(self, count: int) -> list[dict[str, str]]:
        """Recordings at status 5 for the whole run (end in an hour, then held an hour)."""
        return self.control("POST", "recordings", {"end_times": [time.time() + 3600] * count, "hold": 3600})


class RedisServer:
    """A real ``redis-server`` on a free loopback port (as ``tests/support.py``'s ``RedisServer``)."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.version = ""
        self._client: Any = None

    def start(self) -> RedisServer:
        if self.binary is None:
            raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--requirepass", REDIS_PASSWORD,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                self.version = str(self.info("server")["redis_version"])
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.05)  # polling the server's readiness, with a deadline

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def client(self) -> Any:
        """The harness's one connection (so that its own commands between two readings are known)."""
        import redis

        if self._client is None:
            self._client = redis.Redis(host="127.0.0.1", port=self.port, password=REDIS_PASSWORD, socket_timeout=5)
        return self._client

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def info(self, section: str) -> dict[str, Any]:
        import redis

        try:
            return dict(self.client().info(section))
        except redis.ConnectionError as error:
            raise OSError(str(error)) from error

    def flush(self) -> None:
        self.client().flushall()

    def counters(self) -> dict[str, float]:
        """Redis's own CPU (user + sys) and how many scripts it was asked to run (``EVALSHA``/``EVAL``,
        including ``NOSCRIPT`` answers; not the commands inside the script, which ``INFO stats`` counts)."""
        cpu, commands = self.info("cpu"), self.info("commandstats")
        scripts = sum(
            float(commands.get(name, {}).get(kind, 0))
            for name in ("cmdstat_evalsha", "cmdstat_eval")
            for kind in ("calls", "rejected_calls")
        )
        return {"cpu_seconds": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), "commands": scripts}

    def uri(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"


@dataclass
class Worker:
    role: str
    process: subprocess.Popen[str]
    stderr_path: Path
    sids: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self) -> None:
        """Collect stdout to EOF (so a chatty worker never blocks on a full pipe); note ``ready``."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == "ready":
                self.ready.set()
            self.lines.append(line)

    def result(self) -> dict[str, Any] | None:
        for line in reversed(self.lines):
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    return dict(json.loads(line))
        return None


@dataclass(frozen=True)
class Load:
    key: str
    title: str
    pollers: int = 0
    triggerers: int = 0


LOADS = {
    "1": Load("1", "8 poke-mode sensors + starter", pollers=8),
    "2": Load("2", "32 poke-mode sensors + starter", pollers=32),
    "3": Load("3", "2 triggerers x 500 waits + starter", triggerers=2),
}


@dataclass
class Case:
    """One load under one budget: what was measured."""

    load: str
    budget: str
    processes: int
    demand_per_second: float
    startup_seconds: float
    requests: int = 0
    status_429: int = 0
    other_errors: int = 0
    failed_calls: int = 0
    peak_in_sliding_second: int = 0
    steady_window: tuple[float, float] = (0.0, 0.0)
    accepted_per_second_steady: float = 0.0
    starts_attempted: int = 0
    starts_done: int = 0
    acquired_never_started: int = 0  # the start gave up (5 attempts) after its acquire succeeded
    worst_acquire_to_start_seconds: float | None = None
    most_requests_between: int | None = None
    gaps: list[dict[str, float]] = field(default_factory=list)
    share_min: float | None = None
    share_max: float | None = None
    shares: list[int] = field(default_factory=list)
    round_trips_per_request: float | None = None
    redis_commands_per_request: float | None = None
    worker_cpu_ms_per_request: float = 0.0
    redis_cpu_ms_per_request: float | None = None
    waits_polled_per_process: list[int] = field(default_factory=list)
    machine_cpu_busy: float | None = None  # share of both cores busy (everything, not only this run)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sim = SimulatorProcess(args.speed)
        self.redis = RedisServer()
        self.workdir = Path(tempfile.mkdtemp(prefix="agora-shared-budget-"))
        self.workers: list[Worker] = []

    # -- one case ----------------------------------------------------------------------------

    def _env(self, shared: bool) -> dict[str, str]:
        extra: dict[str, Any] = {"app_id": APP_ID}
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
        if shared:
            extra["redis_conn_id"] = "agora_budget"
            env["AIRFLOW_CONN_AGORA_BUDGET"] = self.redis.uri()
        else:
            env.pop("AIRFLOW_CONN_AGORA_BUDGET", None)
        env["AIRFLOW_CONN_AGORA_DEFAULT"] = json.dumps(
            {
                "conn_type": "agora",
                "host": self.sim.url,
                "login": CUSTOMER_ID,
                "password": CUSTOMER_SECRET,
                "extra": extra,
            }
        )
        return env

    def _spawn(self, role: str, job: dict[str, Any], env: dict[str, str], sids: set[str]) -> None:
        number = len(self.workers)
        job_file = self.workdir / f"job-{number}.json"
        job_file.write_text(json.dumps(job))
        stderr_path = self.workdir / f"worker-{number}-{role}.err"
        env = {**env, "AIRFLOW_HOME": str(self.workdir / f"airflow-home-{number}")}  # one each, as on separate hosts
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", role, str(job_file)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                cwd=REPO_ROOT,
            )
        worker = Worker(role, process, stderr_path, sids)
        worker.reader = threading.Thread(target=worker.read, daemon=True)
        worker.reader.start()
        self.workers.append(worker)

    def _kill_workers(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
        for worker in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=10)

    def run_case(self, load: Load, shared: bool) -> Case:
        args = self.args
        budget = "shared (Redis)" if shared else "in-process"
        env = self._env(shared)
        self.workers = []
        launched = time.monotonic()
        if load.pollers:
            for recording in self.sim.recordings(load.pollers):
                job = {"resource_id": recording["resource_id"], "sid": recording["sid"], "interval": args.poke_interval}
                self._spawn("poll", job, env, {recording["sid"]})
        for number in range(load.triggerers):
            recordings = self.sim.recordings(args.waits)
            job = {"recordings": recordings, "interval": args.wait_interval, "seed": number}
            self._spawn("waits", job, env, {recording["sid"] for recording in recordings})
        self._spawn("start", {"gap": args.start_gap}, env, set())
        processes = len(self.workers)
        demand = load.pollers / args.poke_interval + load.triggerers * args.waits / args.wait_interval
        demand += 2 / args.start_gap

        try:
            deadline = time.monotonic() + READY_TIMEOUT
            for worker in self.workers:
                if not worker.ready.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(
                        f"a {worker.role} worker was not ready within {READY_TIMEOUT:.0f} s "
                        f"(exit {worker.process.poll()}): {worker.stderr_path.read_text()[-2000:]}"
                    )
            startup = time.monotonic() - launched
            # A clean slate: the simulator's log and counters, Redis's keys and counters.
            self.sim.control("DELETE", "requests")
            self.sim.control("DELETE", "stats")
            redis_before = redis_after = {"cpu_seconds": 0.0, "commands": 0.0}
            if self.redis.running:
                self.redis.flush()
                redis_before = self.redis.counters()
            ticks_before = _cpu_ticks()
            begin = time.time() + START_TIMING_SLACK
            end = begin + args.seconds
            for worker in self.workers:
                assert worker.process.stdin is not None
                worker.process.stdin.write(f"go {begin:.6f} {end:.6f}\n")
                worker.process.stdin.flush()
            for worker in self.workers:
                remaining = max(1.0, end + DRAIN_TIMEOUT - time.time())
                try:
                    worker.process.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait(timeout=10)
                if worker.reader is not None:
                    worker.reader.join(timeout=10)
            ticks_after = _cpu_ticks()
            if self.redis.running:
                redis_after = self.redis.counters()
            log = self.sim.control("GET", "requests")
        finally:
            self._kill_workers()

        case = Case(load.key, budget, processes, demand, startup)
        busy, total = (after - before for after, before in zip(ticks_after, ticks_before, strict=True))
        case.machine_cpu_busy = busy / total if total else None
        self._measure(case, log, begin, end, shared, redis_before, redis_after)
        return case

    # -- figures -----------------------------------------------------------------------------

    def _measure(
        self,
        case: Case,
        log: list[dict[str, Any]],
        begin: float,
        end: float,
        shared: bool,
        redis_before: dict[str, float],
        redis_after: dict[str, float],
    ) -> None:
        log = sorted(log, key=lambda record: record["time"])
        results = []
        for worker in self.workers:
            result = worker.result()
            if result is None or worker.process.returncode != 0:
                case.notes.append(
                    f"{worker.role} worker exited {worker.process.returncode} without a result: "
                    f"{worker.stderr_path.read_text()[-500:]!r}"
                )
                result = {}
            results.append(result)
        accepted = [record for record in log if record["status"] != 429]
        case.requests = len(log)
        case.status_429 = sum(1 for record in log if record["status"] == 429)
        case.other_errors = sum(1 for record in log if record["status"] not in (200, 429))
        case.failed_calls = sum(int(result.get("failed", 0)) for result in results)
        case.peak_in_sliding_second = max_in_sliding_second([record["time"] for record in log])

        low, high = begin + self.args.warmup, end - self.args.tail
        case.steady_window = (round(low - begin, 3), round(high - begin, 3))
        steady = [record for record in accepted if low <= record["time"] <= high]
        case.accepted_per_second_steady = len(steady) / (high - low)

        # acquire -> start, from the simulator's log: each accepted start and the accepted acquire before it.
        starter = next(result for worker, result in zip(self.workers, results, strict=True) if worker.role == "start")
        case.starts_attempted = int(starter.get("attempted", 0))
        case.starts_done = len(starter.get("started", []))
        case.acquired_never_started = int(starter.get("failed_starts", 0))
        last_acquire: int | None = None
        for index, record in enumerate(log):
            if record["status"] != 200:
                continue
            if record["path"].endswith("/acquire"):
                last_acquire = index
            elif record["path"].endswith("/start") and last_acquire is not None:
                case.gaps.append(
                    {
                        "seconds": record["time"] - log[last_acquire]["time"],
                        "between": index - last_acquire - 1,
                    }
                )
                last_acquire = None
        if case.gaps:
            case.worst_acquire_to_start_seconds = max(gap["seconds"] for gap in case.gaps)
            case.most_requests_between = max(int(gap["between"]) for gap in case.gaps)

        # Shares of the polling processes (or triggerers) in the steady window, against an equal share.
        sharers = [worker for worker in self.workers if worker.role in ("poll", "waits")]
        case.shares = [sum(1 for record in steady if _sid_of(record["path"]) in worker.sids) for worker in sharers]
        if case.shares and sum(case.shares):
            equal = sum(case.shares) / len(case.shares)
            case.share_min, case.share_max = min(case.shares) / equal, max(case.shares) / equal
        if any(worker.role == "waits" for worker in self.workers):
            case.waits_polled_per_process = [
                len({_sid_of(record["path"]) for record in accepted} & worker.sids)
                for worker in self.workers
                if worker.role == "waits"
            ]

        accepted_total = len(accepted)
        cpu = sum(float(result.get("cpu_seconds", 0.0)) for result in results)
        case.worker_cpu_ms_per_request = 1000 * cpu / accepted_total if accepted_total else 0.0
        if shared:
            trips = sum(int(result.get("round_trips") or 0) for result in results)
            case.round_trips_per_request = trips / accepted_total if accepted_total else None
            commands = redis_after["commands"] - redis_before["commands"]
            case.redis_commands_per_request = commands / accepted_total if accepted_total else None
            redis_cpu = redis_after["cpu_seconds"] - redis_before["cpu_seconds"]
            case.redis_cpu_ms_per_request = 1000 * redis_cpu / accepted_total if accepted_total else None
        queued = [int(result.get("in_query_at_deadline", 0)) for result in results if result.get("role") == "waits"]
        if queued:
            case.notes.append(
                f"polls still queued for the budget (or in flight) per triggerer at the deadline: {queued}; "
                f"waits polled at least once: {case.waits_polled_per_process} of {self.args.waits} each"
            )
        if starter.get("failed"):
            case.notes.append(
                f"the starter gave up (5 attempts) on {starter.get('failed_acquires')} acquire(s) "
                f"and {starter.get('failed_starts')} start(s)"
            )
        slowest = max((float(one["start_call_seconds"]) for one in starter.get("started", [])), default=None)
        if slowest is not None and slowest > 2:
            case.notes.append(f"slowest start call (retries included), as the starter saw it: {slowest:.2f} s")
        if case.failed_calls - int(starter.get("failed", 0)):
            case.notes.append(f"{case.failed_calls - int(starter.get('failed', 0))} poll(s) gave up after 5 attempts")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine (Linux ``/proc/stat``); (0, 0) elsewhere."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _sid_of(path: str) -> str | None:
    """The sid in ``.../sid/<sid>/mode/<mode>/query`` (None for acquire and start)."""
    parts = path.split("/")
    if "sid" in parts:
        index = parts.index("sid")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


# -- report ---------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(cases: list[Case]) -> str:
    header = (
        "| Load | Budget | Demand/s | Requests | **429** | Failed calls | **Peak in any sliding second** "
        "| **Accepted/s, steady** | **Worst acquire→start s** (most requests between) | Starts done "
        "| Share min / max of equal | Redis round trips per request "
        "| Worker CPU ms per request | Redis CPU ms per request | Machine CPU busy |"
    )
    lines = [header, "|" + "---|" * 15]
    for case in cases:
        worst = (
            "-"
            if case.worst_acquire_to_start_seconds is None
            else f"{case.worst_acquire_to_start_seconds:.2f} ({case.most_requests_between})"
        )
        if case.acquired_never_started:
            worst += f"; **{case.acquired_never_started} acquired, never started**"
        share = "-" if case.share_min is None else f"{case.share_min:.2f} / {case.share_max:.2f}"
        trips = "-" if case.round_trips_per_request is None else f"{case.round_trips_per_request:.1f}"
        lines.append(
            f"| {LOADS[case.load].title} | {case.budget} | {case.demand_per_second:.0f} | {case.requests} "
            f"| {case.status_429} | {case.failed_calls} | {case.peak_in_sliding_second} "
            f"| {case.accepted_per_second_steady:.2f} | {worst} | {case.starts_done}/{case.starts_attempted} "
            f"| {share} | {trips} | {case.worker_cpu_ms_per_request:.2f} | {_fmt(case.redis_cpu_ms_per_request)} "
            f"| {_fmt(None if case.machine_cpu_busy is None else 100 * case.machine_cpu_busy, 0)} % |"
        )
    return "\n".join(lines)


def header(args: argparse.Namespace, bench: Bench, command: str, began: datetime.datetime) -> str:
    try:
        load_average = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        load_average = "?"
    return "\n".join(
        [
            f"- Date: {began:%Y-%m-%d %H:%M} UTC; command: `{command}`",
            f"- Machine: {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
            f"apache-airflow {metadata.version('apache-airflow')}, redis-py {metadata.version('redis')}, "
            f"redis-server {bench.redis.version}; load average at the end {load_average}",
            f"- Simulator: `python -m airflow_provider_agora.simulator --speed {args.speed} --rate-limit {LIMIT}` "
            f"in its own process; {args.seconds:.0f} s per run, steady window = second {args.warmup:.0f} "
            f"to {args.seconds - args.tail:.0f} after the start signal",
            f"- Pollers every {args.poke_interval} s; waits every {args.wait_interval} s ({args.waits} per "
            f"triggerer, first polls spread over one interval); starter: acquire + start every {args.start_gap} s",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        _worker_main(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default="123", help="which loads to run (default 123)")
    parser.add_argument("--budgets", default="local,shared", help="local, shared or both (default)")
    parser.add_argument("--seconds", type=float, default=32.0, help="run time per case after the start signal")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds left out of the steady window at the start")
    parser.add_argument("--tail", type=float, default=2.0, help="seconds left out of the steady window at the end")
    parser.add_argument("--poke-interval", type=float, default=0.5)
    parser.add_argument("--waits", type=int, default=500, help="deferred waits per triggerer process")
    parser.add_argument("--wait-interval", type=float, default=20.0, help="poll interval of each wait")
    parser.add_argument("--start-gap", type=float, default=2.5, help="seconds between recordings the starter starts")
    parser.add_argument("--speed", type=float, default=10.0, help="simulator --speed")
    parser.add_argument("--json", help="also write every figure (and per-start gaps) to this file")
    args = parser.parse_args(argv)
    if args.seconds - args.warmup - args.tail < 5:
        parser.error("--seconds must leave at least 5 s of steady window after --warmup and --tail")
    budgets = [name.strip() for name in args.budgets.split(",")]
    if not set(budgets) <= {"local", "shared"} or not set(args.loads) <= set(LOADS):
        parser.error("--budgets takes local,shared; --loads digits of 123")

    command = " ".join([".venv/bin/python", "benchmarks/shared_budget.py", *argv])
    began = datetime.datetime.now(datetime.timezone.utc)
    started = time.monotonic()
    bench = Bench(args)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    cases: list[Case] = []
    try:
        bench.sim.start()
        if "shared" in budgets:
            bench.redis.start()
        for key in args.loads:
            for budget in budgets:
                case = bench.run_case(LOADS[key], shared=budget == "shared")
                cases.append(case)
                print(
                    f"load {key} {case.budget}: {case.requests} requests, {case.status_429} x 429, "
                    f"peak {case.peak_in_sliding_second}, {case.accepted_per_second_steady:.2f}/s steady, "
                    f"worst acquire->start {_fmt(case.worst_acquire_to_start_seconds)} s, "
                    f"machine CPU busy {100 * (case.machine_cpu_busy or 0):.0f} %, "
                    f"start-up {case.startup_seconds:.0f} s ({time.monotonic() - started:.0f} s so far)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        bench._kill_workers()
        bench.sim.stop()
        bench.redis.stop()
        shutil.rmtree(bench.workdir, ignore_errors=True)
    runtime = time.monotonic() - started
    report = "\n\n".join([header(args, bench, command, began), table(cases), f"Runtime: {runtime:.0f} s."])
    notes = [f"- load {case.load} {case.budget}: {note}" for case in cases for note in case.notes]
    if notes:
        report += "\n\nNotes:\n" + "\n".join(notes)
    print(report)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": command,
                    "began": began.isoformat(),
                    "runtime": runtime,
                    "cases": [asdict(c) for c in cases],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
