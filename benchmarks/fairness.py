"""Fairness, pacing and event-loop benchmark: what the tests only assert as orderings and counts.

The tests check *who was served before whom* and *how many requests fell in each sliding second*
(from the simulator's request log), because durations depend on how busy the machine is. This
script measures the durations, on loopback, against the Agora simulator running in its own process
(so it shares neither the GIL nor the event loop with what is measured), with Agora's limit of 10
requests per second:

1. **Deferred waits on one event loop** (``AgoraRecordingQueryTrigger``, ``poll_interval=0``, on
   sessions Agora answers with 404 inside the grace period, so every wait keeps polling): requests
   per second, the busiest sliding second, 429s, the spread between the most and the least served
   wait at any moment, and the gap between two polls of one wait (ideal: N x 1.02 / 10 s, since
   the budget spaces requests 0.102 s apart).
2. **Event-loop stalls**: a heartbeat coroutine (``asyncio.sleep(0.01)``) beside triggers whose
   answers take 0.6 s (the simulator's ``latency`` fault); the longest gap between two heartbeats.
   The same with a *blocking* reference (the synchronous ``AgoraHook.query`` called on the loop),
   which is what the unit test catches by ordering.
3. **Sensors in threads** (poke mode, ``AgoraRecordingQuerySensor.poke`` in a loop per thread, one
   worker process): the same request counts and gaps.
4. **The simulator's own limit**: how long after a burst's first request a refused client is let in
   again (ideal: just over 1 s; refusals do not count).

A script, not a test: nothing fails on timing. It runs for about a minute (``--seconds`` scales the
two polling scenarios) and prints a Markdown table (``--json`` prints everything)::

    .venv/bin/python benchmarks/fairness.py
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _harness as h

# Airflow reads AIRFLOW_HOME on import: give it a throw-away one before anything imports it.
_AIRFLOW_HOME = h.use_throwaway_airflow_home("agora-fairness-")

from airflow_provider_agora.simulator import max_in_sliding_second  # noqa: E402  (stdlib only)

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

WINDOW = 1.02  # seconds per Agora's 10 requests, as the provider's budget spaces them
HEARTBEAT = 0.01  # seconds between two heartbeats when nothing blocks the loop
SLOW_ANSWER = 0.6  # seconds each answer takes in the event-loop scenario


def _unknown_sid(n: int) -> str:
    return f"{n:032x}"


def polling_figures(log: list[dict[str, Any]], waits: list[str]) -> dict[str, Any]:
    """Requests, rate, fairness and gaps of ``waits`` (sids) from the simulator's request log."""
    order = [next(sid for sid in waits if f"/sid/{sid}/" in record["path"]) for record in log]
    times = [record["time"] for record in log]
    counts = dict.fromkeys(waits, 0)
    spread = 0  # most requests one wait had ahead of another, at any moment
    spread_after_join = 0  # the same, counted from the moment the last wait was first served
    joined_at = max(order.index(sid) for sid in waits) if set(order) == set(waits) else len(order)
    joined_counts: dict[str, int] = {}
    for position, sid in enumerate(order):
        counts[sid] += 1
        spread = max(spread, max(counts.values()) - min(counts.values()))
        if position == joined_at:
            joined_counts = dict(counts)
        if joined_counts:
            relative = [counts[w] - joined_counts[w] for w in waits]
            spread_after_join = max(spread_after_join, max(relative) - min(relative))
    times_of: dict[str, list[float]] = {sid: [] for sid in waits}
    for moment, sid in zip(times, order, strict=True):
        times_of[sid].append(moment)
    gaps = [later - earlier for own in times_of.values() for earlier, later in itertools.pairwise(own)]
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "waits": len(waits),
        "requests": len(log),
        "rate_limited": sum(1 for r in log if r["status"] == 429),
        "per_second": (len(log) - 1) / span if span else None,
        "peak_in_a_second": max_in_sliding_second(times),
        "polls_min": min(counts.values()),
        "polls_max": max(counts.values()),
        "spread": spread,
        "spread_after_join": spread_after_join,
        "gap_ideal": len(waits) * WINDOW / h.AGORA_RATE,
        "gap_median": h.median(gaps),
        "gap_p95": h.quantile(gaps, 0.95),
        "gap_max": h.quantile(gaps, 1.0),
    }


# -- 1. deferred waits on one event loop -----------------------------------------------------------


async def _run_waits(n: int, seconds: float) -> None:
    from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger

    end_time = time.time() + seconds
    waits = [
        AgoraRecordingQueryTrigger(
            resource_id="bench-resource",
            sid=_unknown_sid(i),
            recording_mode="mix",
            poll_interval=0,
            not_found_grace_period=3600,
            end_time=end_time,
        )
        for i in range(n)
    ]
    await _drive_all(waits)


async def _drive_all(waits: Sequence[BaseTrigger]) -> None:
    """Run every wait to its end on this loop, then close the shared HTTP client, as a triggerer
    does when it stops."""
    from airflow_provider_agora.hooks.agora import AgoraAsyncHook

    async def drive(trigger: BaseTrigger) -> None:
        async for _event in trigger.run():
            pass

    await asyncio.gather(*(drive(w) for w in waits))
    await AgoraAsyncHook.close_shared_clients()


