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
4. (only with ``--loads 4``) Redis down: the starter process also runs 5 poke-mode sensors in
   threads, and the shared budget's ``redis_conn_id`` points at a port nothing listens on, so the
   process's fallback budget (``redis_fallback_share`` 0.1: 1 request per window) serves them all:
   how long a ``start`` waits behind the polls queued in it.

Everything is counted from the simulator's request log (arrival times, status, path), the workers'
own reports (CPU time from the start signal to the end, the ``SharedBudget.round_trips`` counter)
and Redis's ``INFO``. A script, not a test: nothing fails on the figures.

    .venv/bin/python benchmarks/shared_budget.py                      # ~6-8 min; Markdown on stdout
    .venv/bin/python benchmarks/shared_budget.py --loads 1 --seconds 20 --json /tmp/shared.json

Workers synchronise with ``_harness``'s ready/go handshake (``ready`` on stdout, then one line
``go BEGIN DEADLINE`` on stdin), so start-up of 32 Airflow-importing processes is not part of any
figure. The worker logic is this file run with ``--worker`` (not ``tests/integration/budget_worker.py``,
because it also times CPU from the start signal only, pre-imports the HTTP and Redis clients,
spreads waits over their interval and stops every wait at one wall-clock deadline).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import _harness as h

REPO_ROOT = h.REPO_ROOT
sys.path.insert(0, str(REPO_ROOT))

from airflow_provider_agora.simulator import max_in_sliding_second  # noqa: E402  (stdlib only)

CUSTOMER_ID = "budget-customer"
CUSTOMER_SECRET = "budget-secret-Vn4r"
APP_ID = "budgetapp0123456789abcdef0123456"
LIMIT = h.AGORA_RATE  # Agora's limit: requests per second per account
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


def _poll_until(hook: Any, recording: dict[str, Any], interval: float, deadline: float) -> tuple[int, int]:
    """A poke-mode sensor: ``query``, then ``interval`` s, until ``deadline``; (done, failed)."""
    from airflow_provider_agora.exceptions import AgoraError

    done = failed = 0
    while time.time() < deadline:
        try:
            hook.query(recording["resource_id"], recording["sid"], recording_mode="mix")
            done += 1
        except AgoraError as error:
            failed += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
        time.sleep(interval)
    return done, failed


