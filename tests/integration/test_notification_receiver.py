"""The notification receiver in a real Airflow 3.3 API server, storing into a real ``redis-server``.

Notifications are posted the way Agora's NCS posts them: signed JSON over HTTP, with retries and
duplicates, to ``/agora/ncs/<conn_id>``. What is asserted is what an operator would check: the
HTTP answer, and what is (or is not) in Redis afterwards.
"""

from __future__ import annotations

import concurrent.futures
import json
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
    pytest.skip(
        "the receiver is an Airflow 3 API-server plugin; Airflow 2 has no FastAPI apps", allow_module_level=True
    )

from airflow_provider_agora._ncs.store import notification_keys
from airflow_provider_agora.notifications import namespace_of, sign
from airflow_provider_agora.simulator import AgoraSimulator
from tests.integration.ui_helpers import AirflowApiServer
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, RedisServer, connection_json

NCS_SECRET = "ncs-secret-Vb7q2"
PREVIOUS_SECRET = "ncs-old-secret-Kp4m"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
KEYS = notification_keys(CUSTOMER_ID, namespace_of(NCS_SECRET))
PREVIOUS_KEYS = notification_keys(CUSTOMER_ID, namespace_of(PREVIOUS_SECRET))
FILES_31 = [
    {
        "fileName": "rec/x.m3u8",
        "trackType": "audio_and_video",
        "uid": "0",
        "mixedAllUser": True,
        "isPlayable": True,
        "sliceStartTime": 1619172632080,
    },
    {
        "fileName": "rec/x_0.mp4",
        "trackType": "audio_and_video",
        "uid": "0",
        "mixedAllUser": True,
        "isPlayable": True,
        "sliceStartTime": 1619172632080,
    },
]


def envelope(
    event_type: int, details: dict[str, Any], *, sid: str = SID, product_id: int = 3, **overrides: Any
) -> dict:
    body: dict[str, Any] = {
        "noticeId": uuid.uuid4().hex,
        "productId": product_id,
        "eventType": event_type,
        "notifyMs": int(time.time() * 1000),
        "payload": {
            "cname": "room1",
            "uid": "527841",
            "sid": sid,
            "sequence": 3,
            "sendts": int(time.time() * 1000) - 50,
            "serviceType": 2,
            "details": details,
        },
    }
    body.update(overrides)
    return body


