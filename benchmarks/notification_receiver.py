"""Benchmark: the NCS notification receiver in one real Airflow 3.3 API server, storing into a real Redis.

Starts ``redis-server`` (``tests/support.py``'s ``RedisServer``) and one ``airflow api-server``
(``tests/integration/ui_helpers.py``'s ``AirflowApiServer``, ``AIRFLOW__API__WORKERS=1``: one
uvicorn worker, checked in the server's banner and its process group) in a throw-away
``AIRFLOW_HOME`` on SQLite, with the ``agora_default`` connection configured for notifications the
way the integration test configures it (``ncs_secret``, ``ncs_previous_secret``,
``redis_conn_id``). Then, per run: ``FLUSHDB``, ``INFO everything``, N signed notifications (distinct
``noticeId``s; realistic 31 "uploaded" bodies with 2-4 files, one per recording, and 33
"uploading_progress" bodies on the same recordings) POSTed to ``/agora/ncs/agora_default`` from C
concurrent keep-alive HTTP/1.1 connections, ``INFO everything`` again, and a check of Redis.

Reported per run: notifications per second (N / wall time from the first request to the last
answer), client-side answer time per request (p50, p99, max; from writing the request to having
read the whole answer), the share answered 200 and answered ``"stored"``, whether every notification
was stored exactly once (stream length, distinct ``noticeId``s in the stream equal to those sent,
sum of the per-recording lists), and Redis work per notification from the ``INFO`` deltas:

- *round trips*: commands the receiver sent over its sockets (``EVALSHA``, plus ``SCRIPT``,
  ``EVAL``, and connection set-up ``AUTH`` / ``HELLO`` / ``CLIENT`` / ``SELECT`` / ``PING``);
- *commands inside Redis*: every ``cmdstat_*`` call, which also counts the commands the Lua script
  runs (``EXISTS``, ``SET``, ``XADD``, ``RPUSH``, ``PEXPIRE``);
- ``total_commands_processed`` from ``INFO stats``.

The benchmark's own ``INFO`` calls are subtracted (nothing else talks to this Redis during a run).
CPU time of the API server's process group, of Redis and of the client is reported too, because
on a 2-core machine the three compete.

Runs go round-robin over the client counts (1, 10, 20, 1, 10, 20, ...), so slow phases of a shared
machine spread over all of them; the summary gives the best run and the spread. Before the runs,
shown per run but not in the summary: a warm-up on the freshly started server from as many clients
as the largest run (its first requests find no connection read yet), a "floor" run of wrongly
signed notifications (401: HTTP, routing, Airflow's middleware, the cached connection and one HMAC,
but no JSON parsing and no Redis), and an in-process probe in a child process with the server's
environment, timing ``_ncs.receiver_connections.connections._read`` (the connection lookup the
receiver does at most every 30 s; the connection in an environment variable, and the same in the
metadata DB), the handler without HTTP (``handle_notification``) and its parts.

To explain the slow answers, each run also gets: the server's own duration of each request (from
the ``duration_us`` of Airflow's access log), the API server's full garbage collections (a
``gc.callbacks`` hook dropped into the throw-away ``AIRFLOW_HOME/plugins``, not into the
repository), a stall detector (a separate process sleeping 5 ms at a time and noting wake-ups 50 ms
late or more), the client's event-loop lag, and the Redis connections opened and closed (the
receiver closes its Redis client when it reads the connection again, every 30 s).

Everything is bounded: each request has a timeout, each run a deadline, and runs that would go
past ``--budget`` seconds are skipped. Loopback only. A script, not a test: nothing fails on timing.

    .venv/bin/python benchmarks/notification_receiver.py                  # ~2.5-4 min; Markdown on stdout
    .venv/bin/python benchmarks/notification_receiver.py --n 1000 --clients 1,20 --repeats 1 --json /tmp/ncs.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import _harness as h  # noqa: E402

# tests.support imports the provider's hook and so Airflow, which reads AIRFLOW_HOME on import:
# give this process a throw-away one first (the server's home is a sibling of the client's).
_HOME = h.use_throwaway_airflow_home("agora-ncs-bench-")
os.environ["AIRFLOW_HOME"] = str(_HOME / "client")

from airflow_provider_agora._ncs.store import notification_keys  # noqa: E402
from airflow_provider_agora.notifications import namespace_of, sign  # noqa: E402  (stdlib only)
from tests.integration.ui_helpers import AirflowApiServer  # noqa: E402
from tests.support import CUSTOMER_ID, RedisServer, connection_json  # noqa: E402

CONN_ID = "agora_default"
DB_CONN_ID = "agora_in_db"  # the same connection, kept in Airflow's metadata DB (probe only)
REDIS_CONN_ID = "agora_ncs_redis"
NCS_SECRET = "ncs-bench-secret-Rt5w"
PREVIOUS_SECRET = "ncs-bench-old-secret-Lm2c"
KEYS = notification_keys(CUSTOMER_ID, namespace_of(NCS_SECRET))
REQUEST_TIMEOUT = 30.0  # per request; Agora's own limit is 10 s
AGORA_LIMIT_SECONDS = 10.0
# Commands the receiver itself sends over a socket (everything else in commandstats runs inside Lua).
CLIENT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "script", "auth", "hello", "client", "select", "ping")
BENCH_COMMANDS = ("info",)  # the benchmark's own, between the two snapshots


# -- notifications ------------------------------------------------------------------------------


def _file(sid: str, cname: str, uid: str, suffix: str, slice_start: int) -> dict[str, Any]:
    return {
        "fileName": f"recordings/{sid}_{cname}{suffix}",
        "trackType": "audio_and_video",
        "uid": uid,
        "mixedAllUser": True,
        "isPlayable": True,
        "sliceStartTime": slice_start,
    }


def make_notifications(n: int, progress_share: float, rng: random.Random) -> list[tuple[str, bytes]]:
    """N request bodies (signed later): one 31 (2-4 files) per recording, the rest 33s on those recordings.

    Within a recording its 33s come before its 31 (``sequence`` grows); recordings are interleaved.
    Returns ``(noticeId, raw body)`` in sending order.
    """
    uploads = max(1, round(n * (1 - progress_share)))
    progress = n - uploads
    now_ms = int(time.time() * 1000)
    per_sid: dict[str, int] = {}
    sids = [uuid.uuid4().hex for _ in range(uploads)]
    events: list[tuple[float, str, int]] = []  # (sort key, sid, eventType)
    ends = {sid: rng.random() for sid in sids}
    for sid in sids:
        events.append((ends[sid], sid, 31))
    for _ in range(progress):
        sid = rng.choice(sids)
        events.append((rng.uniform(0, ends[sid]), sid, 33))
    events.sort()
    bodies: list[tuple[str, bytes]] = []
    for _, sid, event_type in events:
        sequence = per_sid.get(sid, 0)
        per_sid[sid] = sequence + 1
        cname = f"room-{sid[:6]}"
        uid = str(100000 + int(sid[:5], 16) % 900000)
        if event_type == 31:
            slice_start = now_ms - rng.randint(60_000, 3_600_000)
            suffixes = [".m3u8"] + [f"_{i}.mp4" for i in range(rng.randint(1, 3))]  # 2-4 files
            details: dict[str, Any] = {
                "msgName": "uploaded",
                "status": 0,
                "fileList": [_file(sid, cname, uid, suffix, slice_start) for suffix in suffixes],
            }
        else:
            details = {"msgName": "uploading_progress", "progress": rng.randint(0, 10000)}
        notice_id = uuid.uuid4().hex
        envelope = {
            "noticeId": notice_id,
            "productId": 3,
            "eventType": event_type,
            "notifyMs": now_ms,
            "payload": {
                "cname": cname,
                "uid": uid,
                "sid": sid,
                "sequence": sequence,
                "sendts": now_ms - rng.randint(10, 500),
                "serviceType": 2,
                "details": details,
            },
        }
        bodies.append((notice_id, json.dumps(envelope, separators=(",", ":")).encode()))
    return bodies


def http_request(port: int, raw: bytes, secret: str) -> bytes:
    headers = sign(raw, secret)
    head = (
        f"POST /agora/ncs/{CONN_ID} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: agora-ncs-bench\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n"
        f"Agora-Signature: {headers['Agora-Signature']}\r\n"
        f"Agora-Signature-V2: {headers['Agora-Signature-V2']}\r\n"
        "\r\n"
    )
    return head.encode() + raw


# -- keep-alive HTTP/1.1 client -----------------------------------------------------------------


@dataclass
class Answer:
    started: float  # perf_counter when the request was written
    seconds: float | None  # None: no answer (error)
    status: int | None
    outcome: str  # the receiver's "status" field, or the error


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed by the server")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    close = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, close, body


async def _connection(
    port: int,
    queue: list[int],
    requests: Sequence[bytes],
    answers: list[Answer | None],
    deadline: float,
    stats: Counter[str],
) -> None:
    """One keep-alive connection taking the next request from the shared queue until it is empty."""
    reader = writer = None
    try:
        while queue and time.perf_counter() < deadline:
            index = queue.pop()
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                stats["connections"] += 1
            assert reader is not None
            started = time.perf_counter()
            writer.write(requests[index])
            try:
                status, close, body = await asyncio.wait_for(_read_answer(reader), REQUEST_TIMEOUT)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as error:
                answers[index] = Answer(started, None, None, type(error).__name__)
                writer.close()
                reader = writer = None
                continue
            seconds = time.perf_counter() - started
            try:
                outcome = str(json.loads(body).get("status"))
            except ValueError:
                outcome = "not JSON"
            answers[index] = Answer(started, seconds, status, outcome)
            if close:
                stats["closed_by_server"] += 1
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _loop_lag(stats: Counter[str]) -> None:
    """The client's own event-loop lag: how late a 5 ms sleep wakes up (max kept, in microseconds)."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        lag_us = int((time.perf_counter() - t - 0.005) * 1e6)
        stats["loop_lag_max_us"] = max(stats["loop_lag_max_us"], lag_us)


