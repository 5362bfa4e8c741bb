"""One request budget per Agora account across processes, kept in a real ``redis-server``.

Separate Python processes (as Airflow runs task instances and triggerers) talk to one simulator
that counts like Agora. Everything is asserted from the simulator's request log: arrivals per
sliding second, 429s, and what came between an ``acquire`` and its ``start``. How much of the
budget a loaded machine uses and how evenly the processes share it depend on the machine's
speed: ``benchmarks/shared_budget.py`` measures both (SHARED_BUDGET.md); the order in which
places are given is asserted exactly in ``tests/unit/test_shared_budget_scripts.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_agora._redis import key_prefix
from airflow_provider_agora.simulator import AgoraSimulator, max_in_sliding_second
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, RedisServer, connection_json, running_redis

WORKER = str(Path(__file__).with_name("budget_worker.py"))
ROOT = Path(__file__).resolve().parents[2]
LIMIT = 10


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """One per test here: tests stop it, and count keys from an empty database."""
    with running_redis() as server:
        yield server


@pytest.fixture
def agora() -> Iterator[AgoraSimulator]:
    """A simulator that limits like Agora: 10 requests per second per account, 429 above."""
    with AgoraSimulator(
        customer_id=CUSTOMER_ID,
        customer_secret=CUSTOMER_SECRET,
        app_ids=(APP_ID,),
        speed=10.0,
        rate_limit_per_second=LIMIT,
    ).start() as sim:
        yield sim


@dataclass
class Fleet:
    """Worker processes started together: each prints "ready", waits for "go", then works."""

    env: dict[str, str]
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    ready: list[subprocess.Popen[str]] = field(default_factory=list)

    def add(self, *args: str) -> None:
        self.processes.append(
            subprocess.Popen(
                [sys.executable, WORKER, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self.env,
                cwd=ROOT,
            )
        )

    def go(self) -> None:
        """Once every worker has set up (imports, connections), let all of them start at once."""
        readers = [threading.Thread(target=self._until_ready, args=(process,)) for process in self.processes]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout=180)
        if any(reader.is_alive() for reader in readers) or len(self.ready) != len(self.processes):
            self.kill()
            pytest.fail(f"{len(self.processes) - len(self.ready)} worker(s) did not get ready within 180 s")
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()

    def _until_ready(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:  # Airflow may log to stdout before the worker says it is ready
            if line.strip() == "ready":
                self.ready.append(process)
                return

    def kill(self) -> None:
        for process in self.processes:
            process.kill()

    def results(self) -> list[tuple[dict[str, Any], str]]:
        finished = []
        for process in self.processes:
            out, err = process.communicate(timeout=180)
            assert process.returncode == 0, err[-3000:]
            finished.append((json.loads(out.strip().splitlines()[-1]), out + err))  # logs go to either
        return finished


def fleet_env(agora: AgoraSimulator, redis: RedisServer | None, *, password: str | None = None) -> dict[str, str]:
    extra: dict[str, Any] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
    if redis is not None:
        extra["redis_conn_id"] = "agora_budget"
        env["AIRFLOW_CONN_AGORA_BUDGET"] = redis.connection_uri(password)
    env["AIRFLOW_CONN_AGORA_DEFAULT"] = connection_json(agora.url, **extra)
    return env


def recordings(agora: AgoraSimulator, count: int) -> list[dict[str, str]]:
    return agora.create_recordings([time.time() + 3600] * count, hold=3600)


def test_worker_processes_and_a_starter_share_one_budget(agora: AgoraSimulator, redis_server: RedisServer) -> None:
    """Eight poke-mode sensors (every 0.5 s: 16 requests/s of demand) and a process starting recordings."""
    polled = recordings(agora, 8)
    fleet = Fleet(fleet_env(agora, redis_server))
    for recording in polled:
        fleet.add("poll", recording["resource_id"], recording["sid"], "12", "0.5")
    fleet.add("start", "4", "2.5")
    fleet.go()
    results = fleet.results()
    log = agora.request_log

    assert [result["failed"] for result, _ in results] == [0] * 9
    # Not a run that did nothing: each sensor's first query comes before its deadline, and none failed.
    assert all(result["done"] >= 1 for result, _ in results if result["role"] == "poll"), results
    assert [record.status for record in log if record.status == 429] == []
    assert max_in_sliding_second([record.time for record in log]) <= LIMIT

    # Every start follows its acquire within two seconds of budget: fewer than 2 x LIMIT requests between.
    ordered = sorted(log, key=lambda record: record.time)
    acquires = [index for index, record in enumerate(ordered) if record.path.endswith("/acquire")]
    starts = [index for index, record in enumerate(ordered) if record.path.endswith("/start")]
    assert len(acquires) == len(starts) == 4
    between = [start_index - acquire_index - 1 for acquire_index, start_index in zip(acquires, starts, strict=True)]
    assert max(between) < 2 * LIMIT, between
    (starter,) = [result for result, _ in results if result["role"] == "start"]
    assert len(starter["started"]) == 4


def test_two_triggerer_processes_share_one_budget(
    agora: AgoraSimulator, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two processes each run 40 deferred waits on one event loop, as two triggerers would."""
    files = []
    for number in range(2):
        path = tmp_path / f"triggerer-{number}.json"
        path.write_text(json.dumps(recordings(agora, 40)))
        files.append(path)
    fleet = Fleet(fleet_env(agora, redis_server))
    for path in files:
        fleet.add("waits", str(path), "16", "1.0")
    fleet.go()
    results = fleet.results()
    log = agora.request_log

    assert [result["failed"] for result, _ in results] == [0, 0]
    # Every wait of both triggerers was served: each polls once before the deadline, and none failed.
    assert [result["done"] >= 40 for result, _ in results] == [True, True], results
    assert [record.status for record in log if record.status == 429] == []
    assert max_in_sliding_second([record.time for record in log]) <= LIMIT


