"""AgoraRecordingQuerySensor against real HTTP servers: the simulator and a scripted Agora."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_agora._compat import AirflowFailException, AirflowSensorTimeout
from airflow_provider_agora.exceptions import AgoraAuthenticationError
from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.sensors.agora import MEMORY_KEY, AgoraRecordingQuerySensor
from airflow_provider_agora.simulator import AgoraSimulator
from tests import agora_bodies as bodies
from tests.support import FAST_RETRIES, ScriptedAgora, TaskStateStore, max_in_sliding_second

XCOM_KEYS = {"resource_id", "sid", "recording_mode", "status", "ended_by", "files", "server_response"}
RID = "JyvK8nXHuV1BE64GDkAaBGEscvtHW7v8"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


def start_recording(mode: str = "mix", client_request: dict | None = None, cname: str = "room1") -> dict[str, str]:
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire(cname, 4242)["resourceId"]
    request = client_request if client_request is not None else {"recordingFileConfig": {"avFileType": ["hls"]}}
    sid = hook.start(resource_id, cname, 4242, recording_mode=mode, client_request=request)["sid"]
    return {"resource_id": resource_id, "sid": sid, "recording_mode": mode, "cname": cname}


def sensor(**kwargs: Any) -> AgoraRecordingQuerySensor:
    kwargs.setdefault("resource_id", RID)
    kwargs.setdefault("sid", SID)
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    kwargs.pop("cname", None)
    task = AgoraRecordingQuerySensor(task_id="wait", **kwargs)
    task.hook = AgoraHook(retry_policy=FAST_RETRIES)  # replaces the cached property: fast retries
    return task


def api_requests(sim: AgoraSimulator) -> list:
    return [r for r in sim.request_log if "/cloud_recording/" in r.path]


def running_recording(
    sim: AgoraSimulator, *, hold: float, mode: str = "mix", client_request: dict | None = None
) -> dict:
    """A recording already in progress with files (status 5), made without API requests. Once it is
    stopped it shows 6, 7 and 8 for ``hold`` simulated seconds in all (8 from the 2nd on), then is gone."""
    (created,) = sim.create_recordings([time.time() + 3600], hold=hold, mode=mode, client_request=client_request)
    return {"resource_id": created["resource_id"], "sid": created["sid"], "recording_mode": mode}


def stop(recording: dict) -> None:
    """Stop a recording made by ``running_recording`` (its channel is ``bulk_<sid>``, its recorder uid 1)."""
    rid, sid, mode = recording["resource_id"], recording["sid"], recording["recording_mode"]
    AgoraHook(retry_policy=FAST_RETRIES).stop(rid, sid, f"bulk_{sid}", 1, recording_mode=mode)


def when_queried(sim: AgoraSimulator, sid: str, status: int, then: Callable[[], object]) -> threading.Thread:
    """In a thread: as soon as the simulator has answered a query of ``sid`` with ``status``, call ``then``."""

    def watch() -> None:
        deadline = time.monotonic() + 30  # only bounds a failing test
        while not any(
            f"/sid/{sid}/" in r.path and r.path.endswith("/query") and r.status == status for r in sim.request_log
        ):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        then()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


# -- success ------------------------------------------------------------------------------------


def test_waits_for_in_progress_and_returns_the_file_list(agora_conn: AgoraSimulator) -> None:
    recording = start_recording("mix")
    result = sensor(**recording, target_status=5).execute({})
    assert set(result) == XCOM_KEYS
    assert (result["status"], result["ended_by"], result["sid"]) == (5, "status", recording["sid"])
    assert result["files"][0]["fileName"] == f"{recording['sid']}_room1.m3u8"
    assert result["server_response"]["fileListMode"] == "string"


def test_waits_for_the_end_after_stop(agora_conn: AgoraSimulator) -> None:
    # Status 8 is held for an hour (simulated) after the stop, so "exited" is the only possible end.
    recording = running_recording(
        agora_conn,
        hold=3600,
        mode="individual",
        client_request={"recordingConfig": {"subscribeAudioUids": ["7"], "subscribeVideoUids": ["7"]}},
    )
    stop(recording)
    result = sensor(**recording, target_status=8, not_found_grace_period=0).execute({})
    assert (result["status"], result["ended_by"]) == (8, "status")
    assert sorted((f["uid"], f["trackType"]) for f in result["files"]) == [("7", "audio"), ("7", "video")]


@pytest.mark.parametrize(
    ("body", "mode", "target", "files"),
    [
        (bodies.QUERY_JSON, "individual", 5, bodies.QUERY_JSON["serverResponse"]["fileList"]),
        (bodies.QUERY_STRING, "mix", 5, [{"fileName": "zzzz.m3u8", "sliceStartTime": 1606357122528}]),
        (bodies.QUERY_WEB, "web", 0, [{"fileName": "xxx.m3u8", "sliceStartTime": 0}]),
    ],
    ids=["json", "string", "web"],
)
def test_agoras_three_documented_query_examples(
    scripted: ScriptedAgora, body: dict, mode: str, target: int, files: list
) -> None:
    scripted.script((200, body))
    result = sensor(recording_mode=mode, target_status=target).execute({})
    assert result["files"] == files
    assert result["server_response"] == body["serverResponse"]
    method, path, _headers = scripted.requests[-1]
    assert (method, path.endswith(f"/sid/{SID}/mode/{mode}/query")) == ("GET", True)


def test_statuses_below_the_target_keep_waiting(scripted: ScriptedAgora) -> None:
    answers = [(200, {"serverResponse": {"status": s}}) for s in (0, 1, 2, 3, 4, 5, 6, 7)]
    scripted.script(*answers)
    result = sensor(target_status=7).execute({})
    assert result["status"] == 7
    assert len(scripted.requests) == 8


# -- failure ------------------------------------------------------------------------------------


def test_abnormal_exit_fails_without_retry_naming_status_and_files(agora_conn: AgoraSimulator) -> None:
    recording = start_recording("mix")
    sensor(**recording, target_status=5).execute({})
    agora_conn.faults.abnormal_exit(recording["sid"])
    with pytest.raises(AirflowFailException) as raised:
        sensor(**recording).execute({})
    message = str(raised.value)
    assert "failure status 20 (exited abnormally)" in message
    assert f"{recording['sid']}_room1.m3u8" in message


def test_persistent_404_fails_only_after_the_grace_period(agora_conn: AgoraSimulator) -> None:
    task = sensor(sid="0" * 32, not_found_grace_period=1.0, poke_interval=0.2)
    started = time.monotonic()
    with pytest.raises(AirflowFailException, match="past not_found_grace_period=1 s") as raised:
        task.execute({})
    assert time.monotonic() - started >= 1.0  # a lower bound the grace rule sets: load cannot break it
    assert "never seen running" in str(raised.value)
    statuses = [r.status for r in api_requests(agora_conn)]
    # The first 404 only starts the clock; how many pokes fit in the second depends on the machine.
    assert len(statuses) >= 2 and set(statuses) == {404}


def test_zero_grace_fails_on_the_first_404(agora_conn: AgoraSimulator) -> None:
    with pytest.raises(AirflowFailException, match="HTTP 404"):
        sensor(sid="0" * 32, not_found_grace_period=0).execute({})
    assert len(api_requests(agora_conn)) == 1


def test_transient_404_shorter_than_the_grace_period_is_survived(agora_conn: AgoraSimulator) -> None:
    recording = running_recording(agora_conn, hold=3600)
    sid = recording["sid"]
    agora_conn.faults.transient_not_found(sid, duration=36_000)  # fail-over: 404 until lifted
    # The fail-over ends once the sensor has met its 404 (duration 0 lifts it).
    lifter = when_queried(agora_conn, sid, 404, lambda: agora_conn.faults.transient_not_found(sid, duration=0))
    result = sensor(**recording, target_status=5, not_found_grace_period=600).execute({})
    lifter.join(30)
    assert (result["status"], result["ended_by"]) == (5, "status")
    statuses = [r.status for r in api_requests(agora_conn)]
    assert statuses == [404] * (len(statuses) - 1) + [200] and len(statuses) >= 2


def test_gateway_404_fails_at_once_with_a_hint(scripted: ScriptedAgora) -> None:
    scripted.script((404, bodies.GATEWAY_NO_ROUTE))
    with pytest.raises(AirflowFailException, match="URL, HTTP method, App ID or recording mode is wrong"):
        sensor(not_found_grace_period=60).execute({})
    assert len(scripted.requests) == 1


def test_on_not_found_succeed_returns_the_last_files_seen(agora_conn: AgoraSimulator) -> None:
    # Agora often answers a recording that ended normally with 404 instead of 8: this one shows 6
    # for half a simulated second after its stop, then is gone, so status 8 can never be reached.
    recording = running_recording(agora_conn, hold=0.5)
    sid = recording["sid"]
    task = sensor(**recording, target_status=8, on_not_found="succeed", not_found_grace_period=0.5, poke_interval=0.1)
    stopper = when_queried(agora_conn, sid, 200, lambda: stop(recording))  # stopped once the sensor saw it
    result = task.execute({})  # the sensor runs in the main thread, as Airflow runs it
    stopper.join(30)
    assert result["ended_by"] == "not_found"
    assert [f["fileName"] for f in result["files"]] == [f"{sid}_bulk_{sid}.m3u8"]
    queries = [r.status for r in api_requests(agora_conn) if r.path.endswith("/query")]
    assert queries[-1] == 404 and queries[0] == 200  # seen running first, gone at the end


def test_on_not_found_succeed_marks_the_result(scripted: ScriptedAgora) -> None:
    scripted.script((200, bodies.QUERY_STRING), (404, bodies.SERVICE_NOT_FOUND))
    result = sensor(on_not_found="succeed", not_found_grace_period=0.2).execute({})
    assert result["ended_by"] == "not_found"
    assert result["status"] == 5
    assert result["files"] == [{"fileName": "zzzz.m3u8", "sliceStartTime": 1606357122528}]


def test_on_not_found_succeed_still_fails_a_session_never_seen(scripted: ScriptedAgora) -> None:
    scripted.script((404, bodies.SERVICE_NOT_FOUND))
    with pytest.raises(AirflowFailException, match="never seen running"):
        sensor(on_not_found="succeed", not_found_grace_period=0.2).execute({})


def test_a_recording_an_upstream_task_stopped_ends_on_a_lasting_404_without_being_seen(
    scripted: ScriptedAgora,
) -> None:
    """Agora may answer 404 at once after a stop: with known_to_have_run that is the end, not a typo."""
    scripted.script((404, bodies.SERVICE_NOT_FOUND))
    result = sensor(on_not_found="succeed", not_found_grace_period=0.2, known_to_have_run=True).execute({})
    assert (result["ended_by"], result["status"], result["files"]) == ("not_found", None, [])


def test_known_to_have_run_must_be_a_boolean(scripted: ScriptedAgora) -> None:
    with pytest.raises(AirflowFailException, match=r"known_to_have_run for recording sid=\S+ must be True or False"):
        sensor(known_to_have_run="yes").execute({})


# -- transient errors ---------------------------------------------------------------------------


def test_bursts_of_429_and_5xx_are_survived(agora_conn: AgoraSimulator) -> None:
    recording = start_recording("mix")
    agora_conn.clear_request_log()
    agora_conn.faults.throttle_next(3, retry_after=None)
    agora_conn.faults.fail_next(2, status=502)
    result = sensor(**recording, target_status=5).execute({})
    assert result["status"] == 5
    statuses = [r.status for r in api_requests(agora_conn)]
    assert statuses[:5] == [429, 429, 429, 502, 502]


def test_persistent_transient_errors_end_in_the_sensor_timeout_not_a_failure(agora_conn: AgoraSimulator) -> None:
    recording = start_recording("mix")
    agora_conn.faults.fail_next(10_000, status=503)
    with pytest.raises(AirflowSensorTimeout):
        sensor(**recording, timeout=0.5, poke_interval=0.1).execute({})


def test_concurrent_sensors_stay_within_ten_requests_per_second(agora_conn: AgoraSimulator) -> None:
    """Four sensors in four threads of one worker process, poking as fast as they may."""
    recordings = [running_recording(agora_conn, hold=3600) for _ in range(4)]
    tasks = [sensor(**r, target_status=8) for r in recordings]
    pokes_each = 4  # 16 requests: more than Agora's 10 per second, so the limit has to act
    outcomes: list[object] = []

    def keep_poking(task: AgoraRecordingQuerySensor) -> None:
        outcomes.extend(task.poke({}) for _ in range(pokes_each))

    threads = [threading.Thread(target=keep_poking, args=(t,)) for t in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == [False] * 4 * pokes_each  # at status 5, waiting for 8
    log = api_requests(agora_conn)
    assert len(log) == 4 * pokes_each > 10  # one query per poke (no 429 to retry), enough to fill a second
    assert {r.status for r in log} == {200}
    assert max_in_sliding_second([r.time for r in log]) <= 10


# -- one poke, one query; the hook is reused ----------------------------------------------------


def test_every_poke_of_a_run_uses_one_hook_one_connection_lookup_and_one_tcp_connection(
    agora_conn: AgoraSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording = running_recording(agora_conn, hold=3600)
    lookups: list[str] = []
    original = AgoraHook.get_connection
    monkeypatch.setattr(AgoraHook, "get_connection", classmethod(lambda cls, c: lookups.append(c) or original(c)))
    task = AgoraRecordingQuerySensor(task_id="wait", **recording, target_status=8)  # makes its own hook
    hooks = []
    for _ in range(3):
        assert task.poke({}) is False
        hooks.append(task.hook)
    log = api_requests(agora_conn)
    assert [(r.method, r.path.rsplit("/", 1)[-1], r.status) for r in log] == [("GET", "query", 200)] * 3
    assert lookups == ["agora_default"]
    assert len({r.client_port for r in log}) == 1  # one keep-alive session: every poke on one TCP connection
    assert all(hook is hooks[0] for hook in hooks)


# -- reschedule mode: the 404 grace clock lives in the task state store -------------------------


def test_reschedule_keeps_the_grace_clock_between_pokes(scripted: ScriptedAgora) -> None:
    scripted.script((200, bodies.QUERY_STRING), (404, bodies.SERVICE_NOT_FOUND))
    store = TaskStateStore()
    context = {"task_state_store": store}

    def fresh_poke() -> Any:  # every reschedule runs a new operator instance
        return sensor(mode="reschedule", not_found_grace_period=0.3).poke(context)

    assert fresh_poke() is False  # status 5, target 8
    assert store.values[MEMORY_KEY]["last_seen"]["status"] == 5
    assert fresh_poke() is False  # first 404: the grace clock starts
    since = store.values[MEMORY_KEY]["not_found_since"]
    assert since is not None
    time.sleep(0.35)  # the reschedule interval, during which nothing runs
    with pytest.raises(AirflowFailException, match="last seen at status 5"):
        fresh_poke()
    assert MEMORY_KEY not in store.values


def test_reschedule_without_a_state_store_waits_out_the_grace_period_in_the_poke(scripted: ScriptedAgora) -> None:
    scripted.script((404, bodies.SERVICE_NOT_FOUND), (404, bodies.SERVICE_NOT_FOUND), (200, bodies.QUERY_STRING))
    task = sensor(mode="reschedule", target_status=5, not_found_grace_period=600, poke_interval=0.05)
    result = task.poke({})
    assert result and result.xcom_value["status"] == 5
    assert len(scripted.requests) == 3


class RecordingStateStore(TaskStateStore):
    """The task state store, keeping a copy of every value the sensor stored."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: list[dict[str, Any]] = []

    def set(self, key: str, value: Any) -> None:
        super().set(key, value)
        self.stored.append(self.values[key])


