"""AgoraRecordingQueryTrigger and the sensor's deferrable mode, against the simulator."""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from typing import Any

import pytest

from airflow_provider_agora._compat import AirflowFailException, AirflowSensorTimeout, TaskDeferred
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from airflow_provider_agora.simulator import AgoraSimulator
from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger
from tests import agora_bodies as bodies
from tests.support import CUSTOMER_SECRET, FAST_RETRIES, ScriptedAgora, TaskStateStore, max_in_sliding_second


def start_recording(cname: str = "room1", uid: int = 4242) -> dict[str, str]:
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire(cname, uid)["resourceId"]
    sid = hook.start(resource_id, cname, uid, "mix", {"recordingFileConfig": {"avFileType": ["hls"]}})["sid"]
    return {"resource_id": resource_id, "sid": sid, "recording_mode": "mix"}


def trigger(**kwargs: Any) -> AgoraRecordingQueryTrigger:
    kwargs.setdefault("resource_id", "JyvK8nXHuV1BE64GDkAaBGEscvtHW7v8")
    kwargs.setdefault("sid", "38f8e3cfdc474cd56fc1ceba380d7e1a")
    kwargs.setdefault("recording_mode", "mix")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("end_time", time.time() + 30)
    return AgoraRecordingQueryTrigger(**kwargs)


async def events_of(task: AgoraRecordingQueryTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in task.run()]


async def final_event(**kwargs: Any) -> dict[str, Any]:
    """Follow checkpoints the way the sensor does: defer again with the memory handed back."""
    while True:
        (event,) = await events_of(trigger(**kwargs))
        if event["status"] != "checkpoint":
            return event
        kwargs.update(memory=event["memory"], end_time=event["end_time"])


def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "airflow_provider_agora.triggers.agora.AgoraAsyncHook", partial(AgoraAsyncHook, retry_policy=FAST_RETRIES)
    )


def poke_mode(**kwargs: Any) -> AgoraRecordingQuerySensor:
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    task = AgoraRecordingQuerySensor(task_id="wait", **kwargs)
    task.hook = AgoraHook(retry_policy=FAST_RETRIES)
    return task


# -- the trigger's contract ---------------------------------------------------------------------


def test_kwargs_are_json_primitives_naming_the_connection_not_a_secret() -> None:
    classpath, kwargs = trigger(memory={"not_found_since": 1.5, "last_seen": None}).serialize()
    assert classpath == "airflow_provider_agora.triggers.agora.AgoraRecordingQueryTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs["agora_conn_id"] == "agora_default"
    assert CUSTOMER_SECRET not in json.dumps(kwargs)
    assert AgoraRecordingQueryTrigger(**kwargs).serialize() == (classpath, kwargs)


async def test_success_gives_exactly_one_event_with_the_poke_mode_result(agora_conn: AgoraSimulator) -> None:
    recording = start_recording()
    poked = poke_mode(**recording, target_status=5).execute({})
    events = await events_of(trigger(**recording, target_status=5))
    assert len(events) == 1
    (event,) = events
    assert event["status"] == "success"
    assert event["result"] == poked
    assert event["result"]["files"][0]["fileName"] == f"{recording['sid']}_room1.m3u8"


async def test_failure_status_fails_with_the_poke_mode_message(agora_conn: AgoraSimulator) -> None:
    recording = start_recording()
    agora_conn.faults.abnormal_exit(recording["sid"])
    (event,) = await events_of(trigger(**recording))
    with pytest.raises(AirflowFailException) as poked:
        poke_mode(**recording).execute({})
    assert event["status"] == "failure"
    assert event["message"] == str(poked.value)
    assert "failure status 20 (exited abnormally)" in event["message"]


async def test_persistent_404_fails_after_the_grace_period(agora_conn: AgoraSimulator) -> None:
    started = time.monotonic()
    (event,) = await events_of(trigger(sid="f" * 32, not_found_grace_period=0.5, poll_interval=0.1))
    assert event["status"] == "failure"
    assert "past not_found_grace_period=0.5 s" in event["message"]
    assert time.monotonic() - started >= 0.5


async def test_gateway_404_fails_at_once(scripted: ScriptedAgora) -> None:
    scripted.script((404, bodies.GATEWAY_NO_ROUTE))
    (event,) = await events_of(trigger(not_found_grace_period=60))
    assert event["status"] == "failure"
    assert len(scripted.requests) == 1


