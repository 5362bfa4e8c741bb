"""The wait's parameters, declared once, and Agora's ``Retry-After`` carried from one poke to the next.

The sensor, the trigger's constructor and its ``serialize`` all go through ``WaitSpec``'s fields;
a trigger row written by the previous release still builds a trigger. When 429s outlast one poke's
retries, the wait's memory keeps "not before T", and neither the next poke, a rescheduled poke nor
the trigger queries Agora before T.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from dataclasses import fields
from functools import partial
from typing import Any, get_args

import pytest

from airflow_provider_agora._client.protocol import RECORDING_MODES
from airflow_provider_agora._client.retry import RetryPolicy
from airflow_provider_agora._compat import AirflowFailException, TaskDeferred
from airflow_provider_agora._storage.verification import StorageArguments
from airflow_provider_agora._waiting import (
    ON_NOT_FOUND_CHOICES,
    Outcome,
    WaitMemory,
    WaitSpec,
    decide_on_answer,
    decide_on_error,
)
from airflow_provider_agora.exceptions import (
    AgoraConfigurationError,
    AgoraRateLimitError,
    AgoraServerError,
    configuration_errors_fail_the_task,
)
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from airflow_provider_agora.results import RecordingMode
from airflow_provider_agora.sensors.agora import MEMORY_KEY, AgoraRecordingQuerySensor
from airflow_provider_agora.triggers.agora import EVENT_STATUSES, AgoraRecordingQueryTrigger
from tests import agora_bodies as bodies
from tests.support import ScriptedAgora, ScriptedAnswer, TaskStateStore

RID = "JyvK8nXHuV1BE64GDkAaBGEscvtHW7v8"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
RETRY_AFTER = 0.6  # seconds; Agora sends whole seconds, the header parser takes any number
# Two attempts per poke: the second waits out the first 429's Retry-After, then meets another 429.
TWO_ATTEMPTS = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05, max_total_seconds=10)


def throttled(count: int) -> list[ScriptedAnswer]:
    return [ScriptedAnswer(429, bodies.RATE_LIMITED, {"Retry-After": str(RETRY_AFTER)}) for _ in range(count)]


def sensor(**kwargs: Any) -> AgoraRecordingQuerySensor:
    kwargs.setdefault("resource_id", RID)
    kwargs.setdefault("sid", SID)
    kwargs.setdefault("target_status", 5)
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    task = AgoraRecordingQuerySensor(task_id="wait", **kwargs)
    task.hook = AgoraHook(retry_policy=TWO_ATTEMPTS)
    return task


def gap_after_the_last_429(scripted: ScriptedAgora) -> float:
    """Seconds between the 429 that ended a poke (the second request) and the query after it."""
    assert len(scripted.times) >= 3
    return scripted.times[2] - scripted.times[1]


# -- Retry-After across pokes -------------------------------------------------------------------


def test_the_poke_after_429s_outlasted_the_retries_waits_for_retry_after(scripted: ScriptedAgora) -> None:
    scripted.script(*throttled(2), (200, bodies.QUERY_STRING))
    result = sensor().execute({})  # poke mode: the next poke comes poke_interval (0.05 s) later
    assert result["status"] == 5
    assert len(scripted.requests) == 3
    assert gap_after_the_last_429(scripted) >= RETRY_AFTER


def test_a_rescheduled_poke_does_not_query_before_retry_after(scripted: ScriptedAgora) -> None:
    scripted.script(*throttled(2), (200, bodies.QUERY_STRING))
    store = TaskStateStore()
    context = {"task_state_store": store}

    def fresh_poke() -> Any:  # every reschedule runs a new operator instance
        return sensor(mode="reschedule").poke(context)

    assert fresh_poke() is False  # two 429s: the poke's retries are used up
    assert fresh_poke() is False  # at once again: too early, no query
    assert len(scripted.requests) == 2
    not_before = store.values[MEMORY_KEY]["not_before"]
    assert not_before >= scripted.times[1] + RETRY_AFTER - 0.05  # the last 429 plus its Retry-After
    time.sleep(max(not_before - time.time(), 0.0))
    result = fresh_poke()
    assert result and result.xcom_value["status"] == 5
    assert len(scripted.requests) == 3
    assert MEMORY_KEY not in store.values


def test_a_deferred_wait_hands_retry_after_to_the_trigger(
    scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "airflow_provider_agora.triggers.agora.AgoraAsyncHook", partial(AgoraAsyncHook, retry_policy=TWO_ATTEMPTS)
    )
    scripted.script(*throttled(2), (200, bodies.QUERY_STRING))
    with pytest.raises(TaskDeferred) as deferred:
        sensor(deferrable=True).execute({})  # the first poke meets the 429s, then defers
    trigger = deferred.value.trigger
    assert isinstance(trigger, AgoraRecordingQueryTrigger)
    _, kwargs = trigger.serialize()

    async def first_event() -> dict[str, Any]:
        try:
            (only,) = [event.payload async for event in AgoraRecordingQueryTrigger(**kwargs).run()]
            return only
        finally:
            await AgoraAsyncHook.close_shared_clients()

    event = asyncio.run(first_event())
    assert (event["status"], event["result"]["status"]) == ("success", 5)
    assert gap_after_the_last_429(scripted) >= RETRY_AFTER
    assert kwargs["memory"]["not_before"] >= scripted.times[1] + RETRY_AFTER - 0.05  # what told it


async def test_the_trigger_waits_for_retry_after_between_its_own_queries(
    scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "airflow_provider_agora.triggers.agora.AgoraAsyncHook", partial(AgoraAsyncHook, retry_policy=TWO_ATTEMPTS)
    )
    scripted.script(*throttled(2), (200, bodies.QUERY_STRING))
    task = AgoraRecordingQueryTrigger(
        resource_id=RID, sid=SID, recording_mode="mix", target_status=5, poll_interval=0.05, end_time=time.time() + 30
    )
    (event,) = [event.payload async for event in task.run()]
    assert (event["status"], event["result"]["status"]) == ("success", 5)
    assert gap_after_the_last_429(scripted) >= RETRY_AFTER


def test_429s_without_retry_after_and_other_answers_leave_no_not_before() -> None:
    spec = WaitSpec.checked(resource_id=RID, sid=SID)
    throttled_memory = WaitMemory(not_before=105.0)
    busy = AgoraServerError("503", operation="query", status=503)
    assert decide_on_error(spec, throttled_memory, busy, now=110.0).memory.not_before is None
    no_header = AgoraRateLimitError("429", operation="query", status=429, retry_after=None)
    assert decide_on_error(spec, WaitMemory(), no_header, now=1.0).memory.not_before is None
    answered = decide_on_answer(spec, throttled_memory, bodies.QUERY_STRING)  # status 5, waiting for 8
    assert (answered.outcome, answered.memory.not_before) == (Outcome.WAIT, None)


def test_not_before_round_trips_and_an_older_memory_still_reads() -> None:
    memory = WaitMemory(not_found_since=1.5, not_before=12.25)
    assert WaitMemory.from_json(json.loads(json.dumps(memory.to_json()))) == memory
    assert WaitMemory().to_json() == {"not_found_since": None, "last_seen": None}  # the shape stored before
    assert WaitMemory.from_json({"not_found_since": None, "last_seen": None}).not_before is None


# -- one declaration ----------------------------------------------------------------------------


def test_the_sensor_takes_every_wait_parameter_with_the_declared_default() -> None:
    signature = inspect.signature(AgoraRecordingQuerySensor.__init__).parameters
    for spec_field in fields(WaitSpec):
        assert spec_field.name in signature, spec_field.name
        assert signature[spec_field.name].default == (
            inspect.Parameter.empty if spec_field.name in ("resource_id", "sid") else spec_field.default
        ), spec_field.name
    for name in ("storage", "verify_in_storage", "storage_conn_id", "storage_grace_period"):
        assert signature[name].default == getattr(StorageArguments, name), name
    assert tuple(AgoraRecordingQuerySensor.template_fields) == (*WaitSpec.templated(), *StorageArguments.templated)
    task = AgoraRecordingQuerySensor(task_id="wait", resource_id=RID, sid=SID)
    assert WaitSpec.from_attributes(task) == WaitSpec.checked(resource_id=RID, sid=SID)


# What the previous release's trigger serialised (one row of Airflow's trigger table).
OLD_TRIGGER_ROW = {
    "resource_id": RID,
    "sid": SID,
    "recording_mode": "individual",
    "app_id": None,
    "agora_conn_id": "agora_default",
    "target_status": 5,
    "failure_statuses": [20],
    "not_found_grace_period": 90.0,
    "on_not_found": "succeed",
    "exit_files_grace_period": 30.0,
    "poll_interval": 7.0,
    "notification_poll_interval": None,
    "end_time": 1_900_000_000.0,
    "memory": {"not_found_since": None, "last_seen": None},
}


def test_a_trigger_row_of_the_previous_release_builds_the_same_trigger() -> None:
    trigger = AgoraRecordingQueryTrigger(**OLD_TRIGGER_ROW)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_agora.triggers.agora.AgoraRecordingQueryTrigger"
    assert kwargs == {**OLD_TRIGGER_ROW, "known_to_have_run": False}  # added since, with its default
    spec = WaitSpec.checked(**trigger.parameters)
    assert (spec.recording_mode, spec.target_status, spec.on_not_found) == ("individual", 5, "succeed")


def test_the_deferring_sensor_hands_over_every_parameter_under_its_old_name(scripted: ScriptedAgora) -> None:
    scripted.script((200, {"serverResponse": {"status": 4}}))
    with pytest.raises(TaskDeferred) as deferred:
        sensor(deferrable=True, poke_interval=7, target_status="5", not_found_grace_period="60").execute({})
    _, kwargs = deferred.value.trigger.serialize()
    assert set(kwargs) == {*OLD_TRIGGER_ROW, "known_to_have_run"}
    assert json.loads(json.dumps(kwargs)) == kwargs  # JSON primitives
    assert (kwargs["target_status"], kwargs["not_found_grace_period"], kwargs["failure_statuses"]) == (5, 60.0, [20])


def test_the_trigger_refuses_a_name_that_is_not_a_parameter() -> None:
    with pytest.raises(TypeError, match="target_statuses: not a parameter of a recording wait"):
        AgoraRecordingQueryTrigger(**{**OLD_TRIGGER_ROW, "target_statuses": 5})
    with pytest.raises(TypeError, match="a recording wait needs sid"):
        AgoraRecordingQueryTrigger(**{k: v for k, v in OLD_TRIGGER_ROW.items() if k != "sid"})


def test_the_closed_sets_are_the_ones_checked_at_run_time() -> None:
    assert get_args(RecordingMode) == RECORDING_MODES
    assert ON_NOT_FOUND_CHOICES == ("fail", "succeed")
    assert EVENT_STATUSES == ("success", "failure", "timeout", "error", "checkpoint")


def test_a_bad_notification_poll_interval_is_one_sentence(scripted: ScriptedAgora) -> None:
    scripted.script((200, bodies.QUERY_STRING))
    with pytest.raises(AirflowFailException, match=f"notification_poll_interval for recording sid={SID} must be"):
        sensor(notification_poll_interval="often").execute({})
    assert scripted.requests == []


def test_configuration_errors_fail_the_task_and_nothing_else() -> None:
    with pytest.raises(AirflowFailException, match="wrong") as failed, configuration_errors_fail_the_task():
        raise AgoraConfigurationError("wrong")
    assert isinstance(failed.value.__cause__, AgoraConfigurationError)
    with pytest.raises(AgoraServerError), configuration_errors_fail_the_task():
        raise AgoraServerError("busy", operation="query", status=503)
