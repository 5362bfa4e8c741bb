"""One Airflow-like process that talks to Agora: run by the shared-budget tests and benchmark.

    python tests/integration/budget_worker.py poll  RESOURCE_ID SID SECONDS INTERVAL
    python tests/integration/budget_worker.py start COUNT GAP
    python tests/integration/budget_worker.py waits RECORDINGS_JSON_FILE SECONDS INTERVAL

``poll`` queries one recording every INTERVAL seconds like a poke-mode sensor; ``start`` acquires
and starts COUNT recordings, GAP seconds apart, like start operators; ``waits`` runs one async
query loop per recording on one event loop, like a triggerer's deferred waits. The connection is
``AIRFLOW_CONN_AGORA_DEFAULT`` (and the Redis connection it names). Each process prints ``ready``
once set up, waits for a line on stdin, runs, and prints one JSON line: what it did and how it
went. It never exits non-zero for an Agora error: it counts them.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Any

# setdefault would make the folder even when the test gives a home; run by hand, the worker makes
# a throw-away one and removes it at exit.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="agora-budget-worker-")
    atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)

from airflow_provider_agora.exceptions import AgoraError
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook, RetryPolicy

# Retries within a request, as the default policy, but quick enough for a bounded run.
RETRIES = RetryPolicy(max_attempts=5, initial_delay=0.2, max_delay=2.0, max_total_seconds=20.0)


def _ready() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def _budget_round_trips(hook: Any) -> int | None:
    budget = hook.transport.budget
    return getattr(budget, "round_trips", None)


def poll(resource_id: str, sid: str, seconds: float, interval: float) -> dict[str, Any]:
    hook = AgoraHook(retry_policy=RETRIES)
    hook.settings  # noqa: B018  (read the connection before the start signal)
    _ready()
    deadline = time.monotonic() + seconds
    done = failed = 0
    while time.monotonic() < deadline:
        try:
            hook.query(resource_id, sid, recording_mode="mix")
            done += 1
        except AgoraError as error:
            failed += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
        time.sleep(interval)
    return {"role": "poll", "sid": sid, "done": done, "failed": failed, "round_trips": _budget_round_trips(hook)}


def start(count: int, gap: float) -> dict[str, Any]:
    hook = AgoraHook(retry_policy=RetryPolicy(max_attempts=4, initial_delay=3.0, max_delay=9.0))
    hook.settings  # noqa: B018
    _ready()
    started: list[dict[str, Any]] = []
    failed = 0
    for number in range(count):
        try:
            acquired_at = time.time()
            resource_id = hook.acquire(f"budget-room-{os.getpid()}-{number}", 4242)["resourceId"]
            sid = hook.start(
                resource_id, f"budget-room-{os.getpid()}-{number}", 4242, recording_mode="mix", client_request={}
            )["sid"]
            started.append({"resource_id": resource_id, "sid": sid, "seconds": time.time() - acquired_at})
        except AgoraError as error:
            failed += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
        time.sleep(gap)
    return {"role": "start", "started": started, "failed": failed, "round_trips": _budget_round_trips(hook)}


def waits(recordings_file: str, seconds: float, interval: float) -> dict[str, Any]:
    with open(recordings_file) as handle:
        recordings = json.load(handle)

    async def run() -> dict[str, Any]:
        hook = AgoraAsyncHook(retry_policy=RETRIES)
        await hook.get_settings()
        await asyncio.get_running_loop().run_in_executor(None, _ready)
        deadline = time.monotonic() + seconds
        counts = {"done": 0, "failed": 0}

        async def wait(recording: dict[str, str]) -> None:
            one = AgoraAsyncHook(retry_policy=RETRIES)
            while time.monotonic() < deadline:
                try:
                    await one.query(recording["resource_id"], recording["sid"], recording_mode="mix")
                    counts["done"] += 1
                except AgoraError as error:
                    counts["failed"] += 1
                    print(f"error: {error}", file=sys.stderr, flush=True)
                await asyncio.sleep(interval)

        await asyncio.gather(*(wait(recording) for recording in recordings))
        shared = await hook._shared_client()
        result = {"role": "waits", **counts, "round_trips": getattr(shared.transport.budget, "round_trips", None)}
        await AgoraAsyncHook.close_shared_clients()
        return result

    return asyncio.run(run())


def main() -> None:
    role, *args = sys.argv[1:]
    began = resource.getrusage(resource.RUSAGE_SELF)
    if role == "poll":
        result = poll(args[0], args[1], float(args[2]), float(args[3]))
    elif role == "start":
        result = start(int(args[0]), float(args[1]))
    elif role == "waits":
        result = waits(args[0], float(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown role {role!r}: use poll, start or waits")
    ended = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = (ended.ru_utime - began.ru_utime) + (ended.ru_stime - began.ru_stime)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