async def test_on_not_found_succeed_returns_the_last_files(scripted: ScriptedAgora) -> None:
    scripted.script((200, bodies.QUERY_STRING), (404, bodies.SERVICE_NOT_FOUND))
    event = await final_event(on_not_found="succeed", not_found_grace_period=0.2)
    assert event["status"] == "success"
    assert event["result"]["ended_by"] == "not_found"
    assert event["result"]["files"] == [{"fileName": "zzzz.m3u8", "sliceStartTime": 1606357122528}]


async def test_memory_from_the_first_poke_carries_into_the_trigger(scripted: ScriptedAgora) -> None:
    scripted.script((404, bodies.SERVICE_NOT_FOUND))
    seen = {"status": 5, "files": [{"fileName": "a.m3u8"}], "sid": "s"}
    memory = {"not_found_since": time.time() - 100, "last_seen": seen}
    (event,) = await events_of(trigger(on_not_found="succeed", not_found_grace_period=90, memory=memory))
    assert (event["status"], event["result"]["files"]) == ("success", [{"fileName": "a.m3u8"}])
    assert len(scripted.requests) == 1


async def test_the_deadline_ends_the_wait_with_a_timeout_event(agora_conn: AgoraSimulator) -> None:
    task = trigger(sid="d" * 32, end_time=time.time() + 0.5, not_found_grace_period=600)
    (event,) = await events_of(task)
    assert event["status"] == "timeout"
    assert f"recording sid={'d' * 32} did not reach status 8" in event["message"]


async def test_what_a_restarted_triggerer_would_forget_is_handed_back_as_a_checkpoint(
    scripted: ScriptedAgora,
) -> None:
    scripted.script((200, {"serverResponse": {"status": 4}}), (200, bodies.QUERY_STRING))
    deadline = time.time() + 30
    (first,) = await events_of(trigger(end_time=deadline))  # first sight of the recording
    assert first["status"] == "checkpoint"
    assert first["memory"]["last_seen"]["status"] == 4
    assert first["end_time"] == deadline
    (second,) = await events_of(trigger(end_time=deadline, memory=first["memory"]))  # a new file
    assert second["status"] == "checkpoint"
    assert second["memory"]["last_seen"]["files"] == [{"fileName": "zzzz.m3u8", "sliceStartTime": 1606357122528}]
    requests_so_far = len(scripted.requests)
    (third,) = await events_of(trigger(end_time=time.time() + 0.3, memory=second["memory"]))
    assert third["status"] == "timeout"  # nothing new: no more checkpoints, the wait just goes on
    assert len(scripted.requests) > requests_so_far


