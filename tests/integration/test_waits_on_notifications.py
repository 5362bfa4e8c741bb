"""Waits that finish on Agora's notifications, with polling as the backstop.

Real parts: a ``redis-server``, an Airflow 3.3 API server running the receiver plugin, and the
simulator posting signed notifications to it as Agora's NCS would. The sensor and its trigger run
in this process, in poke, reschedule and deferrable mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from airflow.sdk import BaseHook  # noqa: F401  (Airflow 3)
except ImportError:
    pytest.skip("notifications are received by an Airflow 3 API-server plugin", allow_module_level=True)

from airflow_provider_agora._compat import TaskDeferred
from airflow_provider_agora._ncs.store import notification_keys
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from airflow_provider_agora.notifications import namespace_of
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from airflow_provider_agora.simulator import AgoraSimulator
from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger
from airflow_provider_agora.triggers.notifications import DEFAULT_CONSUMER_GROUP, AgoraRecordingNotificationTrigger
from tests.integration.ui_helpers import AirflowApiServer
from tests.support import (
    APP_ID,
    CUSTOMER_ID,
    CUSTOMER_SECRET,
    FAST_RETRIES,
    RedisServer,
    TaskStateStore,
    connection_json,
)

NCS_SECRET = "ncs-secret-Wq3z8"
KEYS = notification_keys(CUSTOMER_ID, namespace_of(NCS_SECRET))
WITH_FILES = {"recordingFileConfig": {"avFileType": ["hls", "mp4"]}}


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[AirflowApiServer]:
    home: Path = tmp_path_factory.mktemp("airflow-waits")
    server = AirflowApiServer(home)
    server.env.update(
        {
            "AIRFLOW__AGORA__NOTIFICATIONS_RECEIVER": "True",
            "AIRFLOW_CONN_AGORA_DEFAULT": connection_json(
                "http://127.0.0.1:9", ncs_secret=NCS_SECRET, redis_conn_id="agora_ncs_redis"
            ),
            "AIRFLOW_CONN_AGORA_NCS_REDIS": redis_server.connection_uri(),
        }
    )
    server.migrate()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def agora(
    receiver: AirflowApiServer, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AgoraSimulator]:
    """The simulator, notifying the receiver; ``agora_default`` here receives notifications, ``agora_polling`` not."""
    redis_server.client().flushdb()
    with AgoraSimulator(
        customer_id=CUSTOMER_ID,
        customer_secret=CUSTOMER_SECRET,
        app_ids=(APP_ID,),
        speed=10.0,
        notify_url=f"{receiver.url}/agora/ncs/agora_default",
        notify_secret=NCS_SECRET,
    ).start() as simulator:
        monkeypatch.setenv(
            "AIRFLOW_CONN_AGORA_DEFAULT",
            connection_json(simulator.url, ncs_secret=NCS_SECRET, redis_conn_id="agora_ncs_redis"),
        )
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_NCS_REDIS", redis_server.connection_uri())
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_POLLING", connection_json(simulator.url))
        yield simulator


def start(cname: str = "room1", client_request: dict[str, Any] | None = None) -> dict[str, str]:
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire(cname, 4242)["resourceId"]
    sid = hook.start(resource_id, cname, 4242, recording_mode="mix", client_request=client_request or WITH_FILES)["sid"]
    return {"resource_id": resource_id, "sid": sid, "recording_mode": "mix"}


def in_progress(recording: dict[str, str]) -> None:
    """Until the recording has a file: stopping earlier is Agora's 435, no recorded data."""
    AgoraRecordingQuerySensor(task_id="running", **recording, target_status=5, poke_interval=0.1, timeout=30).execute(
        {}
    )


def stop(recording: dict[str, str], cname: str = "room1") -> None:
    AgoraHook(retry_policy=FAST_RETRIES).stop(
        recording["resource_id"], recording["sid"], cname, 4242, recording_mode="mix"
    )


def stored_events(redis_server: RedisServer, sid: str) -> list[int]:
    return [json.loads(raw)["event_type"] for raw in redis_server.client().lrange(KEYS["sid"] + sid, 0, -1)]


def wait_until(condition: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.05)  # polling a log, with a deadline


def queries(simulator: AgoraSimulator, sid: str) -> int:
    return sum(1 for record in simulator.request_log if record.path.endswith("/query") and sid in record.path)