UPLOADED = {"msgName": "uploaded", "status": 0, "fileList": FILES_31}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[AirflowApiServer]:
    home: Path = tmp_path_factory.mktemp("airflow-ncs")
    server = AirflowApiServer(home)
    server.env.update(
        {
            "AIRFLOW_CONN_AGORA_DEFAULT": connection_json(
                "http://127.0.0.1:9",
                ncs_secret=NCS_SECRET,
                ncs_previous_secret=PREVIOUS_SECRET,
                redis_conn_id="agora_ncs_redis",
            ),
            "AIRFLOW_CONN_AGORA_NCS_REDIS": redis_server.connection_uri(),
            "AIRFLOW_CONN_AGORA_NO_REDIS": connection_json("http://127.0.0.1:9", ncs_secret=NCS_SECRET),
            "AIRFLOW_CONN_AGORA_NO_SECRET": connection_json("http://127.0.0.1:9", redis_conn_id="agora_ncs_redis"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
            "AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER": "True",
        }
    )
    server.migrate()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Any:
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()


def post(
    server: AirflowApiServer,
    body: dict | bytes,
    *,
    conn_id: str = "agora_default",
    secret: str | None = NCS_SECRET,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = sign(raw, secret) if secret is not None else {}
    return requests.post(
        f"{server.url}/agora/ncs/{conn_id}",
        data=raw,
        headers={"Content-Type": "application/json", **signed, **(headers or {})},
        timeout=30,
    )


def stored(redis: Any) -> list[dict[str, Any]]:
    return [json.loads(fields["notification"]) for _, fields in redis.xrange(KEYS["stream"])]


def test_a_signed_notification_is_stored_once_normalised(api_server: AirflowApiServer, redis: Any) -> None:
    body = envelope(31, UPLOADED)
    answer = post(api_server, body)  # its time is measured in benchmarks/notification_receiver.py
    assert (answer.status_code, answer.json()["status"]) == (200, "stored")
    (notification,) = stored(redis)
    assert (notification["notice_id"], notification["sid"], notification["event_type"]) == (body["noticeId"], SID, 31)
    assert notification["files"] == FILES_31
    assert [json.loads(item)["notice_id"] for item in redis.lrange(KEYS["sid"] + SID, 0, -1)] == [body["noticeId"]]

    again = post(api_server, body)  # Agora's retry of the same notification
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    resent = post(api_server, {**body, "noticeId": uuid.uuid4().hex})  # the same event once more after a fail-over
    assert (resent.status_code, resent.json()["status"]) == (200, "duplicate")
    assert len(stored(redis)) == 1


def test_forged_and_unsigned_notifications_are_refused_and_write_nothing(
    api_server: AirflowApiServer, redis: Any
) -> None:
    body = envelope(31, UPLOADED)
    assert post(api_server, body, secret="someone-elses-secret").status_code == 401
    assert post(api_server, body, secret=None).status_code == 401
    raw = json.dumps(body).encode()
    tampered = raw.replace(b"x_0.mp4", b"y_0.mp4")
    answer = requests.post(
        f"{api_server.url}/agora/ncs/agora_default", data=tampered, headers=sign(raw, NCS_SECRET), timeout=30
    )
    assert answer.status_code == 401
    assert redis.keys("*") == []


def test_the_previous_secret_is_accepted_during_a_rotation(api_server: AirflowApiServer, redis: Any) -> None:
    answer = post(api_server, envelope(40, {"msgName": "recorder_started", "status": 0}), secret=PREVIOUS_SECRET)
    assert (answer.status_code, answer.json()["status"]) == (200, "stored")
    assert [fields["sid"] for _, fields in redis.xrange(PREVIOUS_KEYS["stream"])] == [SID]  # where it was verified


def test_a_body_over_one_mebibyte_is_refused(api_server: AirflowApiServer, redis: Any) -> None:
    body = envelope(31, {**UPLOADED, "padding": "x" * (1 << 20)})
    assert post(api_server, body).status_code == 413
    assert redis.keys("*") == []


def test_a_replay_past_the_deduplication_window_is_refused(api_server: AirflowApiServer, redis: Any) -> None:
    day_and_an_hour_ago = int((time.time() - 25 * 3600) * 1000)
    assert post(api_server, envelope(31, UPLOADED, notifyMs=day_and_an_hour_ago)).status_code == 400
    assert redis.keys("*") == []


def test_other_products_and_health_checks_are_answered_and_ignored(api_server: AirflowApiServer, redis: Any) -> None:
    rtc = post(api_server, envelope(101, {}, product_id=1))
    assert (rtc.status_code, rtc.json()["status"]) == (200, "ignored")
    check = envelope(31, UPLOADED)
    check["payload"]["cname"] = "test_webhook"
    health = post(api_server, check)
    assert (health.status_code, health.json()["status"]) == (200, "ignored")
    assert redis.keys("*") == []


def test_misconfigured_connections_say_what_to_configure_only_to_a_signed_caller(
    api_server: AirflowApiServer, redis: Any
) -> None:
    body = envelope(31, UPLOADED)
    refused = (401, {"status": "error", "message": "Missing or wrong Agora-Signature-V2."})
    unknown = post(api_server, body, conn_id="no_such_connection")
    no_secret = post(api_server, body, conn_id="agora_no_secret")
    assert [(answer.status_code, answer.json()) for answer in (unknown, no_secret)] == [refused, refused]
    no_redis = post(api_server, body, conn_id="agora_no_redis")
    assert no_redis.status_code == 503 and "has no redis_conn_id" in no_redis.json()["message"]
    assert redis.keys("*") == []


def test_two_thousand_notifications_from_twenty_clients_are_stored_exactly_once(
    api_server: AirflowApiServer, redis: Any
) -> None:
    bodies = [envelope(33, {"msgName": "uploading_progress", "progress": n}, sid=f"{n:032x}") for n in range(2000)]

    def send(chunk: list[dict]) -> list[int]:
        with requests.Session() as session:
            statuses = []
            for body in chunk:
                raw = json.dumps(body).encode()
                answer = session.post(
                    f"{api_server.url}/agora/ncs/agora_default",
                    data=raw,
                    headers={"Content-Type": "application/json", **sign(raw, NCS_SECRET)},
                    timeout=60,
                )
                statuses.append(answer.status_code)
            return statuses

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = [status for chunk in pool.map(send, [bodies[i::20] for i in range(20)]) for status in chunk]
    assert statuses == [200] * 2000
    notice_ids = [notification["notice_id"] for notification in stored(redis)]
    assert sorted(notice_ids) == sorted(body["noticeId"] for body in bodies)


def test_no_secret_or_signature_reaches_the_api_servers_log(api_server: AirflowApiServer, redis: Any) -> None:
    body = envelope(31, UPLOADED)
    raw = json.dumps(body).encode()
    signatures = sign(raw, NCS_SECRET)
    post(api_server, body)
    post(api_server, body, secret="someone-elses-secret")
    log = api_server.log_path.read_text(errors="replace")
    assert body["noticeId"] in log  # the receiver does log what it stored
    for secret in (NCS_SECRET, PREVIOUS_SECRET, CUSTOMER_SECRET, RedisServer.PASSWORD, *signatures.values()):
        assert secret not in log


def test_a_simulator_recordings_notifications_are_stored_once_each(api_server: AirflowApiServer, redis: Any) -> None:
    with AgoraSimulator(
        customer_id=CUSTOMER_ID,
        customer_secret=CUSTOMER_SECRET,
        app_ids=(APP_ID,),
        speed=10.0,
        notify_url=f"{api_server.url}/agora/ncs/agora_default",
        notify_secret=NCS_SECRET,
    ).start() as simulator:
        session = requests.Session()
        session.auth = (CUSTOMER_ID, CUSTOMER_SECRET)
        base = f"{simulator.url}/v1/apps/{APP_ID}/cloud_recording"
        resource_id = session.post(
            f"{base}/acquire", json={"cname": "room1", "uid": "527841", "clientRequest": {}}
        ).json()["resourceId"]
        sid = session.post(
            f"{base}/resourceid/{resource_id}/mode/mix/start",
            json={
                "cname": "room1",
                "uid": "527841",
                "clientRequest": {"recordingFileConfig": {"avFileType": ["hls", "mp4"]}},
            },
        ).json()["sid"]
        deadline = time.monotonic() + 30
        while (
            session.get(f"{base}/resourceid/{resource_id}/sid/{sid}/mode/mix/query")
            .json()
            .get("serverResponse", {})
            .get("status")
            != 5
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling the simulator, with a deadline
        stopped = session.post(
            f"{base}/resourceid/{resource_id}/sid/{sid}/mode/mix/stop",
            json={"cname": "room1", "uid": "527841", "clientRequest": {}},
        ).json()
        while len({n["event_type"] for n in stored(redis)} & {11, 31}) < 2:
            assert time.monotonic() < deadline, stored(redis)
            time.sleep(0.05)
    events = [notification["event_type"] for notification in stored(redis)]
    assert sorted(events) == sorted(set(events))  # each once
    assert {40, 30, 31, 11} <= set(events)
    (uploaded,) = [n for n in stored(redis) if n["event_type"] == 31]
    assert [f["fileName"] for f in uploaded["files"]] == [f["fileName"] for f in stopped["serverResponse"]["fileList"]]
