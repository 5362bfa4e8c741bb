"""Benchmark: 1,000 deferred waits on one event loop, settled by Agora notifications vs by polling.

Issue 13, item 6. Real parts, all on loopback:

- ``redis-server`` (``tests/support.py``'s ``RedisServer``);
- one ``airflow api-server`` with the provider's receiver plugin (``tests/integration/ui_helpers.py``'s
  ``AirflowApiServer``, ``AIRFLOW__API__WORKERS=1``), in a throw-away ``AIRFLOW_HOME`` on SQLite,
  whose ``agora_default`` connection has ``ncs_secret`` and ``redis_conn_id``;
- the Agora simulator in its own process (``--rate-limit 10``, ``--notify-url`` = the receiver,
  ``--notify-secret``), which POSTs signed notifications (40 at creation; 30 at the end E, 31
  "uploaded" at E + 1 s, 11 at E + 2 s) for bulk recordings made with ``POST /_simulator/recordings``;
- the "triggerer": per scenario a fresh child process of this script, which warms up (one query
  and one follow, so one-time imports are not counted as the waits' memory), then runs N real
  ``AgoraRecordingQueryTrigger`` s on one asyncio event loop, driven as ``benchmarks/trigger_load.py``
  drives them (a ``checkpoint`` event is followed at once by a new trigger with the event's memory;
  the worker round trip is not modelled).

Scenarios, in this order, with the same seeded end times (uniform in [T0 + lead, T0 + lead + W]):

- **a, notifications**: connection ``agora_default`` with ``ncs_secret`` + ``redis_conn_id``;
  trigger ``poll_interval`` 60 s (the sensor's default ``poke_interval``),
  ``notification_poll_interval`` 600 s;
- **b, polling only**: connection ``agora_polling``, the same without ``ncs_secret`` (so the same
  Redis request budget, no notifications); ``poll_interval`` 60 s.
(The former scenario c, a prototype of the trigger's race between a queued ``query`` and the
notifications, is gone: the trigger does that itself now, so scenario a measures it. Its runs
stay in ``NOTIFICATION_WAITS.md`` as history.)

Both wait for ``target_status`` 8 (the sensor's default). Measured per scenario: delay from each
recording's end notification to its trigger event (a: the time of the 31's first delivery
attempt in the simulator's notification log; b: the recording's end time), and from the end time
for both; what ended each wait (``result.ended_by``); Agora requests per recording (simulator's
request log); Redis connections of this "triggerer" (the shared reader's ``connections_opened``,
this process's TCP connections to Redis sampled every second, Redis ``INFO`` ``connected_clients``
and ``total_connections_received``); RSS growth; CPU; event-loop lag; and for a the notification
path: simulator's 31 attempt, stored in Redis (the stream entry id's timestamp), event. A script,
not a test: nothing fails on timing.

    .venv/bin/python benchmarks/notification_waits.py                 # a then b, ~7 min; Markdown on stdout
    .venv/bin/python benchmarks/notification_waits.py --scenarios a --json /tmp/nw.json   # a only, as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import _harness as h  # noqa: E402

# Airflow reads AIRFLOW_HOME on import: give it a throw-away one before anything imports it.
_AIRFLOW_HOME = h.use_throwaway_airflow_home("agora-notification-waits-client-")

from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, RedisServer, connection_json  # noqa: E402

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

from airflow_provider_agora._ncs.store import notification_keys  # noqa: E402
from airflow_provider_agora.notifications import namespace_of  # noqa: E402
from airflow_provider_agora.simulator import max_in_sliding_second  # noqa: E402

NCS_CONN_ID = "agora_default"
POLLING_CONN_ID = "agora_polling"
REDIS_CONN_ID = "agora_ncs_redis"
NCS_SECRET = "ncs-bench-secret-Vb7q"
AGORA_RATE = h.AGORA_RATE
KEYS = notification_keys(CUSTOMER_ID, namespace_of(NCS_SECRET))
WATCH_SECONDS = 1.0
LAG_TICK = 0.05
TARGET_MEDIAN_S = 1.0
TARGET_P99_S = 3.0
WORST_LISTED = 5


# -- processes ------------------------------------------------------------------------------------


def notifying_simulator(notify_url: str) -> h.SimulatorProcess:
    """The simulator process, also POSTing signed NCS notifications to the receiver at ``notify_url``."""
    return h.SimulatorProcess(CUSTOMER_ID, CUSTOMER_SECRET, APP_ID, notify_url=notify_url, notify_secret=NCS_SECRET)


class RedisWatch:
    """A thread sampling, every second, Redis ``connected_clients`` and this process's TCP
    connections to Redis (psutil), with its own client opened before the baseline."""

    def __init__(self, redis_server: RedisServer) -> None:
        import psutil

        self.port = redis_server.port
        self.client = redis_server.client()
        self.client.ping()
        own = self.client.client_info()  # this watcher's own connection: not the triggerer's
        self.own_port = int(str(own["addr"]).rsplit(":", 1)[1])
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.max_connected_clients = 0
        self.max_own_connections = 0
        self.own_ports_seen: set[int] = set()

    def info(self) -> dict[str, int]:
        info = self.client.info("everything")
        return {
            "connected_clients": int(info["connected_clients"]),
            "total_connections_received": int(info["total_connections_received"]),
            "total_commands_processed": int(info["total_commands_processed"]),
        }

    def own_redis_ports(self) -> set[int]:
        ports = set()
        for conn in self._process.net_connections(kind="tcp"):
            ours = conn.raddr and conn.raddr.port == self.port and conn.status == "ESTABLISHED"
            if ours and conn.laddr.port != self.own_port:
                ports.add(conn.laddr.port)
        return ports

    def _sample(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            with contextlib.suppress(Exception):  # a failed sample is only a missing sample
                clients = int(self.client.info("clients")["connected_clients"])
                self.max_connected_clients = max(self.max_connected_clients, clients)
                ports = self.own_redis_ports()
                self.max_own_connections = max(self.max_own_connections, len(ports))
                self.own_ports_seen |= ports

    def start(self) -> None:
        self._stop.clear()
        self.max_connected_clients = self.max_own_connections = 0
        self.own_ports_seen = set()
        self._thread = threading.Thread(target=self._sample, name="redis-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def close(self) -> None:
        self.stop()
        self.client.close()


# -- one scenario -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ended:
    at: float
    status: str
    sid: str
    end_time: float
    ended_by: str | None
    checkpoints: int
    message: str = ""


@dataclass
class Scenario:
    key: str
    name: str
    n: int
    started_at: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    events: dict[str, int] = field(default_factory=dict)
    ended_by: dict[str, int] = field(default_factory=dict)
    checkpoints: int = 0
    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    peak_per_second: int = 0
    http_connections: int = 0
    reader_connections_opened: int | None = None
    readers: int = 0
    budget_round_trips: int = 0
    redis_before: dict[str, int] = field(default_factory=dict)
    redis_after: dict[str, int] = field(default_factory=dict)
    redis_max_connected_clients: int = 0
    own_redis_max: int = 0
    own_redis_distinct: int = 0
    lag_max_ms: float = 0.0
    lag_p99_ms: float = 0.0
    lag_max_at: float = 0.0
    delays: list[float] = field(default_factory=list)  # from the notification (a) / end time (b)
    delays_from_end: list[float] = field(default_factory=list)
    by_notification: list[float] = field(default_factory=list)  # delays of waits ended by a notification
    by_status_delays: list[float] = field(default_factory=list)  # delays of waits ended by a query
    attempt_lag: list[float] = field(default_factory=list)  # 31's first attempt - (E + 1 s)
    attempt_to_stored: list[float] = field(default_factory=list)
    stored_to_event: list[float] = field(default_factory=list)  # waits ended by the notification
    notification_missing: int = 0
    notification_stats: dict[str, Any] = field(default_factory=dict)
    queued_at_notification: int = 0  # waits whose query reached Agora after their 31 was stored
    queued_delays: list[float] = field(default_factory=list)
    idle_delays: list[float] = field(default_factory=list)
    worst: list[dict[str, Any]] = field(default_factory=list)
    other_messages: list[str] = field(default_factory=list)


async def _drive(trigger: BaseTrigger, recording: dict[str, Any], done: list[Ended]) -> None:
    """Run one wait to its end (``_harness.run_wait_to_end``); note when, how and what ended it
    (``result.ended_by``)."""
    payload, checkpoints = await h.run_wait_to_end(trigger)
    status = str(payload.get("status"))
    result = payload.get("result") or {}
    done.append(
        Ended(
            time.time(),
            status,
            recording["sid"],
            float(recording["end_time"]),
            result.get("ended_by") if isinstance(result, dict) else None,
            checkpoints,
            "" if status == "success" else str(payload.get("message")),
        )
    )


async def _lag_monitor(samples: list[tuple[float, float]]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        began = loop.time()
        await asyncio.sleep(LAG_TICK)
        samples.append((time.time(), loop.time() - began - LAG_TICK))


async def _run_triggers(
    make: Callable[[dict[str, Any]], BaseTrigger], recordings: list[dict[str, Any]], result: Scenario
) -> list[Ended]:
    from airflow_provider_agora._client import shared_budget as _shared_budget
    from airflow_provider_agora._ncs import reader as _notification_reader
    from airflow_provider_agora.testing import areset_process_state

    loop = asyncio.get_running_loop()
    trips_before = sum(b.round_trips for b in _shared_budget._budgets.values())
    gc.collect()
    hwm_valid = h.reset_peak_rss()
    result.rss_before_kib = h.proc_status_kib("VmRSS") or 0
    sampler = h.RssSampler()
    sampler.start()
    lags: list[tuple[float, float]] = []
    monitor = loop.create_task(_lag_monitor(lags))
    cpu_before = time.process_time()
    began = time.monotonic()
    done: list[Ended] = []
    triggers = [(make(recording), recording) for recording in recordings]
    await asyncio.gather(*(_drive(trigger, recording, done) for trigger, recording in triggers))
    result.wall_seconds = time.monotonic() - began
    result.cpu_seconds = time.process_time() - cpu_before
    result.rss_peak_kib = await sampler.stop(hwm_valid)
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    if lags:
        values = [lag for _, lag in lags]
        result.lag_max_ms = 1000 * max(values)
        result.lag_p99_ms = 1000 * (h.quantile(values, 0.99) or 0.0)
        result.lag_max_at = max(lags, key=lambda item: item[1])[0] - result.started_at
    readers = list(_notification_reader._readers.get(loop, {}).values())
    result.readers = len(readers)
    result.reader_connections_opened = sum(r.connections_opened for r in readers) if readers else 0
    for reader in readers:  # no subscription left: each ends within one XREAD BLOCK
        if reader._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(reader._task), timeout=5)
    result.budget_round_trips = sum(b.round_trips for b in _shared_budget._budgets.values()) - trips_before
    # A triggerer keeps these for its lifetime; a benchmark scenario ends, so close them.
    await areset_process_state()
    return done


def _stream_31_stored_at(redis_server: RedisServer, sids: set[str]) -> dict[str, float]:
    """sid -> epoch seconds at which its 31 was added to the account's stream (Redis's clock)."""
    client = redis_server.client()
    stored: dict[str, float] = {}
    try:
        for entry_id, fields in h.stream_entries(client, KEYS["stream"], count=5000):
            sid = fields.get("sid", "")
            if sid in sids and json.loads(fields["notification"]).get("event_type") == 31:
                stored.setdefault(sid, int(entry_id.split("-")[0]) / 1000)
    finally:
        client.close()
    return stored


def run_scenario(
    key: str,
    name: str,
    simulator: h.SimulatorProcess,
    redis_server: RedisServer,
    watch: RedisWatch,
    make: Callable[[dict[str, Any], float], BaseTrigger],
    offsets: list[float],
    hold: float,
    with_notifications: bool,
) -> Scenario:
    result = Scenario(key=key, name=name, n=len(offsets))
    simulator.control("DELETE", "notifications")
    t0 = time.time()
    result.started_at = t0
    recordings = simulator.control("POST", "recordings", {"end_times": [t0 + o for o in offsets], "hold": hold})
    simulator.control("DELETE", "requests")
    simulator.control("DELETE", "stats")
    sids = {r["sid"] for r in recordings}
    end_of = {r["sid"]: float(r["end_time"]) for r in recordings}
    result.redis_before = watch.info()
    watch.start()
    done = asyncio.run(_run_triggers(lambda recording: make(recording, t0), recordings, result))
    watch.stop()
    result.redis_after = watch.info()
    result.redis_max_connected_clients = watch.max_connected_clients
    result.own_redis_max = watch.max_own_connections
    result.own_redis_distinct = len(watch.own_ports_seen)

    stats = simulator.control("GET", "stats")
    result.http_connections = int(stats["connections_accepted"]) - 1  # minus the GET itself
    result.requests = int(stats["requests"])
    result.by_status = dict(stats["by_status"])
    log = simulator.control("GET", "requests")
    result.peak_per_second = max_in_sliding_second([r["time"] for r in log])
    queries: dict[str, list[float]] = {}
    for record in log:
        sid = record["path"].split("/sid/", 1)[-1].split("/", 1)[0]
        queries.setdefault(sid, []).append(float(record["time"]))
    del log
    notices = [n for n in simulator.control("GET", "notifications") if n["sid"] in sids]
    result.notification_stats = simulator.control("GET", "notifications/stats")
    first_31: dict[str, float] = {}
    for notice in sorted(notices, key=lambda n: n["time"]):
        if notice["event_type"] == 31 and notice["attempt"] == 1:
            first_31.setdefault(notice["sid"], float(notice["time"]))
    result.notification_stats["attempts_this_scenario"] = sum(1 for n in notices if n["attempt"] >= 1)
    result.notification_stats["not_200_this_scenario"] = sum(
        1 for n in notices if n["attempt"] >= 1 and n["status"] != 200
    )
    stored_at = _stream_31_stored_at(redis_server, sids)

    for outcome in done:
        result.events[outcome.status] = result.events.get(outcome.status, 0) + 1
        result.ended_by[str(outcome.ended_by)] = result.ended_by.get(str(outcome.ended_by), 0) + 1
    result.checkpoints = sum(o.checkpoints for o in done)
    result.other_messages = sorted({o.message[:300] for o in done if o.status != "success"})[:WORST_LISTED]
    rows = []
    for o in done:
        if o.status != "success":
            continue
        end = end_of[o.sid]
        attempt = first_31.get(o.sid)
        stored = stored_at.get(o.sid)
        if attempt is not None:
            result.attempt_lag.append(attempt - (end + 1.0))
            if stored is not None:
                result.attempt_to_stored.append(stored - attempt)
        if with_notifications:
            if attempt is None:
                result.notification_missing += 1
                reference = end
            else:
                reference = attempt
        else:
            reference = end
        delay = o.at - reference
        result.delays.append(delay)
        result.delays_from_end.append(o.at - end)
        (result.by_notification if o.ended_by == "notification" else result.by_status_delays).append(delay)
        if with_notifications and stored is not None:
            if o.ended_by == "notification":
                result.stored_to_event.append(o.at - stored)
            asked = queries.get(o.sid, [])
            if any(t > stored for t in asked):  # its query reached Agora only after the 31 was stored
                result.queued_at_notification += 1
                result.queued_delays.append(delay)
            else:
                result.idle_delays.append(delay)
        rows.append((delay, o, attempt, stored))
    for delay, o, attempt, stored in sorted(rows, key=lambda row: row[0], reverse=True)[:WORST_LISTED]:
        result.worst.append(
            {
                "delay_s": round(delay, 2),
                "ended_by": o.ended_by,
                "end_at": round(end_of[o.sid] - t0, 2),
                "notification_attempt_at": None if attempt is None else round(attempt - t0, 2),
                "stored_at": None if stored is None else round(stored - t0, 2),
                "event_at": round(o.at - t0, 2),
                "queries_at": [round(t - t0, 2) for t in queries.get(o.sid, [])],
                "checkpoints": o.checkpoints,
            }
        )
    return result


# -- report ---------------------------------------------------------------------------------------


def summary(s: Scenario) -> dict[str, Any]:
    return {
        "delay_median_s": h.quantile(s.delays, 0.5),
        "delay_p99_s": h.quantile(s.delays, 0.99),
        "delay_max_s": max(s.delays) if s.delays else None,
        "requests_per_recording": s.requests / s.n if s.n else None,
        "rss_growth_mib": (s.rss_peak_kib - s.rss_before_kib) / 1024,
        "redis_connections_received": s.redis_after.get("total_connections_received", 0)
        - s.redis_before.get("total_connections_received", 0),
    }


def _counts(counts: dict[str, int], *names: str) -> str:
    """``a / b / other`` of a counter."""
    named = [counts.get(name, 0) for name in names]
    return " / ".join(str(v) for v in [*named, sum(counts.values()) - sum(named)])


def _verdict(s: Scenario) -> str:
    if s.key == "b":
        return f"(bound N/10 = {s.n / AGORA_RATE:g} s)"
    med, p99 = h.quantile(s.delays, 0.5), h.quantile(s.delays, 0.99)
    if med is None or p99 is None:
        return "no events"
    met = med < TARGET_MEDIAN_S and p99 < TARGET_P99_S
    return ("**met**" if met else "**missed**") + f" (median < {TARGET_MEDIAN_S:g} s, p99 < {TARGET_P99_S:g} s)"


def _per_recording(value: float | int, s: Scenario, digits: int = 2) -> str:
    return h.fmt(value / s.n if s.n else None, digits)


def _not_b(cell: Callable[[Scenario], str]) -> Callable[[Scenario], str]:
    return lambda s: "-" if s.key == "b" else cell(s)


_ROWS: list[tuple[str, Callable[[Scenario], str]]] = [
    ("Events: success / timeout / other", lambda s: _counts(s.events, "success", "timeout")),
    ("Ended by: notification / status (query) / other", lambda s: _counts(s.ended_by, "notification", "status")),
    (
        "**Delay end notification → event, median (s)** (a: from the 31's first attempt; b: from E)",
        lambda s: h.fmt(h.quantile(s.delays, 0.5)),
    ),
    ("**Delay, p99 (s)**", lambda s: h.fmt(h.quantile(s.delays, 0.99))),
    ("**Delay, worst (s)**", lambda s: h.fmt(h.quantile(s.delays, 1.0))),
    ("Target (issue 13): median < 1 s and p99 < 3 s", _verdict),
    (
        "Delay from the recording's end E → event, median / p99 / worst (s)",
        lambda s: h.fmt_quantiles(s.delays_from_end),
    ),
    ("Delay of waits ended by a notification, median / p99 / worst (s)", lambda s: h.fmt_quantiles(s.by_notification)),
    ("Delay of waits ended by a query, median / p99 / worst (s)", lambda s: h.fmt_quantiles(s.by_status_delays)),
    ("**Agora requests per recording**", lambda s: _per_recording(s.requests, s)),
    (
        "Agora requests: total / 429s / peak in any 1 s",
        lambda s: f"{s.requests} / {s.by_status.get('429', 0)} / {s.peak_per_second}",
    ),
    ("Checkpoint events (re-deferrals)", lambda s: str(s.checkpoints)),
    (
        "**Redis connections of the triggerer: reader's `connections_opened`**",
        lambda s: f"{s.reader_connections_opened} ({s.readers} reader)",
    ),
    (
        "Triggerer's TCP connections to Redis (reader + request budget): max at once / distinct seen",
        lambda s: f"{s.own_redis_max} / {s.own_redis_distinct}",
    ),
    (
        "Redis `connected_clients`: before / max / after (all clients)",
        lambda s: (
            f"{s.redis_before.get('connected_clients')} / {s.redis_max_connected_clients} / "
            f"{s.redis_after.get('connected_clients')}"
        ),
    ),
    (
        "Redis `total_connections_received` delta (all clients: triggerer, receiver, monitor)",
        lambda s: str(summary(s)["redis_connections_received"]),
    ),
    ("Request-budget Redis round trips per recording", lambda s: _per_recording(s.budget_round_trips, s, 1)),
    ("**RSS growth for the waits, peak - before (MiB)**", lambda s: h.fmt(summary(s)["rss_growth_mib"], 1)),
    ("Process CPU (s)", lambda s: h.fmt(s.cpu_seconds, 1)),
    (
        "Event-loop lag p99 / max (ms)",
        lambda s: f"{h.fmt(s.lag_p99_ms, 0)} / {h.fmt(s.lag_max_ms, 0)} (at T0 + {s.lag_max_at:.0f} s)",
    ),
    ("Simulator: 31's first attempt - (E + 1 s), median / p99 / worst (s)", lambda s: h.fmt_quantiles(s.attempt_lag)),
    (
        "31's first attempt → stored in Redis, median / p99 / worst (s)",
        lambda s: h.fmt_quantiles(s.attempt_to_stored, 3),
    ),
    (
        "Stored in Redis → event (waits ended by it), median / p99 / worst (s)",
        lambda s: h.fmt_quantiles(s.stored_to_event, 3),
    ),
    (
        "Waits whose query reached Agora after their 31 was stored: count; their delay median / p99 / worst (s)",
        _not_b(lambda s: f"{s.queued_at_notification}; {h.fmt_quantiles(s.queued_delays, 1)}"),
    ),
    ("Other waits: delay median / p99 / worst (s)", _not_b(lambda s: h.fmt_quantiles(s.idle_delays))),
    (
        "Notification POSTs this scenario (all events) / not answered 200",
        lambda s: (
            f"{s.notification_stats.get('attempts_this_scenario')} / "
            f"{s.notification_stats.get('not_200_this_scenario')}"
        ),
    ),
    ("Wall time of the scenario (s)", lambda s: h.fmt(s.wall_seconds, 0)),
]


def markdown(meta: dict[str, Any], scenarios: list[Scenario]) -> str:
    cols = [s.name for s in scenarios]

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    lines = [
        f"Notification waits benchmark, {meta['date']}: N = {meta['n']} concurrent deferred waits "
        f"(`AgoraRecordingQueryTrigger`, one event loop), end times E uniform in [T0 + {meta['lead']:g} s, "
        f"T0 + {meta['lead'] + meta['window']:g} s], target_status 8, trigger timeout at T0 + {meta['deadline']:g} s; "
        f"simulator at {AGORA_RATE} requests/s, notifications 31 at E + 1 s, 11 at E + 2 s, via a real "
        f"`airflow api-server` (1 worker) into redis-server {meta['redis_server']}; each scenario's waits in a "
        f"fresh process.",
        f"Machine: {meta['cores']} cores, {meta['platform']}, Python {meta['python']}, apache-airflow "
        f"{meta['airflow']}, redis-py {meta['redis_py']}; provider at {meta['commit']}. Load average "
        f"(1/5/15 min) before: {meta['loadavg_start']}, after: {meta.get('loadavg_end', '-')} "
        f"(other engineers' jobs share the machine).",
        "",
        row("Metric", cols),
        "| --- | " + " | ".join("---:" for _ in cols) + " |",
    ]
    lines += [row(label, [cell(s) for s in scenarios]) for label, cell in _ROWS]
    for s in scenarios:
        if s.notification_missing:
            lines += ["", f"{s.name}: {s.notification_missing} waits had no 31 attempt logged; their delay is from E."]
        if s.other_messages:
            lines += ["", f"{s.name}, messages of waits that did not succeed: " + " | ".join(s.other_messages)]
    for s in scenarios:
        if s.worst:
            lines += ["", f"{s.name}, longest waits (seconds after T0):", ""]
            for w in s.worst:
                lines.append(
                    f"- delay {w['delay_s']:g} s, ended by {w['ended_by']}: E = {w['end_at']:g}, 31 attempt "
                    f"{w['notification_attempt_at']}, stored {w['stored_at']}, event {w['event_at']:g}, "
                    f"queries reached Agora at {w['queries_at']}, checkpoints {w['checkpoints']}"
                )
    lines += [
        "",
        f"Command: `{meta['command']}`; whole run {meta.get('total_seconds', '-')} s "
        f"(db migrate {meta.get('migrate_seconds', '-')} s, API server boot {meta.get('boot_seconds', '-')} s).",
    ]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = h.argument_parser(__doc__)
    parser.add_argument("--n", type=int, default=1000, help="concurrent waits (default 1000)")
    parser.add_argument("--lead", type=float, default=60.0, help="first end time at T0 + lead s (default 60)")
    parser.add_argument("--window", type=float, default=60.0, help="end times spread over W s (default 60)")
    parser.add_argument("--poll-interval", type=float, default=60.0, help="trigger poll_interval (default 60)")
    parser.add_argument(
        "--notification-poll-interval", type=float, default=600.0, help="a: notification_poll_interval (600)"
    )
    parser.add_argument("--slack", type=float, default=None, help="timeout = T0 + lead + W + slack (1.5 * N/10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default="ab", help="a, b in the order given (default ab)")
    parser.add_argument("--json", type=Path, default=None, help="also write everything as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    return parser


def _warm_up(simulator: h.SimulatorProcess, conn_id: str) -> None:
    """One query and one follow on a throw-away event loop, so that one-time imports and set-up
    (httpx, redis.asyncio, the reader's modules) are not counted as the waits' memory."""
    from airflow_provider_agora.hooks.agora import AgoraAsyncHook
    from airflow_provider_agora.testing import areset_process_state

    (recording,) = simulator.control("POST", "recordings", {"end_times": [time.time() + 3600]})

    async def once() -> None:
        hook = AgoraAsyncHook(conn_id)
        heard = await hook.follow_notifications(recording["sid"])
        await hook.query(recording["resource_id"], recording["sid"], recording_mode="mix")
        if heard is not None:
            await asyncio.wait_for(heard.caught_up.wait(), timeout=10)
            heard.close()
            await asyncio.sleep(1.0)  # the reader ends after its next XREAD
        await areset_process_state()  # as a fresh triggerer: no budget, client or reader left over

    asyncio.run(once())
    gc.collect()


def child_main(spec_path: Path, out_path: Path) -> int:
    """One scenario in this fresh process (the "triggerer"): warm up, run the waits, write the result."""
    spec = json.loads(spec_path.read_text())
    os.environ.update(spec["env"])
    from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger

    h.silence_logs()
    simulator = notifying_simulator(spec["notify_url"])
    simulator.url = spec["simulator_url"]
    redis_server = RedisServer()
    redis_server.port = int(spec["redis_port"])
    key = spec["key"]
    conn_id = POLLING_CONN_ID if key == "b" else NCS_CONN_ID
    deadline = float(spec["deadline"])

    def make(recording: dict[str, Any], t0: float) -> BaseTrigger:
        common = {
            "resource_id": recording["resource_id"],
            "sid": recording["sid"],
            "recording_mode": "mix",
            "target_status": 8,
            "poll_interval": float(spec["poll_interval"]),
            "end_time": t0 + deadline,
        }
        if key == "b":
            return AgoraRecordingQueryTrigger(agora_conn_id=POLLING_CONN_ID, **common)
        return AgoraRecordingQueryTrigger(
            agora_conn_id=NCS_CONN_ID, notification_poll_interval=float(spec["notification_poll_interval"]), **common
        )

    watch = RedisWatch(redis_server)
    try:
        _warm_up(simulator, conn_id)
        result = run_scenario(
            key, spec["name"], simulator, redis_server, watch, make, spec["offsets"], spec["hold"], key != "b"
        )
    finally:
        watch.close()
        shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)
    out_path.write_text(json.dumps(asdict(result)))
    return 0


def _run_child(spec: dict[str, Any], work: Path, timeout: float) -> Scenario:
    spec_path, out_path = work / f"spec-{spec['key']}.json", work / f"result-{spec['key']}.json"
    spec_path.write_text(json.dumps(spec))
    child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path), str(out_path)])
    try:
        code = child.wait(timeout=timeout)
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if code != 0 or not out_path.exists():
        raise RuntimeError(f"scenario {spec['key']} exited with {code}")
    return Scenario(**json.loads(out_path.read_text()))


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = _parser().parse_args(argv)
    if args.child:
        return child_main(Path(args.child[0]), Path(args.child[1]))
    scenarios = args.scenarios.lower()
    if not scenarios or set(scenarios) - set("ab") or args.n < 1:
        _parser().error("--scenarios takes letters a, b; --n >= 1")
    slack = args.slack if args.slack is not None else 1.5 * args.n / AGORA_RATE
    deadline = args.lead + args.window + slack
    rng = random.Random(args.seed)
    offsets = [args.lead + rng.uniform(0.0, args.window) for _ in range(args.n)]

    from tests.integration.ui_helpers import AirflowApiServer

    redis_server = RedisServer()
    if not redis_server.available:
        print("redis-server is not installed", file=sys.stderr)
        return 1
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "airflow_provider_agora"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    version = subprocess.run(
        [redis_server.binary or "redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout
    shown_argv = sys.argv if argv is None else ["benchmarks/notification_waits.py", *argv]
    meta: dict[str, Any] = {
        **h.run_meta(),
        "n": args.n,
        "lead": args.lead,
        "window": args.window,
        "deadline": deadline,
        "poll_interval": args.poll_interval,
        "notification_poll_interval": args.notification_poll_interval,
        "seed": args.seed,
        "redis_py": h.package_version("redis"),
        "redis_server": version.split(" sha=")[0].replace("Redis server ", "").strip(),
        "commit": commit + (" (uncommitted changes in airflow_provider_agora/)" if dirty else ""),
        "command": " ".join([".venv/bin/python", *shown_argv]),
        "loadavg_start": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    home = Path(tempfile.mkdtemp(prefix="agora-notification-waits-"))
    server: AirflowApiServer | None = None
    simulator: h.SimulatorProcess | None = None
    results: list[Scenario] = []
    names = {"a": "a: notifications", "b": "b: polling only"}
    with h.terminate_on_sigterm():
        try:
            redis_server.start()
            server = AirflowApiServer(home / "server")
            server.home.mkdir()
            server.env.update(
                {
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER": "True",
                    f"AIRFLOW_CONN_{NCS_CONN_ID.upper()}": connection_json(
                        "http://127.0.0.1:9", ncs_secret=NCS_SECRET, redis_conn_id=REDIS_CONN_ID
                    ),
                    f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}": redis_server.connection_uri(),
                }
            )
            print("airflow db migrate ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            server.migrate()
            meta["migrate_seconds"] = round(time.monotonic() - t, 1)
            print("airflow api-server ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            server.start()
            meta["boot_seconds"] = round(time.monotonic() - t, 1)
            simulator = notifying_simulator(f"{server.url}/agora/ncs/{NCS_CONN_ID}").start()
            env = {
                f"AIRFLOW_CONN_{NCS_CONN_ID.upper()}": connection_json(
                    simulator.url, ncs_secret=NCS_SECRET, redis_conn_id=REDIS_CONN_ID
                ),
                f"AIRFLOW_CONN_{POLLING_CONN_ID.upper()}": connection_json(simulator.url, redis_conn_id=REDIS_CONN_ID),
                f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}": redis_server.connection_uri(),
            }
            for key in scenarios:
                print(
                    f"running {names[key]}: N={args.n}, E in T0+{args.lead:g}..{args.lead + args.window:g} s, "
                    f"in a fresh process ...",
                    file=sys.stderr,
                    flush=True,
                )
                spec = {
                    "key": key,
                    "name": names[key],
                    "env": env,
                    "simulator_url": simulator.url,
                    "notify_url": simulator.notify_url,
                    "redis_port": redis_server.port,
                    "offsets": offsets,
                    "deadline": deadline,
                    "hold": deadline + 600.0,
                    "poll_interval": args.poll_interval,
                    "notification_poll_interval": args.notification_poll_interval,
                }
                result = _run_child(spec, home, timeout=deadline + 180)
                results.append(result)
                s = summary(result)
                print(
                    f"  done in {result.wall_seconds:.0f} s: median {h.fmt(s['delay_median_s'])} s, p99 "
                    f"{h.fmt(s['delay_p99_s'])} s, worst {h.fmt(s['delay_max_s'])} s, "
                    f"{s['requests_per_recording']:.2f} requests/recording, ended by {result.ended_by}",
                    file=sys.stderr,
                    flush=True,
                )
            meta["loadavg_end"] = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        finally:
            if simulator is not None:
                simulator.stop()
            if server is not None:
                server.stop()
            redis_server.stop()
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)
    meta["total_seconds"] = round(time.monotonic() - started)
    print(markdown(meta, results))
    if args.json is not None:
        document = {"meta": meta, "scenarios": [{**asdict(r), **summary(r)} for r in results]}
        args.json.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
