"""The notification receiver attacked the way a stranger on the internet can: a real Airflow 3.3
API server with the receiver enabled, a real ``redis-server``, requests sent over real sockets.

What is asserted is what an operator would check: the answers, what is written in Redis, the
server's log, and what the serving process reports about itself through a test-only plugin
(``receiver_probe/``): reads of the ``connection`` table counted by an SQLAlchemy event
listener, its resident memory, and whether the receiver's code was imported at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

try:
    from airflow.sdk import BaseHook  # noqa: F401  (Airflow 3)
except ImportError:
    pytest.skip("the receiver is an Airflow 3 API-server plugin", allow_module_level=True)

from airflow_provider_agora._ncs.receiver_connections import LOOKUP_BURST, LOOKUPS_PER_SECOND
from airflow_provider_agora._ncs.store import notification_keys
from airflow_provider_agora.notifications import namespace_of, sign
from tests.integration.ui_helpers import AirflowApiServer
from tests.support import CUSTOMER_ID, RedisServer, connection_json

SECRET_A = "ncs-project-a-Wd3k"
SECRET_B = "ncs-project-b-Tz9x"
KEYS_A = notification_keys(CUSTOMER_ID, namespace_of(SECRET_A))
KEYS_B = notification_keys(CUSTOMER_ID, namespace_of(SECRET_B))
PROBE = Path(__file__).parent / "receiver_probe" / "agora_receiver_probe.py"
REFUSED = (401, {"status": "error", "message": "Missing or wrong Agora-Signature-V2."})
FILES_A = [
    {
        "fileName": "project-a/rec.m3u8",
        "trackType": "audio_and_video",
        "uid": "0",
        "mixedAllUser": True,
        "isPlayable": True,
        "sliceStartTime": 1619172632080,
    }
]
FILES_FORGED = [{**FILES_A[0], "fileName": "attacker/evil.mp4"}]


def envelope(event_type: int, details: dict[str, Any], *, sid: str, **overrides: Any) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    body: dict[str, Any] = {
        "noticeId": uuid.uuid4().hex,
        "productId": 3,
        "eventType": event_type,
        "notifyMs": now_ms,
        "payload": {
            "cname": "room1",
            "uid": "527841",
            "sid": sid,
            "sequence": 3,
            "sendts": now_ms - 50,
            "serviceType": 2,
            "details": details,
        },
    }
    body.update(overrides)
    return body


def uploaded(sid: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return envelope(31, {"msgName": "uploaded", "status": 0, "fileList": files}, sid=sid)


def started_server(home: Path, redis_server: RedisServer, *, enabled: bool) -> AirflowApiServer:
    (home / "plugins").mkdir(parents=True, exist_ok=True)
    shutil.copy(PROBE, home / "plugins" / PROBE.name)
    server = AirflowApiServer(home)
    server.env.update(
        {
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW_CONN_AGORA_DEFAULT": connection_json(
                "http://127.0.0.1:9", ncs_secret=SECRET_A, redis_conn_id="agora_ncs_redis"
            ),
            "AIRFLOW_CONN_AGORA_PROJECT_B": connection_json(
                "http://127.0.0.1:9", ncs_secret=SECRET_B, redis_conn_id="agora_ncs_redis"
            ),
            "AIRFLOW_CONN_AGORA_NCS_REDIS": redis_server.connection_uri(),
            "AIRFLOW_CONN_AGORA_NO_SECRET": connection_json("http://127.0.0.1:9", redis_conn_id="agora_ncs_redis"),
            "AIRFLOW_CONN_AGORA_NO_REDIS": connection_json("http://127.0.0.1:9", ncs_secret=SECRET_A),
            "AIRFLOW_CONN_AGORA_MISSING_REDIS": connection_json(
                "http://127.0.0.1:9", ncs_secret=SECRET_A, redis_conn_id="no_such_redis"
            ),
            "AIRFLOW_CONN_SOME_DATABASE": "postgresql://user:pw@db.example.com:5432/warehouse",
        }
    )
    if enabled:
        server.env["AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER"] = "True"
    server.migrate()
    server.start()
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[AirflowApiServer]:
    started = started_server(tmp_path_factory.mktemp("airflow-receiver-attacks"), redis_server, enabled=True)
    yield started
    started.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Any]:
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()


def post(
    server: AirflowApiServer,
    body: dict[str, Any] | bytes,
    *,
    conn_id: str = "agora_default",
    secret: str | None = SECRET_A,
    path_suffix: str = "",
) -> requests.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(sign(raw, secret) if secret else {})}
    return requests.post(f"{server.url}/agora/ncs/{conn_id}{path_suffix}", data=raw, headers=headers, timeout=60)


def probe(server: AirflowApiServer) -> dict[str, Any]:
    answer = requests.get(f"{server.url}/agora-receiver-probe/state", timeout=30)
    answer.raise_for_status()
    return answer.json()


def stream(redis: Any, keys: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(fields["notification"]) for _, fields in redis.xrange(keys["stream"])]


def log_lines(server: AirflowApiServer, text: str) -> list[str]:
    return [line for line in server.log_path.read_text(errors="replace").splitlines() if text in line]


# -- off unless enabled --------------------------------------------------------------------------


def test_without_the_option_the_route_does_not_exist_and_the_receiver_is_not_imported(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    disabled = started_server(tmp_path / "home", redis_server, enabled=False)
    try:
        answer = post(disabled, uploaded("a" * 32, FILES_A))
        unmapped = requests.post(f"{disabled.url}/no-such-plugin/ncs/agora_default", data=b"{}", timeout=60)
        # Airflow's own answer to a path nobody mounted: on 3.3 a 405, because its UI serves every GET.
        assert (answer.status_code, answer.json()) == (unmapped.status_code, unmapped.json())
        assert answer.status_code == 405
        assert probe(disabled)["receiver_imported"] is False
    finally:
        disabled.stop()


# -- strangers learn nothing ---------------------------------------------------------------------


def test_every_unverified_request_gets_the_same_answer_and_the_log_tells_them_apart(
    server: AirflowApiServer, redis: Any
) -> None:
    body = uploaded("b" * 32, FILES_A)
    attempts = {
        "unknown id": post(server, body, conn_id="no_such_connection"),
        "not an Agora connection": post(server, body, conn_id="some_database"),
        "no ncs_secret": post(server, body, conn_id="agora_no_secret"),
        "no redis_conn_id, unsigned": post(server, body, conn_id="agora_no_redis", secret=None),
        "missing Redis connection, wrong secret": post(server, body, conn_id="agora_missing_redis", secret="guess"),
        "invalid id": post(server, body, conn_id="bad%20id"),
        "id over 250 characters": post(server, body, conn_id="a" * 251),
        "wrong signature": post(server, body, secret="someone-elses-secret"),
        "no signature": post(server, body, secret=None),
    }
    answers = {name: (answer.status_code, answer.json()) for name, answer in attempts.items()}
    assert answers == dict.fromkeys(attempts, REFUSED)
    assert len({answer.content for answer in attempts.values()}) == 1  # byte for byte
    assert redis.keys("*") == []
    assert log_lines(server, "no connection has this id")
    assert log_lines(server, "has no ncs_secret")
    assert log_lines(server, "'agora_default': missing or wrong signature")
    assert log_lines(server, "is not valid")


def test_after_the_signature_check_a_missing_redis_is_named(server: AirflowApiServer, redis: Any) -> None:
    no_redis = post(server, uploaded("c" * 32, FILES_A), conn_id="agora_no_redis")
    missing = post(server, uploaded("c" * 32, FILES_A), conn_id="agora_missing_redis")
    assert no_redis.status_code == 503 and "has no redis_conn_id" in no_redis.json()["message"]
    assert missing.status_code == 503 and "'no_such_redis', which does not exist" in missing.json()["message"]
    assert log_lines(server, "Cannot store notifications for connection 'agora_missing_redis'")
    assert redis.keys("*") == []


def test_a_case_variant_of_a_connection_id_is_not_that_connection(server: AirflowApiServer, redis: Any) -> None:
    before = probe(server)["connection_reads"]
    answer = post(server, uploaded("d" * 32, FILES_A), conn_id="AgORA_dEfAUlT")  # signed with agora_default's secret
    assert (answer.status_code, answer.json()) == REFUSED
    assert redis.keys("*") == []
    assert log_lines(server, "whose id is 'agora_default'")
    assert probe(server)["connection_reads"] == before


def test_a_flood_of_made_up_ids_costs_bounded_lookups_and_memory(server: AirflowApiServer, redis: Any) -> None:
    def flood(conn_ids: list[str]) -> list[int]:
        with requests.Session() as session:
            return [
                session.post(f"{server.url}/agora/ncs/{conn_id}", data=b"{}", timeout=60).status_code
                for conn_id in conn_ids
            ]

    def in_parallel(conn_ids: list[str]) -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            return [status for chunk in pool.map(flood, [conn_ids[i::4] for i in range(4)]) for status in chunk]

    assert set(in_parallel([uuid.uuid4().hex for _ in range(500)])) == {401}  # warm-up: caches and allocators
    start = probe(server)
    began = time.monotonic()
    short = in_parallel([uuid.uuid4().hex for _ in range(20_000)])
    long = in_parallel([uuid.uuid4().hex * 1875 for _ in range(2_000)])  # 60,000 characters each
    elapsed = time.monotonic() - began
    end = probe(server)

    assert set(short) == set(long) == {401}
    reads = end["connection_reads"] - start["connection_reads"]
    # Made-up ids are looked up in the metadata database, within the lookup budget's own bound over
    # the flood's duration, whatever the machine's speed.
    assert 0 < reads <= LOOKUP_BURST + LOOKUPS_PER_SECOND * elapsed
    assert (end["rss_kib"] - start["rss_kib"]) < 8 * 1024
    assert redis.keys("*") == []


# -- one project cannot speak for another --------------------------------------------------------


def test_a_notification_signed_with_another_projects_secret_never_reaches_this_projects_readers(
    server: AirflowApiServer, redis: Any, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AGORA_DEFAULT", "AGORA_PROJECT_B", "AGORA_NCS_REDIS"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", server.env[f"AIRFLOW_CONN_{name}"])
    from airflow_provider_agora.hooks.agora import AgoraHook
    from airflow_provider_agora.triggers.notifications import AgoraRecordingNotificationTrigger

    sid = uuid.uuid4().hex

    async def first_watcher_event() -> dict[str, Any]:
        trigger = AgoraRecordingNotificationTrigger(agora_conn_id="agora_default")
        events = trigger.run().__aiter__()
        waiting = asyncio.ensure_future(events.__anext__())
        deadline = time.monotonic() + 30
        while not redis.exists(KEYS_A["stream"]) or not redis.xinfo_groups(KEYS_A["stream"]):
            assert time.monotonic() < deadline, "the watcher never created its consumer group"
            await asyncio.sleep(0.05)  # polling Redis for the watcher's group, with a deadline
        forged = post(server, uploaded(sid, FILES_FORGED), conn_id="agora_project_b", secret=SECRET_B)
        genuine = post(server, uploaded(sid, FILES_A))
        assert [forged.json()["status"], genuine.json()["status"]] == ["stored", "stored"]
        event = await asyncio.wait_for(waiting, timeout=60)
        await events.aclose()
        return dict(event.payload)

    event = asyncio.run(first_watcher_event())
    assert [f["fileName"] for f in event["files"]] == ["project-a/rec.m3u8"]
    assert [n.files[0]["fileName"] for n in AgoraHook("agora_default").notifications(sid)] == ["project-a/rec.m3u8"]
    assert [n.files[0]["fileName"] for n in AgoraHook("agora_project_b").notifications(sid)] == ["attacker/evil.mp4"]
    assert [n["files"][0]["fileName"] for n in stream(redis, KEYS_A)] == ["project-a/rec.m3u8"]


# -- signed but pathological bodies --------------------------------------------------------------


def signed_raw(server: AirflowApiServer, raw: bytes) -> requests.Response:
    return post(server, raw)


@pytest.mark.parametrize("depth", [494, 5_000])
def test_deeply_nested_details_are_ignored_not_stored(server: AirflowApiServer, redis: Any, depth: int) -> None:
    body = json.dumps(uploaded("e" * 32, FILES_A)).encode()
    raw = body.replace(b'"msgName"', b'"deep": ' + b"[" * depth + b"]" * depth + b', "msgName"', 1)
    answer = signed_raw(server, raw)
    assert (answer.status_code, answer.json()["status"]) == (200, "ignored")
    assert redis.keys("*") == []


def test_a_four_hundred_digit_notify_ms_is_ignored_not_a_500(server: AirflowApiServer, redis: Any) -> None:
    raw = json.dumps(uploaded("f" * 32, FILES_A)).encode()
    raw = raw.replace(b'"notifyMs": ', b'"notifyMs": ' + b"9" * 400 + b', "was": ', 1)
    answer = signed_raw(server, raw)
    assert (answer.status_code, answer.json()["status"]) == (200, "ignored")
    assert redis.keys("*") == []


def test_a_future_dated_notification_is_refused(server: AirflowApiServer, redis: Any) -> None:
    body = uploaded("0" * 32, FILES_A)
    body["notifyMs"] += 3600 * 1000
    answer = post(server, body)
    assert (answer.status_code, answer.json()["message"]) == (400, "notifyMs is in the future.")
    assert redis.keys("*") == []


def test_a_large_valid_notification_is_stored_once_with_one_copy_of_its_files(
    server: AirflowApiServer, redis: Any
) -> None:
    files = [{**FILES_A[0], "fileName": f"project-a/rec_{n:05d}.mp4"} for n in range(5_000)]
    raw = json.dumps(uploaded("1" * 32, files)).encode()
    assert 700_000 < len(raw) < (1 << 20)
    answer = post(server, raw)
    assert (answer.status_code, answer.json()["status"]) == (200, "stored")
    ((_, fields),) = redis.xrange(KEYS_A["stream"])
    stored = json.loads(fields["notification"])
    assert [f["fileName"] for f in stored["files"]] == [f["fileName"] for f in files]
    assert len(fields["notification"]) < 1.2 * len(raw)


# -- slow and oversized clients ------------------------------------------------------------------


def raw_request(server: AirflowApiServer, head: str) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    connection.sendall(head.encode())
    return connection


def read_all(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_a_declared_oversized_body_is_refused_and_the_connection_closed(server: AirflowApiServer) -> None:
    connection = raw_request(
        server,
        "POST /agora/ncs/agora_default HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {50 << 20}\r\n\r\n",
    )
    with connection:
        answer = read_all(connection)  # returns only because the server closes the connection
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_chunked_body_over_the_cap_is_refused_without_reading_the_rest(server: AirflowApiServer) -> None:
    connection = raw_request(
        server,
        "POST /agora/ncs/agora_default HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    )
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    sent = 0

    def send_until_refused() -> None:
        nonlocal sent
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < (50 << 20):
                connection.sendall(chunk)
                sent += len(chunk)

    with connection, concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        sending = pool.submit(send_until_refused)
        first = connection.recv(65536)  # read while the client still sends, as a real client would
        sending.result(timeout=120)
    assert first.startswith(b"HTTP/1.1 413")
    assert sent < (50 << 20)  # the server stopped reading long before the 50 MiB were sent


def test_a_body_that_never_arrives_is_cut_off(server: AirflowApiServer) -> None:
    connection = raw_request(
        server,
        "POST /agora/ncs/agora_default HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000\r\n\r\n{"noticeId"',
    )
    with connection:
        answer = read_all(connection)  # the server answers and closes after its read deadline
    assert answer.startswith(b"HTTP/1.1 408")


def test_the_url_with_a_trailing_slash_is_answered_directly(server: AirflowApiServer, redis: Any) -> None:
    answer = post(server, uploaded("2" * 32, FILES_A), path_suffix="/")
    assert (answer.status_code, answer.json()["status"]) == (200, "stored")
    assert len(stream(redis, KEYS_A)) == 1