def test_redis_stopped_mid_run_fails_no_task_and_the_shared_budget_resumes(
    agora: AgoraSimulator, redis_server: RedisServer
) -> None:
    polled = recordings(agora, 4)
    fleet = Fleet(fleet_env(agora, redis_server))
    for recording in polled:
        fleet.add("poll", recording["resource_id"], recording["sid"], "20", "0.2")
    fleet.go()

    def wait_for_requests(count: int) -> float:
        deadline = time.monotonic() + 60
        while len(agora.request_log) < count:
            assert time.monotonic() < deadline, f"only {len(agora.request_log)} requests"
            time.sleep(0.05)  # polling the simulator's log, with a deadline
        return time.time()

    wait_for_requests(30)
    redis_server.stop()
    stopped_at = time.time()
    before = len(agora.request_log)
    wait_for_requests(before + 16)  # the processes go on without Redis
    redis_server.start()
    restarted_at = time.time()
    results = fleet.results()
    log = agora.request_log

    assert [result["failed"] for result, _ in results] == [0] * 4
    # The fallback share holds: 10 x 0.1 = 1 request per second per process, 4 processes.
    outage = [record.time for record in log if stopped_at + 1.5 <= record.time <= restarted_at]
    assert outage and max_in_sliding_second(outage) <= 4
    # Each process warned once that Redis is gone and once that it is back, and the budget is in Redis again.
    for _, err in results:
        assert err.count("is not available") == 1, err[-2000:]
        assert err.count("back to the shared Agora request budget") == 1, err[-2000:]
    assert redis_server.client().exists(f"{key_prefix(CUSTOMER_ID)}:window") == 1
    # Once every process is back (each retries Redis every 2 s), the limit holds again.
    settled = [record.time for record in log if record.time > restarted_at + 3]
    assert len(settled) > LIMIT and max_in_sliding_second(settled) <= LIMIT


def test_a_wrong_redis_password_warns_and_falls_back(agora: AgoraSimulator, redis_server: RedisServer) -> None:
    (recording,) = recordings(agora, 1)
    fleet = Fleet(fleet_env(agora, redis_server, password="not-the-password"))
    fleet.add("poll", recording["resource_id"], recording["sid"], "3", "0.1")
    fleet.go()
    ((result, err),) = fleet.results()
    assert result["failed"] == 0 and result["done"] >= 2
    assert err.count("is not available") == 1
    assert "AuthenticationError" in err
    assert "not-the-password" not in err
    assert redis_server.client().exists(f"{key_prefix(CUSTOMER_ID)}:window") == 0
