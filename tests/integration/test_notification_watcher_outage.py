"""The asset watcher rides out a minute without Redis, as the sensors do.

The real trigger's ``run()`` runs in-process against a real ``redis-server`` that the test stops
for a minute (the issue's figure) and starts again on the same port, empty as a Redis without
persistence comes back. The watcher must neither crash nor log more than one warning while Redis
is down, say once that it answers again, re-create its consumer group, and fire exactly once for
a recording that ends after the recovery. (A recording that ended while Redis was down could not
be stored by the receiver at all: finding it is a backstop query's job, not the watcher's.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

import pytest

try:
    from airflow.triggers.base import BaseEventTrigger  # noqa: F401  (Airflow 3)
except ImportError:
    pytest.skip("asset watchers (BaseEventTrigger) need Airflow 3", allow_module_level=True)

from airflow_provider_agora._ncs.store import NotificationStore, notification_keys
from airflow_provider_agora._redis import RedisSettings
from airflow_provider_agora.notifications import Notification, namespace_of, parse_notification
from airflow_provider_agora.triggers import notifications as watcher_module
from airflow_provider_agora.triggers.notifications import DEFAULT_CONSUMER_GROUP, AgoraRecordingNotificationTrigger
from tests.support import CUSTOMER_ID, LogSignal, connection_json, running_redis

OUTAGE_SECONDS = 60.0  # how long Redis stays down: the duration under test, not a synchronisation
NCS_SECRET = "ncs-outage-secret-Hd5n"
REDIS_CONN_ID = "agora_ncs_redis"
SID_BEFORE = "1f0e9d8c7b6a59483726150f1e2d3c4b"
SID_AFTER = "38f8e3cfdc474cd56fc1ceba380d7e1a"
SID_LATER = "7c1f0c2a9e6b4d3f8a5e2b1c0d9f8e7a"
TIMEOUT = 60.0  # a safety net: the back-off reaches 30 s between two tries during the outage
WARNING = "Cannot read Agora's notifications from Redis"
RECOVERY = "Redis answers again"


def uploaded(sid: str, event_type: int, number: int) -> Notification:
    """Agora's "uploaded" (31) or "backuped" (32) notification of a recording, with its file."""
    body = {
        "noticeId": f"outage-notice-{number}",
        "productId": 3,
        "eventType": event_type,
        "notifyMs": 1_700_000_000_000 + number,
        "payload": {
            "sid": sid,
            "cname": "room1",
            "uid": "527841",
            "details": {
                "msgName": "uploaded" if event_type == 31 else "backuped",
                "status": 0,
                "fileList": [{"fileName": f"{sid}_room1.m3u8", "trackType": "audio_and_video", "uid": "0"}],
            },
        },
    }
    return parse_notification(json.dumps(body).encode())


async def _next_sid(events: AsyncGenerator[Any, None]) -> str:
    return str((await events.__anext__()).payload["sid"])


async def test_the_watcher_survives_a_minute_without_redis_and_fires_once_after_it_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=watcher_module.__name__)
    recovered = LogSignal(RECOVERY)
    watcher_module.log.addHandler(recovered)
    with running_redis() as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_AGORA_DEFAULT", connection_json("", ncs_secret=NCS_SECRET, redis_conn_id=REDIS_CONN_ID)
        )
        monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}", server.connection_uri())
        redis = RedisSettings(
            conn_id=REDIS_CONN_ID, host="127.0.0.1", port=server.port, db=0, ssl=False, password=server.PASSWORD
        )
        store = NotificationStore(redis, CUSTOMER_ID, namespace_of(NCS_SECRET))
        client = server.client()
        stream = notification_keys(CUSTOMER_ID, namespace_of(NCS_SECRET))["stream"]
        client.xgroup_create(stream, DEFAULT_CONSUMER_GROUP, id="0", mkstream=True)  # reads what follows
        client.close()
        events: AsyncGenerator[Any, None] = AgoraRecordingNotificationTrigger().run()  # type: ignore[assignment]
        following: asyncio.Future[str] | None = None
        try:
            store.add(uploaded(SID_BEFORE, 31, 1))
            before = await asyncio.wait_for(_next_sid(events), TIMEOUT)  # the watcher reads, Redis is up
            following = asyncio.ensure_future(_next_sid(events))
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself
            if following.done():
                pytest.fail(f"The watcher stopped while Redis was down: {following.exception()!r}")
            await asyncio.to_thread(server.start)  # same port, empty: no stream, no group
            await asyncio.wait_for(recovered.seen.wait(), TIMEOUT)
            store.add(uploaded(SID_AFTER, 31, 2))
            after = await asyncio.wait_for(following, TIMEOUT)
            store.add(uploaded(SID_AFTER, 32, 3))  # the same recording again: no second event
            store.add(uploaded(SID_LATER, 31, 4))
            next_one = await asyncio.wait_for(_next_sid(events), TIMEOUT)
        finally:
            watcher_module.log.removeHandler(recovered)
            if following is not None and not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
            await events.aclose()
            store.close()

    warnings = [record for record in caplog.records if WARNING in record.getMessage()]
    recoveries = [record for record in caplog.records if RECOVERY in record.getMessage()]
    assert (before, after, next_one) == (SID_BEFORE, SID_AFTER, SID_LATER)
    assert (len(warnings), len(recoveries)) == (1, 1)
