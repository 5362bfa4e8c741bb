"""The asset watcher's backstop: a recording that ended while Redis was down still fires, once.

A real ``redis-server`` that the test stops for a minute (the issue's figure) and starts again on
the same port, empty as a Redis without persistence comes back; the embedded simulator; the real
trigger's ``run()`` in-process. A recording is started through ``AgoraHook.start`` (which records
its ``resourceId`` for the backstop) and heard of (its 40), then stopped on the simulator while
Redis is down: its ending notifications are lost, so nothing is stored. After Redis returns, the
watcher must have logged one warning and one recovery line, and fire exactly one asset event for
the recording, decided from Agora's answer. That no second event follows is shown over two more
of the watcher's own backstop rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest

try:
    from airflow.triggers.base import BaseEventTrigger  # noqa: F401  (Airflow 3)
except ImportError:
    pytest.skip("asset watchers (BaseEventTrigger) need Airflow 3", allow_module_level=True)

from airflow_provider_agora._ncs.store import NotificationStore, notification_keys
from airflow_provider_agora._redis import RedisSettings
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from airflow_provider_agora.notifications import Notification, namespace_of, parse_notification
from airflow_provider_agora.simulator import STARTUP_TIMELINE, AgoraSimulator
from airflow_provider_agora.triggers import notifications as watcher_module
from airflow_provider_agora.triggers.notifications import DEFAULT_CONSUMER_GROUP, AgoraRecordingNotificationTrigger
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, FAST_RETRIES, LogSignal, connection_json, running_redis

OUTAGE_SECONDS = 60.0  # how long Redis stays down: the duration under test, not a synchronisation
BACKSTOP_DELAY = 5.0  # shorter than the outage: the recording is due while Redis is down
BACKSTOP_INTERVAL = 1.0
NOT_FOUND_GRACE = 2.0  # Agora's fail-over window (90 s), shortened
NCS_SECRET = "ncs-backstop-secret-Wm3q"
REDIS_CONN_ID = "agora_ncs_redis"
CNAME = "room1"
UID = 4242
TIMEOUT = 90.0  # a safety net: the back-off reaches 30 s between two tries during the outage
WARNING = "Cannot read Agora's notifications from Redis"
RECOVERY = "Redis answers again"


def recorder_started(sid: str) -> Notification:
    """Agora's 40 (recorder_started) of a recording: the watcher has heard of it."""
    body = {
        "noticeId": f"backstop-notice-{sid}",
        "productId": 3,
        "eventType": 40,
        "notifyMs": int(time.time() * 1000),
        "payload": {
            "sid": sid,
            "cname": CNAME,
            "uid": str(UID),
            "details": {"msgName": "recorder_started", "status": 0},
        },
    }
    return parse_notification(json.dumps(body).encode())


def _stop_once_it_has_files(simulator: AgoraSimulator, resource_id: str, sid: str, started_at: float) -> None:
    """Agora answers a stop without files with 435: stop once the first one is uploaded."""
    while simulator.simulated_time() < started_at + STARTUP_TIMELINE[-1][0]:
        time.sleep(0.01)  # waiting on the simulator's clock, which always reaches it
    AgoraHook(retry_policy=FAST_RETRIES).stop(resource_id, sid, CNAME, UID, recording_mode="mix")


async def _rounds_pass(trigger: AgoraRecordingNotificationTrigger, count: int, following: asyncio.Future[Any]) -> None:
    """Until the watcher has finished ``count`` more backstop rounds, or an event comes."""
    target = trigger.backstop_rounds + count
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while trigger.backstop_rounds < target and not following.done():
        assert asyncio.get_running_loop().time() < deadline, "the watcher's backstop rounds stopped"
        await asyncio.sleep(0.05)  # polling the watcher's round counter, with a deadline


async def test_a_recording_that_ended_while_redis_was_down_fires_exactly_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=watcher_module.__name__)
    monkeypatch.setattr(watcher_module, "_NOT_FOUND_GRACE_SECONDS", NOT_FOUND_GRACE)
    recovered = LogSignal(RECOVERY)
    watcher_module.log.addHandler(recovered)
    with (
        running_redis() as server,
        AgoraSimulator(
            customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,), speed=10.0
        ).start() as simulator,
    ):
        monkeypatch.setenv(
            "AIRFLOW_CONN_AGORA_DEFAULT",
            connection_json(simulator.url, ncs_secret=NCS_SECRET, redis_conn_id=REDIS_CONN_ID),
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
        trigger = AgoraRecordingNotificationTrigger(backstop_delay=BACKSTOP_DELAY, backstop_interval=BACKSTOP_INTERVAL)
        events: AsyncGenerator[Any, None] = trigger.run()  # type: ignore[assignment]
        following: asyncio.Future[Any] = asyncio.ensure_future(events.__anext__())
        after: asyncio.Future[Any] | None = None
        try:
            hook = AgoraHook(retry_policy=FAST_RETRIES)
            resource_id = (await asyncio.to_thread(hook.acquire, CNAME, UID))["resourceId"]
            started = await asyncio.to_thread(
                functools.partial(
                    hook.start,
                    resource_id,
                    CNAME,
                    UID,
                    recording_mode="mix",
                    client_request={"recordingFileConfig": {"avFileType": ["hls"]}},
                )
            )
            sid, started_at = started["sid"], simulator.simulated_time()
            heard = LogSignal(f"Heard of recording sid={sid}")
            watcher_module.log.addHandler(heard)
            try:
                store.add(recorder_started(sid))
                await asyncio.wait_for(heard.seen.wait(), TIMEOUT)
            finally:
                watcher_module.log.removeHandler(heard)

            await asyncio.to_thread(server.stop)
            down_at = asyncio.get_running_loop().time()
            await asyncio.to_thread(_stop_once_it_has_files, simulator, resource_id, sid, started_at)  # 31, 11 lost
            await asyncio.sleep(OUTAGE_SECONDS - (asyncio.get_running_loop().time() - down_at))  # the outage itself
            if following.done():
                pytest.fail(f"The watcher stopped or fired while Redis was down: {following!r}")
            await asyncio.to_thread(server.start)  # same port, empty: no stream, no group, no registration
            await asyncio.wait_for(recovered.seen.wait(), TIMEOUT)
            event = await asyncio.wait_for(following, TIMEOUT)
            after = asyncio.ensure_future(events.__anext__())
            await _rounds_pass(trigger, 2, after)
            duplicate = after.done()
        finally:
            watcher_module.log.removeHandler(recovered)
            for pending in (following, after):
                if pending is not None and not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending
            await events.aclose()
            await AgoraAsyncHook.close_shared_clients()
            store.close()

    warnings = [
        r.getMessage() for r in caplog.records if r.name == watcher_module.__name__ and r.levelno >= logging.WARNING
    ]
    recoveries = [
        r.getMessage() for r in caplog.records if r.name == watcher_module.__name__ and RECOVERY in r.getMessage()
    ]
    payload = event.payload
    assert (payload["sid"], payload["resource_id"], payload["ended_by"], payload["notification"], duplicate) == (
        sid,
        resource_id,
        "not_found",  # a minute after the stop the session is long gone: Agora answers 404
        None,
        False,
    )
    assert (len(warnings), WARNING in warnings[0], len(recoveries)) == (1, True, 1), (warnings, recoveries)