@pytest.mark.parametrize(
    ("failing_answer", "timeout", "raised"),
    [
        ((401, bodies.BAD_CREDENTIALS), 30, AgoraAuthenticationError),  # an error the wait has no rule for
        ((404, bodies.SERVICE_NOT_FOUND), 0.3, AirflowSensorTimeout),  # the sensor's timeout
    ],
    ids=["error", "sensor-timeout"],
)
def test_a_try_that_fails_leaves_no_404_clock_for_the_retry(
    scripted: ScriptedAgora, failing_answer: tuple[int, Any], timeout: float, raised: type[Exception]
) -> None:
    store = RecordingStateStore()
    context = {"task_state_store": store}
    task = sensor(target_status=5, not_found_grace_period=600, timeout=timeout)

    # Try 1 meets a 404 (its grace clock starts and is stored), then fails.
    scripted.script((404, bodies.SERVICE_NOT_FOUND), failing_answer)
    with pytest.raises(raised):
        task.execute(context)
    first_clock = store.stored[0]["not_found_since"]
    assert first_clock is not None
    assert MEMORY_KEY not in store.values  # forgotten with the failed try

    # Try 2 (a retry: the same task and store) meets a 404 too: its clock must start anew.
    store.stored.clear()
    scripted.script((404, bodies.SERVICE_NOT_FOUND), (200, bodies.QUERY_STRING))
    result = task.execute(context)
    assert result["status"] == 5
    retry_clock = store.stored[0]["not_found_since"]
    assert retry_clock is not None and retry_clock > first_clock
    assert MEMORY_KEY not in store.values