def sensor(recording: dict[str, str], **kwargs: Any) -> AgoraRecordingQuerySensor:
    kwargs.setdefault("timeout", 60)
    task = AgoraRecordingQuerySensor(task_id="wait", **recording, **kwargs)
    return task


def run_trigger(deferred: TaskDeferred) -> dict[str, Any]:
    trigger = deferred.trigger
    assert isinstance(trigger, AgoraRecordingQueryTrigger)

    async def first_event() -> dict[str, Any]:
        try:
            return (await anext(trigger.run())).payload
        finally:
            await AgoraAsyncHook.close_shared_clients()

    return asyncio.run(first_event())


def test_a_deferred_wait_with_a_ten_minute_poll_finishes_on_the_uploaded_notification(
    agora: AgoraSimulator, redis_server: RedisServer
) -> None:
    recording = start()
    sid = recording["sid"]
    # Status 5 with its first file: the trigger's query then learns nothing the sensor did not
    # (no checkpoint event), so its event can only be the 31's.
    in_progress(recording)
    agora.clear_request_log()  # count the sensor's and the trigger's queries only
    task = sensor(recording, deferrable=True, poke_interval=600)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, AgoraRecordingQueryTrigger)

    async def heard_after_the_first_query() -> dict[str, Any]:
        waiting = asyncio.ensure_future(anext(trigger.run()))
        try:
            # Stop only once Agora has seen the trigger's first query: a 31 stored before it would
            # settle the wait from the trigger's first look (its catch-up) without any query.
            deadline = time.monotonic() + 30
            while queries(agora, sid) < 2:
                assert not waiting.done(), f"the trigger ended before its first query: {waiting.result()}"
                assert time.monotonic() < deadline, "no query from the trigger within 30 s"
                await asyncio.sleep(0.05)  # polling the simulator's log, with a deadline
            await asyncio.to_thread(stop, recording)
            return (await asyncio.wait_for(waiting, 60)).payload
        finally:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await AgoraAsyncHook.close_shared_clients()

    event = asyncio.run(heard_after_the_first_query())

    assert event["status"] == "success"
    result = event["result"]
    assert result["ended_by"] == "notification"
    assert result["notification"]["event_type"] == 31
    assert {f["fileName"].rsplit(".", 1)[-1] for f in result["files"]} == {"m3u8", "mp4"}
    # One query when the sensor deferred and one when the trigger began; the 600 s poll never came.
    assert queries(agora, sid) == 2


def reschedule_until_done(task: AgoraRecordingQuerySensor, store: TaskStateStore) -> dict[str, Any]:
    """Pokes as reschedule mode makes them: the wait's memory lives in the task state store."""
    deadline = time.monotonic() + 60
    while True:
        outcome = task.poke({"task_state_store": store})
        if outcome is not False:
            return outcome.xcom_value  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(task.poke_interval)  # the sensor's own poke interval


def test_a_recording_that_ends_on_its_own_yields_its_mp4s_only_through_the_notification(
    agora: AgoraSimulator, redis_server: RedisServer
) -> None:
    idle = {**WITH_FILES, "recordingConfig": {"maxIdleTime": 5}}
    heard, polled = start("heard-room", idle), start("polled-room", idle)
    waits = {
        "heard": (
            sensor(heard, mode="reschedule", poke_interval=0.2, on_not_found="succeed", not_found_grace_period=2),
            TaskStateStore(),
        ),
        "polled": (
            sensor(
                polled,
                agora_conn_id="agora_polling",
                mode="reschedule",
                poke_interval=0.2,
                on_not_found="succeed",
                not_found_grace_period=2,
            ),
            TaskStateStore(),
        ),
    }
    for recording in (heard, polled):  # both running, with their first file
        AgoraRecordingQuerySensor(
            task_id="running", **recording, target_status=5, poke_interval=0.1, timeout=30
        ).execute({})
    for task, store in waits.values():
        assert task.poke({"task_state_store": store}) is False  # each wait has seen its recording running
    agora.leave_channel("heard-room")
    agora.leave_channel("polled-room")
    with_notifications = reschedule_until_done(*waits["heard"])
    polling_only = reschedule_until_done(*waits["polled"])

    assert with_notifications["ended_by"] == "notification"
    assert polling_only["ended_by"] == "not_found"
    assert any(f["fileName"].endswith(".mp4") for f in with_notifications["files"])
    assert not any(f["fileName"].endswith(".mp4") for f in polling_only["files"])


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_poke_and_reschedule_modes_take_the_notification_path(
    mode: str, agora: AgoraSimulator, redis_server: RedisServer
) -> None:
    recording = start(f"room-{mode}")
    in_progress(recording)
    stop(recording, f"room-{mode}")
    wait_until(lambda: 31 in stored_events(redis_server, recording["sid"]), "uploaded notification")
    task = sensor(recording, mode=mode, poke_interval=1)
    before = queries(agora, recording["sid"])
    result = task.poke({"task_state_store": TaskStateStore()})
    assert result is not False and result.xcom_value["ended_by"] == "notification"  # type: ignore[union-attr]
    assert queries(agora, recording["sid"]) == before  # settled by one Redis read, no query