async def _send_all(
    port: int, requests: Sequence[bytes], clients: int, deadline: float
) -> tuple[list[Answer | None], float, float, Counter[str]]:
    queue = list(range(len(requests)))[::-1]  # pop() takes them in order
    answers: list[Answer | None] = [None] * len(requests)
    stats: Counter[str] = Counter()
    monitor = asyncio.ensure_future(_loop_lag(stats))
    began = time.perf_counter()
    await asyncio.gather(*(_connection(port, queue, requests, answers, deadline, stats) for _ in range(clients)))
    ended = time.perf_counter()
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    return answers, began, ended, stats


# -- measuring helpers --------------------------------------------------------------------------


def redis_snapshot(client: Any) -> dict[str, Any]:
    info = client.info("everything")
    calls = {key[len("cmdstat_") :]: value["calls"] for key, value in info.items() if key.startswith("cmdstat_")}
    return {
        "calls": calls,
        "total_commands_processed": info["total_commands_processed"],
        "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        "connections_received": info["total_connections_received"],
        "connected_clients": info["connected_clients"],
    }


def redis_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    calls = {
        name: after["calls"].get(name, 0) - before["calls"].get(name, 0)
        for name in after["calls"]
        if after["calls"].get(name, 0) != before["calls"].get(name, 0)
    }
    ours = sum(calls.get(name, 0) for name in BENCH_COMMANDS)
    receiver_calls = {name: count for name, count in calls.items() if name not in BENCH_COMMANDS}
    return {
        "calls": dict(sorted(receiver_calls.items())),
        "round_trips": sum(count for name, count in receiver_calls.items() if name.split("|")[0] in CLIENT_COMMANDS),
        "commands_inside": sum(receiver_calls.values()),
        "total_commands_processed": after["total_commands_processed"] - before["total_commands_processed"] - ours,
        "cpu_seconds": after["cpu"] - before["cpu"],
        "connections_received": after["connections_received"] - before["connections_received"],
        # Connections the receiver closed during the run: a closed pool, i.e. the connection was read again.
        "connections_closed": (after["connections_received"] - before["connections_received"])
        - (after["connected_clients"] - before["connected_clients"]),
    }