def deferred_waits(simulator: h.SimulatorProcess, n: int, seconds: float) -> dict[str, Any]:
    simulator.control("DELETE", "requests")
    asyncio.run(_run_waits(n, seconds))
    log = [r for r in simulator.control("GET", "requests") if r["path"].endswith("/query")]
    return {
        "scenario": f"{n} deferred waits, one event loop",
        **polling_figures(log, [_unknown_sid(i) for i in range(n)]),
    }


# -- 2. event-loop stalls ----------------------------------------------------------------------------


async def _heartbeat_gaps(work: Any) -> tuple[list[tuple[float, float]], float]:
    """Run ``work()`` beside a heartbeat; return (seconds after the start, gap) per heartbeat and the wall time."""
    gaps: list[tuple[float, float]] = []
    finished = asyncio.Event()
    began = time.monotonic()

    async def heartbeat() -> None:
        last = time.monotonic()
        while not finished.is_set():
            await asyncio.sleep(HEARTBEAT)
            now = time.monotonic()
            gaps.append((last - began, now - last))
            last = now

    beat = asyncio.create_task(heartbeat())
    await work()
    wall = time.monotonic() - began
    finished.set()
    await beat
    return gaps, wall


def event_loop_stalls(simulator: h.SimulatorProcess, n: int, blocking: bool) -> dict[str, Any]:
    from airflow_provider_agora.hooks.agora import AgoraHook
    from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger

    (recording,) = simulator.control("POST", "recordings", {"end_times": [time.time() + 3600]})

    async def triggers() -> None:
        waits = [
            AgoraRecordingQueryTrigger(
                resource_id=recording["resource_id"],
                sid=recording["sid"],
                recording_mode="mix",
                target_status=5,
                end_time=time.time() + 60,
            )
            for _ in range(n)
        ]
        await _drive_all(waits)

    async def blocking_calls() -> None:
        hook = AgoraHook(h.CONN_ID)

        async def one() -> None:
            await asyncio.sleep(0)
            hook.query(recording["resource_id"], recording["sid"], recording_mode="mix")  # blocks the loop: the bug

        await asyncio.gather(*(one() for _ in range(n)))

    simulator.control("POST", "faults", {"latency": SLOW_ANSWER})
    try:
        timed_gaps, wall = asyncio.run(_heartbeat_gaps(blocking_calls if blocking else triggers))
    finally:
        simulator.control("DELETE", "faults")
    gaps = [gap for _, gap in timed_gaps]
    longest_at, longest = max(timed_gaps, key=lambda item: item[1])
    kind = "blocking reference: sync query on the loop" if blocking else "triggers"
    return {
        "scenario": f"{n} {kind}, answers take {SLOW_ANSWER:g} s",
        "wall_seconds": wall,
        "heartbeats": len(gaps),
        "gap_median": h.median(gaps),
        "gap_p99": h.quantile(gaps, 0.99),
        "gap_max": longest,
        "gap_max_at": longest_at,
        "gap_max_after_first_second": max((gap for at, gap in timed_gaps if at >= 1.0), default=None),
    }


# -- 3. sensors in threads -----------------------------------------------------------------------