def test_a_dropped_notification_leaves_the_backstop_poll_to_finish_the_wait(
    agora: AgoraSimulator, redis_server: RedisServer
) -> None:
    agora.faults.drop(event_types=[31, 11])
    recording = start()
    in_progress(recording)
    # As without notifications: the stopped recording is gone within a second, so polling ends
    # the wait through on_not_found="succeed".
    task = sensor(recording, deferrable=True, poke_interval=0.5, on_not_found="succeed", not_found_grace_period=1)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    stop(recording)
    event = run_trigger(deferred.value)
    assert (event["status"], event["result"]["ended_by"]) == ("success", "not_found")
    assert 31 not in stored_events(redis_server, recording["sid"])


def test_a_forged_notification_changes_nothing(agora: AgoraSimulator, redis_server: RedisServer) -> None:
    agora.faults.bad_signature()
    recording = start()
    AgoraRecordingQuerySensor(task_id="running", **recording, target_status=5, poke_interval=0.1, timeout=30).execute(
        {}
    )
    wait_until(lambda: any(n.event_type == 40 for n in agora.notifications), "recorder_started attempt")
    assert stored_events(redis_server, recording["sid"]) == []
    assert sensor(recording, poke_interval=1).poke({}) is False  # still recording: nothing was believed


def test_duplicates_and_uploaded_after_exit_give_one_outcome(agora: AgoraSimulator, redis_server: RedisServer) -> None:
    agora.faults.duplicate()
    agora.faults.reorder_31_after_11()
    recording = start()
    in_progress(recording)
    stop(recording)
    # 40, 30, 11 and the held-back 31, each sent twice: the check runs once the last copy (a 31)
    # has been answered, and the receiver stores before it answers.
    sent = 4 * 2
    wait_until(lambda: agora.notification_stats()["delivered"] == sent, f"{sent} delivered notifications")
    assert agora.notification_stats()["notifications"] == 4
    events = stored_events(redis_server, recording["sid"])
    assert sorted(events) == [11, 30, 31, 40]  # every duplicate was dropped
    result = sensor(recording, poke_interval=1).execute({})
    assert result is not None
    assert (result["ended_by"], result["status"]) == ("notification", 8)


def test_a_notification_that_arrived_while_no_trigger_ran_is_found_when_one_starts(
    agora: AgoraSimulator, redis_server: RedisServer
) -> None:
    """A triggerer restart: the notifications came while it was down. The new trigger starts from
    the stored 31 (its catch-up), not from a query followed by the wait for 'uploaded' after an exit,
    which would end with the exit (11) and without the 31's files."""
    recording = start()
    in_progress(recording)
    task = sensor(recording, deferrable=True, poke_interval=600)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    stop(recording)
    wait_until(lambda: {31, 11} <= set(stored_events(redis_server, recording["sid"])), "uploaded and exit")
    stored = [json.loads(raw) for raw in redis_server.client().lrange(KEYS["sid"] + recording["sid"], 0, -1)]
    uploaded = next(entry for entry in stored if entry["event_type"] == 31)
    event = run_trigger(deferred.value)  # starts only now
    assert event["status"] == "success"
    assert event["result"]["notification"] == {"notice_id": uploaded["notice_id"], "event_type": 31}
    assert event["result"]["files"] == uploaded["files"]


def watchers_consumed_everything(redis_server: RedisServer) -> bool:
    """Whether the asset watchers' group has read and acknowledged every stored notification: no
    event can come any more from what is in the stream."""
    client = redis_server.client()
    try:
        groups = client.xinfo_groups(KEYS["stream"])
    finally:
        client.close()
    ours = [group for group in groups if group["name"] == DEFAULT_CONSUMER_GROUP]
    return bool(ours) and ours[0]["lag"] == 0 and ours[0]["pending"] == 0