def check_stored(client: Any, sent_ids: Sequence[str]) -> dict[str, Any]:
    stream_length = client.xlen(KEYS["stream"])
    ids = [json.loads(fields["notification"])["notice_id"] for _, fields in h.stream_entries(client, KEYS["stream"])]
    sid_list_total = 0
    for key in client.scan_iter(match=KEYS["sid"] + "*", count=1000):
        sid_list_total += client.llen(key)
    distinct = set(ids)
    return {
        "stream_length": stream_length,
        "distinct_notice_ids": len(distinct),
        "sid_list_entries": sid_list_total,
        "exactly_once": stream_length == len(sent_ids)
        and len(ids) == len(distinct)
        and distinct == set(sent_ids)
        and sid_list_total == len(sent_ids),
    }


# -- runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    clients: int
    n: int
    sent: int = 0
    answered: int = 0
    seconds: float = 0.0
    per_second: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    over_agora_limit: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    share_200: float = 0.0
    share_stored: float = 0.0
    connections_opened: int = 0
    closed_by_server: int = 0
    stored: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    round_trips_per_notification: float | None = None
    commands_inside_per_notification: float | None = None
    total_commands_per_notification: float | None = None
    server_cpu_ms_per_notification: float | None = None
    redis_cpu_ms_per_notification: float | None = None
    client_cpu_ms_per_notification: float | None = None
    loadavg_before: str = ""
    slowest_at_s: list[float] = field(default_factory=list)  # when the 5 slowest requests began
    errors_at_s: list[float] = field(default_factory=list)  # when non-200 answers / errors began
    server_began_at_s: float = 0.0  # run start, in seconds since the server's first notification
    wall_began: float = 0.0  # time.time(), to find the run's lines in the server's access log
    wall_ended: float = 0.0
    slow_100ms: int = 0  # answers that took 100 ms or more
    slow_episodes: int = 0  # groups of those that began within 100 ms of each other
    client_loop_lag_max_ms: float = 0.0
    machine_stalls: list[float] = field(default_factory=list)  # the stall detector's oversleeps >= 50 ms (ms)
    server_p50_ms: float | None = None  # Airflow's access log: duration_us of the run's /agora/ncs requests
    server_p99_ms: float | None = None
    server_max_ms: float | None = None
    server_logged: int = 0
    # API server collections in the run: (generation, ms, began at s into the run)
    server_gc: list[tuple[int, float, float]] = field(default_factory=list)
    stored_before_resends: int | None = None  # stream length right after the run
    resent: int = 0  # notifications not answered 200, resent like Agora does (same noticeId, new notifyMs)
    resend_outcomes: dict[str, int] = field(default_factory=dict)