async def test_transient_errors_are_retried_and_never_fail_the_wait(
    agora_conn: AgoraSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_retries(monkeypatch)
    recording = start_recording()
    poke_mode(**recording, target_status=5).execute({})
    agora_conn.clear_request_log()
    agora_conn.faults.throttle_next(2, retry_after=None)
    agora_conn.faults.fail_next(2, status=503)
    agora_conn.faults.partial_next(1)
    (event,) = await events_of(trigger(**recording, target_status=5))
    assert event["status"] == "success"
    assert [r.status for r in agora_conn.request_log][:5] == [429, 429, 503, 503, 206]


async def test_bad_credentials_end_in_an_error_event(scripted: ScriptedAgora) -> None:
    scripted.script((401, bodies.BAD_CREDENTIALS))
    (event,) = await events_of(trigger())
    assert event["status"] == "error"
    assert "rejected the credentials" in event["message"]


async def test_the_connection_is_read_without_blocking_the_event_loop(
    scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sync_lookup(*args: Any) -> Any:
        raise AssertionError("a synchronous connection lookup ran on the event loop")

    from airflow_provider_agora import _compat

    if not hasattr(_compat.BaseHook, "aget_connection"):
        pytest.skip("Airflow < 3.1 reads connections in a thread, by design")
    monkeypatch.setattr(_compat.BaseHook, "get_connection", classmethod(sync_lookup))
    scripted.script((200, bodies.QUERY_STRING))
    (event,) = await events_of(trigger(target_status=5))
    assert event["status"] == "success"


async def test_slow_answers_do_not_block_the_event_loop(agora_conn: AgoraSimulator) -> None:
    recording = start_recording()
    agora_conn.faults.latency = 0.6
    gaps: list[float] = []
    finished = asyncio.Event()

    async def heartbeat() -> None:
        last = time.monotonic()
        while not finished.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await asyncio.gather(*(events_of(trigger(**recording, target_status=5)) for _ in range(3)))
    finished.set()
    await beat
    # A blocking HTTP call would stall the loop for a whole 0.6 s answer.
    assert max(gaps) < 0.45  # well under the 0.6 s a blocking call would stall it for


async def test_many_triggers_share_one_budget_and_are_served_in_turn(agora_conn: AgoraSimulator) -> None:
    # 30 waits on 30 sessions Agora does not know (404 within the grace period: keep polling).
    sids = [f"{n:032x}" for n in range(30)]
    waits = [trigger(sid=sid, end_time=time.time() + 4, poll_interval=0, not_found_grace_period=600) for sid in sids]
    results = await asyncio.gather(*(events_of(task) for task in waits))
    assert [event["status"] for (event,) in results] == ["timeout"] * 30
    log = [r for r in agora_conn.request_log if r.path.endswith("/query")]
    assert 429 not in {r.status for r in log}
    assert max_in_sliding_second([r.time for r in log]) <= 10
    polls = [sum(1 for r in log if f"/sid/{sid}/" in r.path) for sid in sids]
    assert min(polls) >= 1  # every wait was served
    assert max(polls) - min(polls) <= 1  # in turn: nobody polled twice while another waited


# -- the sensor's deferrable mode ---------------------------------------------------------------


def test_deferrable_sensor_pokes_once_then_defers_with_its_timeout(scripted: ScriptedAgora) -> None:
    scripted.script((200, {"serverResponse": {"status": 4}}))
    task = poke_mode(resource_id="rid", sid="abc", deferrable=True, timeout=120, poke_interval=7, target_status=5)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    assert len(scripted.requests) == 1
    assert deferred.value.method_name == "execute_complete"
    assert 119 < deferred.value.timeout.total_seconds() <= 120
    _, kwargs = deferred.value.trigger.serialize()
    assert (kwargs["poll_interval"], kwargs["target_status"]) == (7.0, 5)
    assert 110 < kwargs["end_time"] - time.time() <= 120
    assert kwargs["memory"]["last_seen"]["status"] == 4


def test_deferrable_sensor_does_not_defer_when_already_done(scripted: ScriptedAgora) -> None:
    scripted.script((200, bodies.QUERY_STRING))
    result = poke_mode(resource_id="rid", sid="yyy", deferrable=True, target_status=5).execute({})
    assert result["files"] == [{"fileName": "zzzz.m3u8", "sliceStartTime": 1606357122528}]


def test_a_checkpoint_is_kept_and_the_wait_deferred_again_with_the_same_deadline() -> None:
    task = poke_mode(resource_id="rid", sid="abc", deferrable=True)
    store = TaskStateStore()
    memory = {"not_found_since": None, "last_seen": {"status": 5, "files": [{"fileName": "a.m3u8"}]}}
    deadline = time.time() + 50
    event = {"status": "checkpoint", "message": "m", "memory": memory, "end_time": deadline, "result": None}
    with pytest.raises(TaskDeferred) as deferred:
        task.execute_complete({"task_state_store": store}, event)
    _, kwargs = deferred.value.trigger.serialize()
    assert (kwargs["memory"], kwargs["end_time"]) == (memory, deadline)
    assert 40 < deferred.value.timeout.total_seconds() <= 50
    assert store.values["agora_recording_wait"] == memory


def test_execute_complete_turns_events_into_poke_mode_outcomes() -> None:
    task = poke_mode(resource_id="rid", sid="abc")
    result = {"sid": "abc", "files": []}
    assert task.execute_complete({}, {"status": "success", "message": "m", "result": result}) == result
    with pytest.raises(AirflowFailException, match="boom"):
        task.execute_complete({}, {"status": "failure", "message": "boom", "result": None})
    with pytest.raises(AirflowSensorTimeout, match="late"):
        task.execute_complete({}, {"status": "timeout", "message": "late", "result": None})
    with pytest.raises(Exception, match="rejected") as error:
        task.execute_complete({}, {"status": "error", "message": "rejected", "result": None})
    assert not isinstance(error.value, AirflowFailException)  # Airflow's retries apply
    for event in (None, {"status": "weird"}, "success"):
        with pytest.raises(Exception, match="event this sensor cannot read"):
            task.execute_complete({}, event)  # type: ignore[arg-type]