def sensors_in_threads(simulator: h.SimulatorProcess, n: int, seconds: float) -> dict[str, Any]:
    from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor

    recordings = simulator.control("POST", "recordings", {"end_times": [time.time() + 3600] * n})
    sensors = [
        AgoraRecordingQuerySensor(
            task_id=f"wait_{i}", resource_id=r["resource_id"], sid=r["sid"], recording_mode="mix", target_status=8
        )
        for i, r in enumerate(recordings)
    ]
    for sensor in sensors:  # connection read and session opened before the clock starts
        _ = sensor.hook.settings
    simulator.control("DELETE", "requests")
    deadline = time.monotonic() + seconds

    def keep_poking(sensor: AgoraRecordingQuerySensor) -> None:
        while time.monotonic() < deadline:
            sensor.poke({})

    threads = [threading.Thread(target=keep_poking, args=(s,)) for s in sensors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for sensor in sensors:
        sensor.hook.close()
    log = [r for r in simulator.control("GET", "requests") if r["path"].endswith("/query")]
    return {
        "scenario": f"{n} poke-mode sensors, one thread each",
        **polling_figures(log, [r["sid"] for r in recordings]),
    }


# -- 4. the simulator's own limit -----------------------------------------------------------------


def simulator_readmission(simulator: h.SimulatorProcess) -> dict[str, Any]:
    """A burst of ``acquire`` until the simulator answers 429, then knocking every 5 ms until it
    admits again: how long after the first admitted request the window lets the next one in."""
    import requests

    simulator.control("DELETE", "requests")
    session = requests.Session()
    session.auth = (simulator.customer_id, simulator.customer_secret)
    url = f"{simulator.url}/v1/apps/{simulator.app_id}/cloud_recording/acquire"
    body = {"cname": "bench", "uid": "1", "clientRequest": {}}
    while session.post(url, json=body).status_code != 429:
        pass
    while session.post(url, json=body).status_code != 200:
        time.sleep(0.005)
    session.close()
    log = simulator.control("GET", "requests")
    first_refused = next(i for i, r in enumerate(log) if r["status"] == 429)
    readmitted = next(r for r in log[first_refused:] if r["status"] == 200)
    return {
        "burst_admitted": first_refused,
        "refused": sum(1 for r in log if r["status"] == 429),
        "readmitted_after": readmitted["time"] - log[0]["time"],
        "burst_seconds": log[first_refused]["time"] - log[0]["time"],
    }


# -- report ------------------------------------------------------------------------------------------


def markdown(
    meta: dict[str, Any], polling: list[dict[str, Any]], stalls: list[dict[str, Any]], limit: dict[str, Any]
) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['platform']}), Python {meta['python']}, "
        f"Airflow {meta['airflow']}; 1-minute load average {meta['load_before']} before, {meta['load_after']} after. "
        f"Command: `{meta['command']}`.",
        "",
        "| Scenario | Requests | Per second | Busiest second (limit 10) | 429s | Polls per wait, min-max "
        "| Largest spread (after all joined) | Gap between polls of one wait: ideal / median / p95 / max, s |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in polling:
        lines.append(
            f"| {row['scenario']} | {row['requests']} | {h.fmt(row['per_second'])} | {row['peak_in_a_second']} "
            f"| {row['rate_limited']} | {row['polls_min']}-{row['polls_max']} "
            f"| {row['spread']} ({row['spread_after_join']}) "
            f"| {h.fmt(row['gap_ideal'])} / {h.fmt(row['gap_median'])} / {h.fmt(row['gap_p95'])} "
            f"/ {h.fmt(row['gap_max'])} |"
        )
    lines += [
        "",
        "| Event loop beside | Run, s | Heartbeats (every 10 ms) | Median gap, ms | p99 gap, ms "
        "| Longest gap, ms (began at, s) | Longest gap after the first second, ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in stalls:
        after = row["gap_max_after_first_second"]
        lines.append(
            f"| {row['scenario']} | {h.fmt(row['wall_seconds'], 1)} | {row['heartbeats']} "
            f"| {h.fmt(1000 * row['gap_median'], 1)} | {h.fmt(1000 * row['gap_p99'], 1)} "
            f"| {h.fmt(1000 * row['gap_max'], 1)} ({h.fmt(row['gap_max_at'])}) "
            f"| {'-' if after is None else h.fmt(1000 * after, 1)} |"
        )
    lines += [
        "",
        f"The simulator's own limit: a burst of `acquire` was admitted {limit['burst_admitted']} times in "
        f"{h.fmt(limit['burst_seconds'], 3)} s, then refused; knocking every 5 ms, the next request was admitted "
        f"{h.fmt(limit['readmitted_after'], 3)} s after the burst's first ({limit['refused']} refusals, which do not "
        f"count towards the limit).",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = h.argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each polling scenario (default 15)")
    parser.add_argument(
        "--waits", type=int, nargs="+", default=[8, 30], help="numbers of deferred waits (default 8 30)"
    )
    parser.add_argument("--sensors", type=int, default=4, help="poke-mode sensors, one thread each (default 4)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON instead of tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seconds <= 0 or min(args.waits) < 1 or args.sensors < 1:
        _parser().error("need --seconds > 0, --waits >= 1 and --sensors >= 1")
    import shutil

    h.silence_logs()
    meta: dict[str, Any] = {
        **h.run_meta(),
        "load_before": f"{os.getloadavg()[0]:.1f}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    simulator = h.SimulatorProcess()
    polling: list[dict[str, Any]] = []
    stalls: list[dict[str, Any]] = []
    try:
        simulator.start()
        os.environ[f"AIRFLOW_CONN_{h.CONN_ID.upper()}"] = simulator.connection_json()
        for n in args.waits:
            print(f"{n} deferred waits for {args.seconds:g} s ...", file=sys.stderr, flush=True)
            polling.append(deferred_waits(simulator, n, args.seconds))
        print(f"{args.sensors} poke-mode sensors for {args.seconds:g} s ...", file=sys.stderr, flush=True)
        polling.append(sensors_in_threads(simulator, args.sensors, args.seconds))
        for n, blocking in ((3, False), (30, False), (3, True)):
            print(f"event loop beside {n} {'blocking calls' if blocking else 'triggers'} ...", file=sys.stderr)
            time.sleep(WINDOW)  # an empty budget window between scenarios
            stalls.append(event_loop_stalls(simulator, n, blocking))
        time.sleep(WINDOW)
        limit = simulator_readmission(simulator)
    finally:
        simulator.stop()
        shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)
    meta["load_after"] = f"{os.getloadavg()[0]:.1f}"
    if args.json:
        print(json.dumps({"meta": meta, "polling": polling, "event_loop": stalls, "simulator": limit}, indent=2))
    else:
        print(markdown(meta, polling, stalls, limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
