"""Fixtures of the unit tests: one real ``redis-server`` per test session, and notifications to store in it.

With pytest-xdist each worker is a session of its own, so each worker starts one server (on a free
loopback port). Tests that use it skip, saying why, where Debian's ``redis-server`` is not installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_agora._ncs.store import NotificationStore, notification_keys
from airflow_provider_agora._redis import RedisSettings
from airflow_provider_agora.notifications import Notification, namespace_of, parse_notification
from tests.support import CUSTOMER_ID, RedisServer, connection_json, running_redis

NCS_SECRET = "ncs-unit-secret-Kp4d"  # the connection's current secret (project A)
PREVIOUS_SECRET = "ncs-unit-old-secret-Tz6b"  # its previous one, during a rotation
OTHER_PROJECT_SECRET = "ncs-unit-other-project-Jr8m"  # another Agora project's secret (project B)
REDIS_CONN_ID = "agora_ncs_redis"
FILES = [
    {
        "fileName": "sid_room.m3u8",
        "trackType": "audio_and_video",
        "uid": "0",
        "mixedAllUser": True,
        "isPlayable": True,
        "sliceStartTime": 1619172632080,
    }
]
_MESSAGES = {11: "session_exit", 31: "uploaded", 32: "backuped", 40: "recorder_started"}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port for the whole session (one per xdist worker)."""
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_db(redis_server: RedisServer) -> RedisServer:
    """The session's ``redis-server`` with an empty database: a test sees only what it stored."""
    client = redis_server.client()
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server


class Ncs:
    """Agora notifications as the receiver would store them in the test's Redis, and connections
    (``AIRFLOW_CONN_*``) whose secrets decide which of them a reader may see."""

    def __init__(self, server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server = server
        self.redis = RedisSettings(
            conn_id=REDIS_CONN_ID, host="127.0.0.1", port=server.port, db=0, ssl=False, password=server.PASSWORD
        )
        self.client: Any = server.client()
        self._monkeypatch = monkeypatch
        self._stores: list[NotificationStore] = []
        self._sequence = 0

    def connect(self, *secrets: str, conn_id: str = "agora_default", **extra: Any) -> None:
        """``conn_id`` as an Airflow connection with these NCS secrets, and its Redis connection."""
        named = dict(zip(("ncs_secret", "ncs_previous_secret"), secrets, strict=False))
        self._monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", connection_json("", redis_conn_id=REDIS_CONN_ID, **named, **extra)
        )
        self._monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}", self.server.connection_uri())

    def store(self, secret: str, **bounds: int) -> NotificationStore:
        """The store the receiver uses for notifications verified with ``secret``."""
        store = NotificationStore(self.redis, CUSTOMER_ID, namespace_of(secret), **bounds)
        self._stores.append(store)
        return store

    def keys(self, secret: str) -> dict[str, str]:
        return notification_keys(CUSTOMER_ID, namespace_of(secret))

    def notification(
        self,
        sid: str | None,
        event_type: int = 31,
        *,
        notice_id: str | None = None,
        cname: str = "room1",
        files: list[dict[str, Any]] | None = None,
    ) -> Notification:
        """A cloud-recording notification as ``parse_notification`` makes it from Agora's body; each
        call has its own ``noticeId`` and a later ``notifyMs`` unless told otherwise."""
        self._sequence += 1
        details: dict[str, Any] = {"msgName": _MESSAGES.get(event_type, "event"), "status": 0}
        if event_type in (31, 32):
            details["fileList"] = FILES if files is None else files
        if event_type == 11:
            details = {"msgName": "session_exit", "exitStatus": 0}
        payload: dict[str, Any] = {"cname": cname, "uid": "527841", "sequence": self._sequence, "details": details}
        if sid is not None:
            payload["sid"] = sid
        body = {
            "noticeId": notice_id or f"notice-{self._sequence:04d}",
            "productId": 3,
            "eventType": event_type,
            "notifyMs": 1_700_000_000_000 + self._sequence,
            "payload": payload,
        }
        return parse_notification(json.dumps(body).encode())

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self.client.close()


@pytest.fixture
def ncs(redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ncs]:
    """Notifications in an empty Redis, and connections to read them with."""
    bench = Ncs(redis_db, monkeypatch)
    yield bench
    bench.close()