# -- bad input: one sentence, at run time, no request -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"target_status": 9}, "target_status 9 for recording sid=" + SID + " is not on Agora's 0-8 lifecycle"),
        ({"target_status": 20}, "target_status 20 for recording sid=" + SID + " is not on Agora's 0-8 lifecycle"),
        ({"target_status": 5, "failure_statuses": [5, 20]}, "is also in failure_statuses"),
        ({"target_status": "eight"}, "target_status 'eight' for recording sid="),
        ({"failure_statuses": 20}, "must be a list of status numbers"),
        ({"recording_mode": "composite"}, f"recording_mode 'composite' for recording sid={SID} is not valid"),
        ({"sid": ""}, "sid for the recording must be a non-empty string"),
        ({"resource_id": None}, f"resource_id for recording sid={SID} must be a non-empty string"),
        ({"on_not_found": "ignore"}, "on_not_found 'ignore'"),
        ({"not_found_grace_period": -1}, "not_found_grace_period"),
    ],
)
def test_bad_parameters_fail_at_run_time_with_one_sentence(scripted: ScriptedAgora, kwargs: dict, words: str) -> None:
    scripted.script((200, bodies.QUERY_STRING))
    task = sensor(**kwargs)  # constructing never fails: values may be templates
    with pytest.raises(AirflowFailException, match=words.replace("(", r"\(").replace(")", r"\)")):
        task.execute({})
    assert scripted.requests == []


def test_templated_fields() -> None:
    assert set(AgoraRecordingQuerySensor.template_fields) == {
        "resource_id",
        "sid",
        "recording_mode",
        "app_id",
        "agora_conn_id",
        "target_status",
        "not_found_grace_period",
        "on_not_found",
        "exit_files_grace_period",
        "storage",
        "storage_conn_id",
        "storage_grace_period",
    }


def test_numbers_rendered_by_jinja_are_accepted(scripted: ScriptedAgora) -> None:
    scripted.script((200, bodies.QUERY_STRING))
    result = sensor(target_status="5", not_found_grace_period="90").execute({})
    assert result["status"] == 5