def do_run(
    label: str,
    server: AirflowApiServer,
    redis: Any,
    clients: int,
    bodies: list[tuple[str, bytes]],
    secret: str,
    seconds_left: float,
    server_t0: float,
    *,
    check: bool = True,
) -> Run:
    requests = [http_request(server.port, raw, secret) for _, raw in bodies]
    run = Run(label=label, clients=clients, n=len(bodies))
    run.loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    redis.flushdb()
    assert server.process is not None
    before = redis_snapshot(redis)
    server_cpu = h.group_cpu_seconds(server.process.pid)
    client_cpu = time.process_time()
    run_deadline = time.perf_counter() + seconds_left
    run.wall_began = time.time()
    answers, began, ended, stats = asyncio.run(_send_all(server.port, requests, clients, run_deadline))
    run.wall_ended = time.time()
    run.client_loop_lag_max_ms = stats["loop_lag_max_us"] / 1000
    client_cpu = time.process_time() - client_cpu
    server_cpu = h.group_cpu_seconds(server.process.pid) - server_cpu
    time.sleep(0.2)  # a request the client gave up on may still be in the server's thread pool
    after = redis_snapshot(redis)
    run.server_began_at_s = began - server_t0
    done = [a for a in answers if a is not None]
    run.sent = len(done)
    timed = [a.seconds for a in done if a.seconds is not None]
    run.answered = len(timed)
    run.seconds = ended - began
    run.per_second = run.sent / run.seconds if run.seconds else 0.0
    if timed:
        run.p50_ms = h.quantile(timed, 0.50) * 1000  # type: ignore[operator]
        run.p99_ms = h.quantile(timed, 0.99) * 1000  # type: ignore[operator]
        run.max_ms = max(timed) * 1000
    run.over_agora_limit = sum(1 for s in timed if s >= AGORA_LIMIT_SECONDS)
    run.statuses = dict(Counter(str(a.status) for a in done))
    run.outcomes = dict(Counter(a.outcome for a in done))
    run.share_200 = sum(1 for a in done if a.status == 200) / len(bodies)
    run.share_stored = sum(1 for a in done if a.outcome == "stored") / len(bodies)
    run.connections_opened = stats["connections"]
    run.closed_by_server = stats["closed_by_server"]
    slowest = sorted((a for a in done if a.seconds is not None), key=lambda a: a.seconds or 0.0)[-5:]
    run.slowest_at_s = [round(a.started - began, 2) for a in reversed(slowest)]
    run.errors_at_s = [round(a.started - began, 2) for a in done if a.status != 200][:20]
    slow = sorted(a.started for a in done if a.seconds is None or a.seconds >= 0.1)
    run.slow_100ms = len(slow)
    run.slow_episodes = sum(1 for i, t in enumerate(slow) if i == 0 or t - slow[i - 1] > 0.1)
    run.redis = redis_delta(before, after)
    if check:
        run.stored_before_resends = redis.xlen(KEYS["stream"])
        resend(run, server.port, bodies, answers, secret)
        run.stored = check_stored(redis, [notice_id for notice_id, _ in bodies])
    if run.sent:
        run.round_trips_per_notification = run.redis["round_trips"] / run.sent
        run.commands_inside_per_notification = run.redis["commands_inside"] / run.sent
        run.total_commands_per_notification = run.redis["total_commands_processed"] / run.sent
        run.server_cpu_ms_per_notification = server_cpu * 1000 / run.sent
        run.redis_cpu_ms_per_notification = run.redis["cpu_seconds"] * 1000 / run.sent
        run.client_cpu_ms_per_notification = client_cpu * 1000 / run.sent
    return run


def resend(
    run: Run, port: int, bodies: Sequence[tuple[str, bytes]], answers: Sequence[Answer | None], secret: str
) -> None:
    """After the measured run (and its Redis snapshot): resend what was not answered 200, the way NCS
    does (same ``noticeId``, a new ``notifyMs`` and so new signatures), up to 3 times, from one
    connection. The exactly-once check then covers every notification, as it would with Agora."""
    pending = [i for i, answer in enumerate(answers) if answer is None or answer.status != 200]
    run.resent = len(pending)
    outcomes: Counter[str] = Counter()
    for attempt in range(3):
        if not pending:
            break
        requests = []
        for i in pending:
            body = json.loads(bodies[i][1])
            body["notifyMs"] = int(time.time() * 1000) + attempt + 1
            requests.append(http_request(port, json.dumps(body, separators=(",", ":")).encode(), secret))
        again, *_ = asyncio.run(_send_all(port, requests, 1, time.perf_counter() + 30))
        outcomes.update(f"attempt {attempt + 2}: {a.status} {a.outcome}" if a else "not sent" for a in again)
        pending = [i for i, a in zip(pending, again, strict=True) if a is None or a.status != 200]
    run.resend_outcomes = dict(outcomes)


# -- in-process probe (a child process with the API server's environment) ------------------------

PROBE = r"""
import json, os, sys, time, uuid
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "benchmarks")]
from _harness import quantile
from airflow_provider_agora._ncs import receiver as _receiver
from airflow_provider_agora._ncs.receiver_connections import Found, connections
from airflow_provider_agora.notifications import namespace_of, parse_notification, sign, verify_signature
secret, bodies = sys.argv[2], json.loads(sys.stdin.read())

def ms(samples):
    return {"median": quantile(samples, 0.5) * 1000, "p99": quantile(samples, 0.99) * 1000,
            "min": min(samples) * 1000, "n": len(samples)}

out = {}
for conn_id in ("agora_default", "agora_in_db"):
    samples = []
    for i in range(25):
        t = time.perf_counter()
        found = connections._read(conn_id)
        samples.append(time.perf_counter() - t)
    out["lookup_" + conn_id] = ms(samples) if isinstance(found, Found) else None
raws = [b.encode() for b in bodies]
headers = [sign(raw, secret) for raw in raws]
found = connections.get("agora_default")  # read once, as the server does at most every 30 s
store, secrets = found.store(namespace_of(secret)), found.secrets
store.add(parse_notification(raws[0]))  # connect, load the script
cached, verify, parse, handle = [], [], [], []
for raw, h in zip(raws[1:], headers[1:]):
    t0 = time.perf_counter(); connections.get("agora_default"); t1 = time.perf_counter()
    assert verify_signature(raw, h, secrets); t2 = time.perf_counter()
    parse_notification(raw); t3 = time.perf_counter()
    cached.append(t1 - t0); verify.append(t2 - t1); parse.append(t3 - t2)
fresh = [json.loads(b) for b in bodies]
adds = []
for body in fresh:
    body["noticeId"] = uuid.uuid4().hex
    body["payload"]["sid"] = uuid.uuid4().hex
    raw = json.dumps(body, separators=(",", ":")).encode()
    t = time.perf_counter()
    reply = _receiver.handle_notification("agora_default", raw, sign(raw, secret))
    handle.append(time.perf_counter() - t)
    assert reply.status == 200 and reply.body["status"] == "stored", reply
    n = parse_notification(raw)
    n2 = json.loads(raw); n2["noticeId"] = uuid.uuid4().hex; n2["payload"]["sid"] = uuid.uuid4().hex
    n2 = parse_notification(json.dumps(n2).encode())
    t = time.perf_counter(); store.add(n2); adds.append(time.perf_counter() - t)
out.update(cached_lookup=ms(cached), verify_signature=ms(verify), parse_notification=ms(parse),
           store_add=ms(adds), handle_notification=ms(handle))
print(json.dumps(out))
"""