def _worker_poll(job: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_agora.hooks.agora import AgoraHook

    hook = AgoraHook()  # the default retry policy: 5 attempts, 1, 2, 4, 8 s (+ jitter, >= Retry-After)
    _warm_up_sync(hook)
    _begin, deadline, usage = h.wait_for_go()
    done, failed = _poll_until(hook, job, job["interval"], deadline)
    return {
        "role": "poll",
        "sid": job["sid"],
        "done": done,
        "failed": failed,
        "round_trips": _round_trips(hook.transport.budget),
        "cpu_seconds": h.cpu_since(usage),
    }


def _worker_start(job: dict[str, Any]) -> dict[str, Any]:
    from airflow_provider_agora.exceptions import AgoraError
    from airflow_provider_agora.hooks.agora import AgoraHook

    hook = AgoraHook()
    _warm_up_sync(hook)
    # Load 4: poke-mode sensors in this same process (one hook each, one budget for the process),
    # so that their polls queue in the budget the starter's calls go through.
    pollers = [AgoraHook() for _ in job.get("poll_recordings", [])]
    for poller in pollers:
        _warm_up_sync(poller)
    begin, deadline, usage = h.wait_for_go()
    polled: list[tuple[int, int]] = []
    threads = [
        threading.Thread(
            target=lambda hook, recording: polled.append(_poll_until(hook, recording, job["interval"], deadline)),
            args=(poller, recording),
            daemon=True,
        )
        for poller, recording in zip(pollers, job.get("poll_recordings", []), strict=True)
    ]
    for thread in threads:
        thread.start()
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
            sid = hook.start(resource_id, cname, 4242, recording_mode="mix", client_request={})["sid"]
        except AgoraError as error:
            failed_starts += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
            continue
        started.append({"cname": cname, "sid": sid, "start_call_seconds": time.time() - acquired})
    for thread in threads:
        thread.join()
    return {
        "role": "start",
        "polls_done": sum(done for done, _failed in polled),
        "failed_polls": sum(failed for _done, failed in polled),
        "attempted": number,
        "started": started,
        "failed": failed_acquires + failed_starts,
        "failed_acquires": failed_acquires,
        "failed_starts": failed_starts,
        "round_trips": _round_trips(hook.transport.budget),
        "cpu_seconds": h.cpu_since(usage),
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
        _begin, deadline, usage = h.wait_for_go()
        counts = {"done": 0, "failed": 0, "in_query": 0}
        rng = random.Random(job["seed"])
        interval = job["interval"]

        async def wait(recording: dict[str, str], first_after: float) -> None:
            one = AgoraAsyncHook()
            await asyncio.sleep(first_after)
            while time.time() < deadline:
                counts["in_query"] += 1
                try:
                    await one.query(recording["resource_id"], recording["sid"], recording_mode="mix")
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
            "cpu_seconds": h.cpu_since(usage),
        }
        await AgoraAsyncHook.close_shared_clients()
        return result

    return asyncio.run(run())


# ================================================================================================
# Harness side
# ================================================================================================


def _redis_server_class() -> type[Any]:
    """``tests/support.py``'s ``RedisServer`` (imported late: it imports Airflow), plus the readings
    this benchmark takes: ``INFO`` sections, Redis's CPU and its script calls."""
    from tests.support import RedisServer as TestRedisServer

    class RedisServer(TestRedisServer):  # type: ignore[misc,valid-type]
        version = ""
        _bench_client: Any = None

        def start(self) -> RedisServer:
            if not self.available:
                raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
            super().start()
            self.version = str(self.info("server")["redis_version"])
            return self

        def stop(self) -> None:
            if self._bench_client is not None:
                self._bench_client.close()
                self._bench_client = None
            super().stop()

        def info(self, section: str) -> dict[str, Any]:
            """One ``INFO`` section over the harness's one connection (so its own commands are known)."""
            if self._bench_client is None:
                self._bench_client = self.client()
            return dict(self._bench_client.info(section))

        def flush(self) -> None:
            self.info("server")  # opens the connection if needed
            self._bench_client.flushall()

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

        @property
        def running(self) -> bool:
            return self.process is not None and self.process.poll() is None

    return RedisServer


@dataclass(frozen=True)
class Load:
    key: str
    title: str
    pollers: int = 0
    triggerers: int = 0
    poll_threads: int = 0  # polling threads inside the starter's own process
    redis_down: bool = False  # the shared budget's Redis cannot be reached: its fallback budget serves


LOADS = {
    "1": Load("1", "8 poke-mode sensors + starter", pollers=8),
    "2": Load("2", "32 poke-mode sensors + starter", pollers=32),
    "3": Load("3", "2 triggerers x 500 waits + starter", triggerers=2),
    "4": Load("4", "Redis down: starter + 5 polling threads in its process", poll_threads=5, redis_down=True),
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
    start_call_seconds: list[float] = field(default_factory=list)  # the starter's view, retries included
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
        self.sim = h.SimulatorProcess(CUSTOMER_ID, CUSTOMER_SECRET, APP_ID, speed=args.speed, backlog=1024)
        self.redis = _redis_server_class()()
        self.workdir = Path(tempfile.mkdtemp(prefix="agora-shared-budget-"))
        self.workers: list[h.Worker] = []

    # -- one case ----------------------------------------------------------------------------

    def _env(self, shared: bool, redis_down: bool = False) -> dict[str, str]:
        env = h.child_env(AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING")
        extra: dict[str, Any] = {}
        env.pop("AIRFLOW_CONN_AGORA_BUDGET", None)
        if shared:
            extra["redis_conn_id"] = "agora_budget"
            # Redis down: a loopback port nothing listens on, so every connection is refused.
            uri = f"redis://:down@127.0.0.1:{h.free_port()}/0" if redis_down else self.redis.connection_uri()
            env["AIRFLOW_CONN_AGORA_BUDGET"] = uri
        env["AIRFLOW_CONN_AGORA_DEFAULT"] = self.sim.connection_json(**extra)
        return env

    def _spawn(self, role: str, job: dict[str, Any], env: dict[str, str], sids: set[str]) -> None:
        number = len(self.workers)
        job_file = self.workdir / f"job-{number}.json"
        job_file.write_text(json.dumps(job))
        env = {**env, "AIRFLOW_HOME": str(self.workdir / f"airflow-home-{number}")}  # one each, as on separate hosts
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", role, str(job_file)]
        stderr_path = self.workdir / f"worker-{number}-{role}.err"
        self.workers.append(h.spawn_worker(role, command, env, stderr_path, sids))

    def _kill_workers(self) -> None:
        h.kill_workers(self.workers)

    def run_case(self, load: Load, shared: bool) -> Case:
        args = self.args
        budget = ("shared (Redis down)" if load.redis_down else "shared (Redis)") if shared else "in-process"
        env = self._env(shared, load.redis_down)
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
        polled = self.sim.recordings(load.poll_threads) if load.poll_threads else []
        job = {"gap": args.start_gap, "poll_recordings": polled, "interval": args.poke_interval}
        self._spawn("start", job, env, {recording["sid"] for recording in polled})
        processes = len(self.workers)
        pollers = load.pollers + load.poll_threads
        demand = pollers / args.poke_interval + load.triggerers * args.waits / args.wait_interval
        demand += 2 / args.start_gap

        try:
            h.wait_until_ready(self.workers, READY_TIMEOUT)
            startup = time.monotonic() - launched
            # A clean slate: the simulator's log and counters, Redis's keys and counters.
            self.sim.control("DELETE", "requests")
            self.sim.control("DELETE", "stats")
            redis_before = redis_after = {"cpu_seconds": 0.0, "commands": 0.0}
            if self.redis.running:
                self.redis.flush()
                redis_before = self.redis.counters()
            ticks_before = h.machine_cpu_ticks()
            begin = time.time() + START_TIMING_SLACK
            end = begin + args.seconds
            h.send_go(self.workers, begin, end)
            for worker in self.workers:
                remaining = max(1.0, end + DRAIN_TIMEOUT - time.time())
                try:
                    worker.process.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait(timeout=10)
                if worker.reader is not None:
                    worker.reader.join(timeout=10)
            ticks_after = h.machine_cpu_ticks()
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
        case.failed_calls = sum(int(result.get("failed", 0)) + int(result.get("failed_polls", 0)) for result in results)
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
        if shared and not LOADS[case.load].redis_down:  # with Redis down, the running server is not used
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
        case.start_call_seconds = [float(one["start_call_seconds"]) for one in starter.get("started", [])]
        if LOADS[case.load].poll_threads:
            case.notes.append(
                "start calls, from the acquire's answer to the start's answer, median / p99 / max: "
                f"{h.fmt_quantiles(case.start_call_seconds)} s; the starter process's own polls: "
                f"{starter.get('polls_done', 0)} answered"
            )
        slowest = h.quantile(case.start_call_seconds, 1.0)
        if slowest is not None and slowest > 2:
            case.notes.append(f"slowest start call (retries included), as the starter saw it: {slowest:.2f} s")
        if case.failed_calls - int(starter.get("failed", 0)):
            case.notes.append(f"{case.failed_calls - int(starter.get('failed', 0))} poll(s) gave up after 5 attempts")


def _sid_of(path: str) -> str | None:
    """The sid in ``.../sid/<sid>/mode/<mode>/query`` (None for acquire and start)."""
    parts = path.split("/")
    if "sid" in parts:
        index = parts.index("sid")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


# -- report ---------------------------------------------------------------------------------------


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
            f"| {share} | {trips} | {case.worker_cpu_ms_per_request:.2f} | {h.fmt(case.redis_cpu_ms_per_request)} "
            f"| {h.fmt(None if case.machine_cpu_busy is None else 100 * case.machine_cpu_busy, 0)} % |"
        )
    return "\n".join(lines)


def header(args: argparse.Namespace, bench: Bench, command: str, began: datetime.datetime) -> str:
    load_average = h.load_average(1)
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
    parser = h.argument_parser(__doc__)
    parser.add_argument("--loads", default="123", help="which loads to run, digits of 1234 (default 123)")
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
        parser.error("--budgets takes local,shared; --loads digits of 1234")

    command = " ".join([".venv/bin/python", "benchmarks/shared_budget.py", *argv])
    began = datetime.datetime.now(datetime.timezone.utc)
    started = time.monotonic()
    home = h.use_throwaway_airflow_home("agora-shared-budget-harness-")  # tests.support imports Airflow
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
                    f"worst acquire->start {h.fmt(case.worst_acquire_to_start_seconds)} s, "
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
        shutil.rmtree(home, ignore_errors=True)
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