async def watchers_group_created(redis_server: RedisServer, seconds: float = 30) -> None:
    """Until the watchers' consumer group exists. It starts at the stream's end ("$"), so a 31
    stored before it would reach no watcher; once it exists, every new entry goes to whichever
    watcher reads next. (XINFO CONSUMERS cannot tell that both have joined: Redis lists a consumer
    only once it has been handed an entry.)"""
    client = redis_server.client()
    try:
        deadline = time.monotonic() + seconds
        while not (
            client.exists(KEYS["stream"])
            and any(group["name"] == DEFAULT_CONSUMER_GROUP for group in client.xinfo_groups(KEYS["stream"]))
        ):
            assert time.monotonic() < deadline, f"the watchers created no consumer group within {seconds} s"
            # Polling Redis with a deadline; the sleep also lets the watchers' pending reads run.
            await asyncio.sleep(0.05)
    finally:
        client.close()


def test_the_asset_watcher_fires_once_per_finished_recording_with_two_triggerers(
    agora: AgoraSimulator, redis_server: RedisServer
) -> None:
    """Each recording ends twice (31 and the 32 of the backuped fault) and Agora sends everything
    twice (the redeliver fault): two watchers of one group still fire exactly once per recording.
    Events are collected until the watchers have consumed every notification the simulator sent,
    so a late duplicate would be seen."""
    agora.faults.backuped()
    agora.faults.redeliver()
    sent = 3 * 2 * 5  # three recordings, every notification twice: 40, 30, 31, 32, 11

    def settled() -> bool:
        return agora.notification_stats()["delivered"] == sent and watchers_consumed_everything(redis_server)

    async def watch() -> list[dict[str, Any]]:
        watchers = [AgoraRecordingNotificationTrigger(), AgoraRecordingNotificationTrigger()]
        streams = [watcher.run() for watcher in watchers]
        events: list[dict[str, Any]] = []
        pending = {asyncio.ensure_future(anext(stream)): stream for stream in streams}
        await watchers_group_created(redis_server)
        recordings = await asyncio.to_thread(lambda: [start(f"asset-room-{n}") for n in range(3)])
        for n, recording in enumerate(recordings):
            await asyncio.to_thread(in_progress, recording)
            await asyncio.to_thread(stop, recording, f"asset-room-{n}")
        deadline = time.monotonic() + 60
        while True:
            done, _ = await asyncio.wait(pending, timeout=0.2, return_when="FIRST_COMPLETED")  # a poll, with a deadline
            for future in done:
                stream = pending.pop(future)
                events.append(future.result().payload)
                pending[asyncio.ensure_future(anext(stream))] = stream
            if not done and await asyncio.to_thread(settled):
                break
            assert time.monotonic() < deadline, f"not settled within 60 s: {agora.notification_stats()}"
        events.extend(future.result().payload for future in pending if future.done())
        for future in pending:
            if not future.done():
                future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
        return events

    events = asyncio.run(watch())
    assert sorted(event["cname"] for event in events) == ["asset-room-0", "asset-room-1", "asset-room-2"]
    assert all(any(f["fileName"].endswith(".mp4") for f in event["files"]) for event in events)


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_an_idle_ended_recording_yields_its_mp4s_through_the_notification_in_poke_and_deferrable_mode(
    mode: str, agora: AgoraSimulator, redis_server: RedisServer
) -> None:
    """The reschedule case is above, beside the polling-only run that misses the MP4s."""
    cname = f"idle-{mode}"
    recording = start(cname, {**WITH_FILES, "recordingConfig": {"maxIdleTime": 5}})
    in_progress(recording)
    task = sensor(
        recording,
        mode="poke",
        poke_interval=0.2,
        on_not_found="succeed",
        not_found_grace_period=2,
        deferrable=mode == "deferrable",
    )
    if mode == "deferrable":
        with pytest.raises(TaskDeferred) as deferred:
            task.execute({})
        agora.leave_channel(cname)
        event = run_trigger(deferred.value)
        assert event["status"] == "success"
        result = event["result"]
    else:
        assert task.poke({}) is False  # seen running
        agora.leave_channel(cname)
        result = None
        deadline = time.monotonic() + 60
        while result is None:
            outcome = task.poke({})
            if outcome is not False:
                result = outcome.xcom_value  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(task.poke_interval)  # the sensor's own poke interval
    assert result["ended_by"] == "notification"
    assert any(f["fileName"].endswith(".mp4") for f in result["files"])