def probe(server: AirflowApiServer, bodies: list[tuple[str, bytes]]) -> dict[str, Any]:
    env = dict(server.env)
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"  # the server logs at INFO; here only timings matter
    env["_AIRFLOW_PROCESS_CONTEXT"] = "server"  # as in the API server: env variables, then the metadata DB
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO_ROOT), NCS_SECRET],
        input=json.dumps([raw.decode() for _, raw in bodies]),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=server.home,
    )
    if result.returncode != 0:
        return {"error": result.stderr[-2000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


STALL_DETECTOR = r"""
import sys, time
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    t = time.monotonic()
    time.sleep(0.005)
    late = time.monotonic() - t - 0.005
    if late >= 0.05:
        print(f"{time.time():.3f} {late * 1000:.1f}", flush=True)
"""


class StallDetector:
    """A separate tiny process that sleeps 5 ms at a time and notes every wake-up 50 ms late or more:
    how long a runnable process waits for a core on this (shared) machine. Ends by itself."""

    def __init__(self, seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", STALL_DETECTOR, str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()
        self.stalls: list[tuple[float, float]] = []

    def stop(self) -> list[tuple[float, float]]:
        if self.process.stdout is None or self.process.stdout.closed:
            return self.stalls  # already stopped
        if self.process.poll() is None:
            self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        self.stalls = [(float(a), float(b)) for a, b in (line.split() for line in out.splitlines() if line.strip())]
        return self.stalls


# Dropped into the throw-away AIRFLOW_HOME/plugins (not the repository): the API server loads it with
# the plugins and notes each full (generation 2) garbage collection, and any other one of 20 ms or
# more, with when it ended and how long it took. A gc callback costs about a microsecond.
GC_TRACE_PLUGIN = r"""
import gc, os, time

if not getattr(gc, "_agora_ncs_bench", False):
    gc._agora_ncs_bench = True
    _path = os.path.join(os.environ["AIRFLOW_HOME"], "gc-trace.log")
    _began = [0.0]

    def _trace(phase, info):
        if phase == "start":
            _began[0] = time.perf_counter()
            return
        took = time.perf_counter() - _began[0]
        if info["generation"] == 2 or took >= 0.02:
            with open(_path, "a") as out:
                out.write(f"{time.time():.3f} {info['generation']} {took * 1000:.1f} {info['collected']}\n")

    gc.callbacks.append(_trace)
"""


def read_gc_trace(home: Path) -> list[tuple[float, int, float]]:
    path = home / "gc-trace.log"
    if not path.exists():
        return []
    return [(float(a), int(b), float(c)) for a, b, c, _ in (line.split() for line in path.read_text().splitlines())]


def attach_server_view(
    runs: Sequence[Run],
    log_text: str,
    stalls: Sequence[tuple[float, float]],
    collections: Sequence[tuple[float, int, float]] = (),
) -> None:
    """Per run: Airflow's access-log durations of /agora/ncs requests, and the machine's stalls."""
    import re

    pattern = re.compile(r"^(\S+Z) .*duration_us=(\d+) .*path=/agora/ncs/")
    logged: list[tuple[float, float]] = []
    for line in log_text.splitlines():
        match = pattern.match(line)
        if match:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
            logged.append((stamp.replace(tzinfo=datetime.timezone.utc).timestamp(), int(match.group(2)) / 1000))
    for run in runs:
        mine = [ms for at, ms in logged if run.wall_began <= at <= run.wall_ended + 0.05]
        run.server_logged = len(mine)
        if mine:
            run.server_p50_ms, run.server_p99_ms = h.quantile(mine, 0.5), h.quantile(mine, 0.99)
            run.server_max_ms = max(mine)
        run.machine_stalls = [ms for at, ms in stalls if run.wall_began <= at <= run.wall_ended]
        run.server_gc = [
            (gen, ms, round(at - ms / 1000 - run.wall_began, 2))
            for at, gen, ms in collections
            if run.wall_began <= at <= run.wall_ended
        ]


def server_log_summary(text: str) -> dict[str, Any]:
    """What went wrong in the API server, from its log: answers by status, exceptions, receiver warnings."""
    import re

    statuses = Counter(re.findall(r"path=/agora/ncs/\S+ query=\S* status_code=(\d+)", text))
    exceptions = Counter(
        line.strip()
        for line in text.splitlines()
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b.*", line) and not line.startswith("20")
    )
    return {
        "ncs_answers_by_status": dict(statuses),
        "unhandled_exceptions": sum(1 for line in text.splitlines() if "Exception in ASGI application" in line),
        "exception_lines": dict(exceptions.most_common(6)),
        "could_not_store": sum(1 for line in text.splitlines() if "Could not store" in line),
    }


# -- report -------------------------------------------------------------------------------------


def _best_spread(values: Sequence[float | None], best: str, digits: int = 1) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    chosen = max(present) if best == "max" else min(present)
    if len(present) == 1:
        return f"**{chosen:.{digits}f}**"
    return f"**{chosen:.{digits}f}** ({min(present):.{digits}f}-{max(present):.{digits}f})"


def markdown(meta: dict[str, Any], runs: list[Run], extra_runs: list[Run], probed: dict[str, Any]) -> str:
    lines = [
        f"Date: {meta['date']}. Machine: {meta['cores']} cores, {meta['platform']} (shared with other jobs; "
        f"1-min load average before the runs {meta['loadavg_start']}, after {meta.get('loadavg_end', '-')}). "
        f"Python {meta['python']}, apache-airflow {meta['airflow']}, uvicorn {meta['uvicorn']}, "
        f"redis-py {meta['redis_py']}, {meta['redis_server']}; provider at {meta['commit']}.",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"API server: {meta['server_banner']}; {meta['server_processes']} process(es) in its group, "
        f"{meta.get('server_threads', '-')} threads after the runs. N = {meta['n']} notifications per run "
        f"({meta['uploads']} x eventType 31 with 2-4 files, {meta['progress']} x 33), bodies "
        f"{meta['body_bytes']} bytes; {meta['repeats']} run(s) per client count, round-robin. "
        "Bold: the best run; in brackets: lowest-highest over the runs.",
        "",
        f"Whole invocation: {meta.get('total_seconds', '-')} s. API server's full (generation 2) garbage "
        f"collections: {meta.get('server_gc', {}).get('full_collections', '-')}, median "
        f"{h.fmt(meta.get('server_gc', {}).get('full_ms_median'), 0)} ms, longest "
        f"{h.fmt(meta.get('server_gc', {}).get('full_ms_max'), 0)} ms. Stall detector (a separate process waking every "
        f"5 ms): {meta.get('machine_stalls', {}).get('count', '-')} wake-ups >= 50 ms late, longest "
        f"{h.fmt(meta.get('machine_stalls', {}).get('max_ms'), 0)} ms.",
        "",
        "| Clients | Runs | Notifications/s | p50 ms | p99 ms | max ms | Answered 200 | Stored exactly once "
        "(stream length / distinct noticeIds; non-200s resent as Agora does) | Round trips / notification "
        "| Commands inside Redis / notification | total_commands_processed / notification "
        "| Server CPU ms / notification | Redis CPU ms / notification "
        "| Client CPU ms / notification |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for clients in meta["clients"]:
        mine = [r for r in runs if r.clients == clients]
        if not mine:
            continue
        ok_200 = sum(r.share_200 * r.n for r in mine) / sum(r.n for r in mine)
        once = all(r.stored.get("exactly_once") for r in mine)
        lengths = sorted({(r.stored.get("stream_length"), r.stored.get("distinct_notice_ids")) for r in mine})
        resent = sum(r.resent for r in mine)
        lines.append(
            f"| {clients} | {len(mine)} | {_best_spread([r.per_second for r in mine], 'max', 0)} "
            f"| {_best_spread([r.p50_ms for r in mine], 'min')} | {_best_spread([r.p99_ms for r in mine], 'min')} "
            f"| {_best_spread([r.max_ms for r in mine], 'min')} | {ok_200:.2%} "
            f"| {'yes' if once else 'NO'} ({', '.join(f'{a} / {b}' for a, b in lengths)}"
            f"{f'; {resent} resent' if resent else ''}) "
            f"| {_best_spread([r.round_trips_per_notification for r in mine], 'min', 3)} "
            f"| {_best_spread([r.commands_inside_per_notification for r in mine], 'min', 2)} "
            f"| {_best_spread([r.total_commands_per_notification for r in mine], 'min', 2)} "
            f"| {_best_spread([r.server_cpu_ms_per_notification for r in mine], 'min', 2)} "
            f"| {_best_spread([r.redis_cpu_ms_per_notification for r in mine], 'min', 3)} "
            f"| {_best_spread([r.client_cpu_ms_per_notification for r in mine], 'min', 2)} |"
        )
    lines += [
        "",
        "Per run (in the order run):",
        "",
        "| Run | Clients | Load avg before | s | Notifications/s | p50 ms | p99 ms | max ms | Statuses | Replies "
        "| Stream before resends; after: stream / distinct / sid lists | Resent: answers "
        "| Redis calls (receiver) | Slowest began at s "
        "| Server s at start | Non-200 began at s | Answers >= 100 ms (episodes) "
        "| Server-side p50 / p99 / max ms "
        "| Machine stalls >= 50 ms (max ms) | Client loop lag max ms | Redis connections opened / closed "
        "| Server full GCs: ms (began at s) | Server CPU ms / request |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- | ---: | --- "
        "| ---: | --- | --- | ---: | --- | --- | ---: |",
    ]
    for r in extra_runs + runs:
        stored = r.stored
        lines.append(
            f"| {r.label} | {r.clients} | {r.loadavg_before} | {r.seconds:.1f} | {r.per_second:.0f} "
            f"| {h.fmt(r.p50_ms, 1)} | {h.fmt(r.p99_ms, 1)} | {h.fmt(r.max_ms, 1)} | {r.statuses} | {r.outcomes} "
            f"| {r.stored_before_resends if r.stored_before_resends is not None else '-'}; "
            f"{stored.get('stream_length', '-')} / {stored.get('distinct_notice_ids', '-')} / "
            f"{stored.get('sid_list_entries', '-')} | {r.resent}: {r.resend_outcomes or '-'} | {r.redis.get('calls')} "
            f"| {r.slowest_at_s} | {r.server_began_at_s:.1f} | {r.errors_at_s or '-'} "
            f"| {r.slow_100ms} ({r.slow_episodes}) "
            f"| {h.fmt(r.server_p50_ms, 1)} / {h.fmt(r.server_p99_ms, 1)} / {h.fmt(r.server_max_ms, 1)} "
            f"| {len(r.machine_stalls)} ({h.fmt(max(r.machine_stalls) if r.machine_stalls else None, 0)}) "
            f"| {r.client_loop_lag_max_ms:.1f} "
            f"| {r.redis.get('connections_received')} / {r.redis.get('connections_closed')} "
            f"| {', '.join(f'{ms:.0f} ({began})' for gen, ms, began in r.server_gc if gen == 2) or '-'} "
            f"| {h.fmt(r.server_cpu_ms_per_notification, 2)} |"
        )
    if probed:
        lines += ["", "In-process probe (child process with the server's environment, no HTTP; milliseconds):", ""]
        if "error" in probed:
            lines.append(f"probe failed: {probed['error']}")
        else:
            lines += ["| Step | median | p99 | min | samples |", "| --- | ---: | ---: | ---: | ---: |"]
            names = {
                "lookup_agora_default": "connection lookup, uncached (`connections._read`, connection in an env var)",
                "lookup_agora_in_db": "connection lookup, uncached (connection in the metadata DB, SQLite)",
                "cached_lookup": "cached lookup (`connections.get`, every request)",
                "verify_signature": "`verify_signature` (HMAC-SHA256, 2 secrets configured)",
                "parse_notification": "`parse_notification`",
                "store_add": "`NotificationStore.add` (one EVALSHA round trip)",
                "handle_notification": "`handle_notification` (all of the above, cached lookup)",
            }
            for key, name in names.items():
                value = probed.get(key)
                if value:
                    row = f"{value['median']:.3f} | {value['p99']:.3f} | {value['min']:.3f} | {value['n']}"
                    lines.append(f"| {name} | {row} |")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = h.argument_parser(__doc__)
    parser.add_argument("--n", type=int, default=5000, help="notifications per run (default 5000)")
    parser.add_argument("--clients", default="1,10,20", help="concurrent keep-alive clients, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per client count (default 3)")
    parser.add_argument("--progress-share", type=float, default=0.4, help="share of 33s among the N (default 0.4)")
    parser.add_argument("--warmup", type=int, default=300, help="notifications in the cold-start warm-up")
    parser.add_argument("--floor", type=int, default=1000, help="wrongly signed requests in the floor run (0: none)")
    parser.add_argument("--budget", type=float, default=270.0, help="no run starts after this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep-home", action="store_true", help="keep the throw-away AIRFLOW_HOME (logs, GC trace)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if args.n < 1 or not clients or min(clients) < 1 or args.repeats < 1 or not 0 <= args.progress_share < 1:
        _parser().error("need --n >= 1, --clients >= 1 each, --repeats >= 1, 0 <= --progress-share < 1")
    started = time.monotonic()
    rng = random.Random(args.seed)

    redis_server = RedisServer()
    if not redis_server.available:
        print("redis-server is not installed (Debian's redis-server package)", file=sys.stderr)
        return 2
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        or "?"
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "airflow_provider_agora"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    meta: dict[str, Any] = {
        **h.run_meta(),
        "uvicorn": h.package_version("uvicorn"),
        "redis_py": h.package_version("redis"),
        "redis_server": subprocess.run([redis_server.binary, "--version"], capture_output=True, text=True, check=False)
        .stdout.split(" sha=")[0]
        .strip(),
        "commit": commit + (" (uncommitted changes in airflow_provider_agora/)" if dirty else ""),
        "command": " ".join([".venv/bin/python", *sys.argv]) if argv is None else " ".join(argv),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "n": args.n,
        "clients": clients,
        "repeats": args.repeats,
    }
    runs: list[Run] = []
    extra_runs: list[Run] = []  # the cold start and the floor: shown per run, not in the summary
    probed: dict[str, Any] = {}
    server: AirflowApiServer | None = None
    client = None
    detector: StallDetector | None = None
    stalls: list[tuple[float, float]] = []
    with h.terminate_on_sigterm():
        try:
            detector = StallDetector(args.budget + 240)
            redis_server.start()
            home = _HOME / "server"
            home.mkdir()
            server = AirflowApiServer(home)
            (home / "plugins").mkdir()
            (home / "plugins" / "ncs_bench_gc_trace.py").write_text(GC_TRACE_PLUGIN)
            server.env.update(
                {
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER": "True",
                    f"AIRFLOW_CONN_{CONN_ID.upper()}": connection_json(
                        "http://127.0.0.1:9",
                        ncs_secret=NCS_SECRET,
                        ncs_previous_secret=PREVIOUS_SECRET,
                        redis_conn_id=REDIS_CONN_ID,
                    ),
                    f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}": redis_server.connection_uri(),
                }
            )
            t = time.monotonic()
            server.migrate()
            meta["migrate_seconds"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            server.start()
            meta["boot_seconds"] = round(time.monotonic() - t, 1)
            assert server.process is not None
            banner = [
                line.strip()
                for line in server.log_path.read_text(errors="replace").splitlines()
                if "Workers:" in line or "Running the API server with" in line
            ]
            meta["server_banner"] = ", ".join(dict.fromkeys(banner)) or "no banner found"
            meta["server_processes"] = len(h.group_pids(server.process.pid))
            client = redis_server.client()
            # The same connection in the metadata DB, for the probe's lookup timing only.
            extra = json.loads(connection_json("x"))["extra"]
            extra.update(ncs_secret=NCS_SECRET, redis_conn_id=REDIS_CONN_ID)
            answer = server.request(
                "POST",
                "/api/v2/connections",
                json={
                    "connection_id": DB_CONN_ID,
                    "conn_type": "agora",
                    "host": "http://127.0.0.1:9",
                    "login": CUSTOMER_ID,
                    "password": "x",
                    "extra": json.dumps(extra),
                },
            )
            assert answer.status_code in (200, 201), answer.text

            server_t0 = time.perf_counter()
            # Warm-up on the freshly started server, from as many clients as the largest run.
            warm = make_notifications(args.warmup, args.progress_share, rng)
            extra_runs.append(
                do_run("warm-up (cold server)", server, client, max(clients), warm, NCS_SECRET, 60, server_t0)
            )
            probed = probe(server, make_notifications(300, args.progress_share, rng))
            if args.floor:
                extra_runs.append(
                    do_run(
                        "floor (401)",
                        server,
                        client,
                        1,
                        make_notifications(args.floor, args.progress_share, rng),
                        "not-the-secret",
                        60,
                        server_t0,
                        check=False,
                    )
                )
            sample = make_notifications(args.n, args.progress_share, rng)
            meta["uploads"] = sum(1 for _, raw in sample if b'"eventType":31' in raw)
            meta["progress"] = args.n - meta["uploads"]
            sizes = [len(raw) for _, raw in sample]
            meta["body_bytes"] = f"{min(sizes)}-{max(sizes)} (median {h.median(sizes):.0f})"
            order = [c for _ in range(args.repeats) for c in clients]
            for number, count in enumerate(order, 1):
                elapsed = time.monotonic() - started
                if elapsed > args.budget:
                    print(
                        f"budget of {args.budget:.0f} s reached after {elapsed:.0f} s: "
                        f"{len(order) - number + 1} run(s) skipped",
                        file=sys.stderr,
                    )
                    break
                bodies = sample if number == 1 else make_notifications(args.n, args.progress_share, rng)
                run = do_run(f"{number}", server, client, count, bodies, NCS_SECRET, 120, server_t0)
                runs.append(run)
                print(
                    f"run {number}: {count} client(s): {run.per_second:.0f}/s, p50 {h.fmt(run.p50_ms, 1)} ms, "
                    f"p99 {h.fmt(run.p99_ms, 1)} ms, max {h.fmt(run.max_ms, 1)} ms, {run.statuses}, "
                    f"stored once: {run.stored.get('exactly_once')}, round trips/notification "
                    f"{h.fmt(run.round_trips_per_notification, 3)}, load {run.loadavg_before}",
                    file=sys.stderr,
                )
            meta["server_threads"] = h.thread_count(server.process.pid)
            meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            log_text = server.log_path.read_text(errors="replace")
            meta["server_log"] = server_log_summary(log_text)
            stalls = detector.stop()
            collections = read_gc_trace(home)
            attach_server_view(extra_runs + runs, log_text, stalls, collections)
            meta["server_gc"] = {
                "full_collections": sum(1 for _, gen, _ in collections if gen == 2),
                "full_ms_max": max((ms for _, gen, ms in collections if gen == 2), default=None),
                "full_ms_median": h.median([ms for _, gen, ms in collections if gen == 2] or [0.0]),
            }
            meta["machine_stalls"] = {"count": len(stalls), "max_ms": max((ms for _, ms in stalls), default=0.0)}
        finally:
            if client is not None:
                client.close()
            if server is not None:
                server.stop()
            redis_server.stop()
            if detector is not None:
                detector.stop()
            if args.keep_home:
                print(f"AIRFLOW_HOME kept: {_HOME}", file=sys.stderr)
            else:
                shutil.rmtree(_HOME, ignore_errors=True)
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    print(markdown(meta, runs, extra_runs, probed))
    print(
        f"\nWhole run: {meta['total_seconds']} s (db migrate {meta.get('migrate_seconds')} s, "
        f"API server boot {meta.get('boot_seconds')} s). API server log: {meta.get('server_log')}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "extra_runs": [asdict(r) for r in extra_runs],
                    "runs": [asdict(r) for r in runs],
                    "probe": probed,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
