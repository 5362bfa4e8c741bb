"""AgoraRecordingQueryTrigger and the sensor's deferrable mode, against the simulator."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_agora._compat import AirflowFailException, AirflowSensorTimeout, TaskDeferred
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook, AgoraSettings
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from airflow_provider_agora.simulator import AgoraSimulator
from airflow_provider_agora.triggers.agora import AgoraRecordingQueryTrigger
from tests import agora_bodies as bodies
from tests.support import (
    CUSTOMER_SECRET,
    FAST_RETRIES,
    ScriptedAgora,
    TaskStateStore,
    connection_json,
    max_in_sliding_second,
)


def start_recording(cname: str = "room1", uid: int = 4242) -> dict[str, str]:
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire(cname, uid)["resourceId"]
    sid = hook.start(
        resource_id, cname, uid, recording_mode="mix", client_request={"recordingFileConfig": {"avFileType": ["hls"]}}
    )["sid"]
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
    third_wait = trigger(end_time=deadline, memory=second["memory"])

    async def deadline_after_two_more_polls() -> None:
        await wait_until(lambda: len(scripted.requests) >= requests_so_far + 2)
        third_wait.end_time = time.time()  # the deadline passes now

    ((third,), _) = await asyncio.gather(events_of(third_wait), deadline_after_two_more_polls())
    assert third["status"] == "timeout"  # nothing new: no more checkpoints, the wait just goes on
    assert len(scripted.requests) >= requests_so_far + 2


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


class LoopTicks:
    """Counts the ticks of a coroutine on the event loop; another thread can wait for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def tick(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_for_next(self, timeout: float) -> bool:
        """Whether the loop ticked (again) within ``timeout`` seconds, which only bounds a failing test."""
        with self._changed:
            seen = self.count
            return self._changed.wait_for(lambda: self.count > seen, timeout)


class AgoraThatAnswersOnlyWhileTheLoopRuns:
    """Answers each query with status 5, but only after the event loop has ticked while the
    request was pending. A blocking call on the loop leaves it waiting for its answer, so the
    loop cannot tick: the server then answers after ``give_up`` seconds and says so."""

    def __init__(self, ticks: LoopTicks, give_up: float = 10.0) -> None:
        self.released_by_a_tick: list[bool] = []
        gated = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                gated.released_by_a_tick.append(ticks.wait_for_next(give_up))
                payload = json.dumps(bodies.QUERY_STRING).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


async def test_slow_answers_do_not_block_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocking HTTP call would hold the event loop for a whole slow answer, and every other
    trigger of the triggerer would stall with it. Here each answer is as slow as it takes the loop
    to tick while the request is pending: the loop must run meanwhile. (How long the loop does
    stall is measured in benchmarks/fairness.py.)"""
    ticks = LoopTicks()
    agora = AgoraThatAnswersOnlyWhileTheLoopRuns(ticks)
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(agora.url))
    loop_thread = threading.get_ident()
    slept_on_the_loop: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if threading.get_ident() == loop_thread:
            slept_on_the_loop.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    finished = asyncio.Event()

    async def tick_until_finished() -> None:
        while not finished.is_set():
            await asyncio.sleep(0.005)
            ticks.tick()

    ticker = asyncio.create_task(tick_until_finished())
    try:
        results = await asyncio.gather(*(events_of(trigger(target_status=5)) for _ in range(3)))
    finally:
        finished.set()
        await ticker
        agora.server.shutdown()
        agora.server.server_close()
    assert [event["status"] for (event,) in results] == ["success"] * 3
    assert agora.released_by_a_tick == [True] * 3  # the loop ran while every request was pending
    assert slept_on_the_loop == []  # and nothing put the loop's thread to sleep


def assert_served_in_turn(sids: list[str], log: list[Any]) -> None:
    """Every wait gets its k-th request before any wait gets its (k+2)-th."""
    counts = dict.fromkeys(sids, 0)
    for position, record in enumerate(log):
        sid = next(sid for sid in sids if f"/sid/{sid}/" in record.path)
        counts[sid] += 1
        behind = min(counts, key=lambda other: counts[other])
        assert counts[behind] >= counts[sid] - 2, (
            f"request {position}: {sid} got its request {counts[sid]} while {behind} has had {counts[behind]}"
        )


def connection_read_up_front(monkeypatch: pytest.MonkeyPatch) -> type[AgoraAsyncHook]:
    """Triggers whose hooks share one connection reading, made before they start: the waits then
    join the request queue together, in the order they start (a triggerer starts them over time)."""

    class HookWithTheConnectionRead(AgoraAsyncHook):
        read: AgoraSettings | None = None

        async def get_settings(self) -> AgoraSettings:
            if HookWithTheConnectionRead.read is None:
                HookWithTheConnectionRead.read = await super().get_settings()
            return HookWithTheConnectionRead.read

    monkeypatch.setattr("airflow_provider_agora.triggers.agora.AgoraAsyncHook", HookWithTheConnectionRead)
    return HookWithTheConnectionRead


async def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` on the event loop; the timeout only bounds a failing test."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


async def test_many_triggers_share_one_budget_and_are_served_in_turn(
    agora_conn: AgoraSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight waits on sessions Agora does not know (404 within the grace period: keep polling), each
    # polling as fast as it may, until Agora has answered four rounds of them.
    sids = [f"{n:032x}" for n in range(8)]
    rounds = 4
    await connection_read_up_front(monkeypatch)().get_settings()
    waits = [trigger(sid=sid, end_time=time.time() + 600, poll_interval=0, not_found_grace_period=3600) for sid in sids]

    def polls() -> list[Any]:
        return [r for r in agora_conn.request_log if r.path.endswith("/query")]

    async def end_the_waits_after_the_rounds() -> None:
        await wait_until(lambda: len(polls()) >= rounds * len(sids))
        for task in waits:
            task.end_time = time.time()  # their deadline passes now

    results, _ = await asyncio.gather(
        asyncio.gather(*(events_of(task) for task in waits)), end_the_waits_after_the_rounds()
    )
    assert [event["status"] for (event,) in results] == ["timeout"] * len(sids)
    log = polls()
    assert len(log) >= rounds * len(sids) > 10  # more than one second's budget: the limit has to act
    assert {r.status for r in log} == {404}  # never a 429
    assert max_in_sliding_second([r.time for r in log]) <= 10
    assert_served_in_turn(sids, log)


# -- the sensor's deferrable mode ---------------------------------------------------------------


def test_deferrable_sensor_pokes_once_then_defers_with_its_timeout(scripted: ScriptedAgora) -> None:
    scripted.script((200, {"serverResponse": {"status": 4}}))
    task = poke_mode(resource_id="rid", sid="abc", deferrable=True, timeout=120, poke_interval=7, target_status=5)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    after = time.time()
    assert len(scripted.requests) == 1
    assert deferred.value.method_name == "execute_complete"
    _, kwargs = deferred.value.trigger.serialize()
    assert (kwargs["poll_interval"], kwargs["target_status"]) == (7.0, 5)
    # The deadline is the sensor's timeout from the moment it ran, and the deferral lasts until it.
    assert before + 120 <= kwargs["end_time"] <= after + 120
    lasts = deferred.value.timeout.total_seconds()  # a timedelta keeps microseconds
    assert kwargs["end_time"] - after - 1e-6 <= lasts <= kwargs["end_time"] - before + 1e-6
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
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        task.execute_complete({"task_state_store": store}, event)
    after = time.time()
    _, kwargs = deferred.value.trigger.serialize()
    assert (kwargs["memory"], kwargs["end_time"]) == (memory, deadline)
    # Until the deadline (a timedelta keeps microseconds).
    assert deadline - after - 1e-6 <= deferred.value.timeout.total_seconds() <= deadline - before + 1e-6
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
