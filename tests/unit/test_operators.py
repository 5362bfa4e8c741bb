"""Start and stop operators against the simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_agora._compat import AirflowFailException, AirflowSkipException
from airflow_provider_agora.exceptions import AgoraNotFoundError
from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.operators.agora import (
    AgoraStartRecordingOperator,
    AgoraStopRecordingOperator,
    sensitive_values,
)
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from airflow_provider_agora.simulator import AgoraSimulator
from tests import agora_bodies as bodies
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, FAST_RETRIES, ScriptedAgora, connection_json, redact

STORAGE = {
    "vendor": 1,
    "region": 0,
    "bucket": "b",
    "accessKey": "AKIA-test-access",
    "secretKey": "test-storage-secret",
    "stsToken": "test-sts-token",
}


@pytest.fixture
def slow_agora_conn(monkeypatch: pytest.MonkeyPatch) -> Iterator[AgoraSimulator]:
    """``agora_default`` pointing at a simulator at a tenth of real time: the first slice is cut
    30 s after the start, so a stop sent right after the start meets no recorded data on any machine."""
    with AgoraSimulator(
        customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,), speed=0.1
    ).start() as sim:
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(sim.url))
        yield sim


def start_task(**kwargs: Any) -> AgoraStartRecordingOperator:
    kwargs.setdefault(
        "client_request", {"storageConfig": dict(STORAGE), "recordingFileConfig": {"avFileType": ["hls"]}}
    )
    kwargs.setdefault("recording_mode", "mix")
    return AgoraStartRecordingOperator(task_id="start", cname="room1", uid=527841, **kwargs)


def stop_task(started: dict[str, Any], **kwargs: Any) -> AgoraStopRecordingOperator:
    ids = {key: started[key] for key in ("resource_id", "sid", "recording_mode", "cname", "uid")}
    return AgoraStopRecordingOperator(task_id="stop", **ids, **kwargs)


def wait_until_in_progress(started: dict[str, Any]) -> dict[str, Any]:
    ids = {key: started[key] for key in ("resource_id", "sid", "recording_mode")}
    task = AgoraRecordingQuerySensor(task_id="wait", target_status=5, poke_interval=0.05, timeout=30, **ids)
    task.hook = AgoraHook(retry_policy=FAST_RETRIES)
    return task.execute({})


def test_start_acquires_then_starts_and_returns_what_the_sensor_needs(agora_conn: AgoraSimulator) -> None:
    started = start_task().execute({})
    assert set(started) == {"resource_id", "sid", "cname", "uid", "recording_mode", "app_id", "storage"}
    # Where the files go, for the sensor's storage=: the storageConfig without its keys and token.
    assert started["storage"] == {
        "vendor": 1,
        "vendor_name": "Amazon S3",
        "region": 0,
        "bucket": "b",
        "file_name_prefix": [],
        "prefix": "",
        "uri": "s3://b/",
    }
    assert (started["cname"], started["uid"], started["recording_mode"], started["app_id"]) == (
        "room1",
        "527841",
        "mix",
        APP_ID,
    )
    calls = [r.path.rsplit("/", 1)[-1] for r in agora_conn.request_log]
    assert calls == ["acquire", "start"]
    assert wait_until_in_progress(started)["status"] == 5


def test_web_recording_acquires_with_the_web_scene(scripted: ScriptedAgora) -> None:
    scripted.script((200, {"resourceId": "rid"}), (200, {"sid": "abc"}))
    start_task(recording_mode="web").execute({})
    assert scripted.requests[0][1].endswith("/acquire")
    assert scripted.bodies[0] == {"cname": "room1", "uid": "527841", "clientRequest": {"scene": 1}}
    assert scripted.requests[1][1].endswith("/resourceid/rid/mode/web/start")


def start_attempts(simulator: AgoraSimulator) -> list[tuple[str, int, float]]:
    """(endpoint, HTTP status, arrival time) of every request, from the simulator's log."""
    return [(r.path.rsplit("/", 1)[-1], r.status, r.time) for r in simulator.request_log]


def test_start_retries_a_5xx_on_start_after_agoras_three_seconds(agora_conn: AgoraSimulator) -> None:
    """Agora's integration guide: retry a failed start after 3, 6, 9 s. The 500 hits start itself."""
    agora_conn.faults.fail_next(1, status=500, operation="start")
    started = start_task().execute({})
    attempts = start_attempts(agora_conn)
    assert [(name, status) for name, status, _ in attempts] == [("acquire", 200), ("start", 500), ("start", 200)]
    (_, _, failed_at), (_, _, retried_at) = attempts[1], attempts[2]
    assert retried_at - failed_at >= 3.0  # never sooner than Agora's first wait
    assert started["sid"]


def test_start_retries_code_65_with_the_same_request_after_three_seconds(scripted: ScriptedAgora) -> None:
    """HTTP 206 code 65: the request reached Agora and timed out there; send the same one again."""
    scripted.script(
        (200, {"resourceId": "rid"}),
        (206, {"code": 65, "reason": "request not completed"}),
        (200, {"sid": "abc"}),
    )
    assert start_task().execute({})["sid"] == "abc"
    assert [path.rsplit("/", 1)[-1] for _, path, _ in scripted.requests] == ["acquire", "start", "start"]
    assert scripted.bodies[2] == scripted.bodies[1]
    assert scripted.times[2] - scripted.times[1] >= 3.0  # Agora: retry code 65 after 3 s


def test_start_never_retries_a_4xx(scripted: ScriptedAgora) -> None:
    scripted.script((200, {"resourceId": "rid"}), (400, {"code": 53, "reason": "task conflict"}))
    with pytest.raises(Exception, match="code 53"):
        start_task().execute({})
    assert len(scripted.requests) == 2


def test_storage_credentials_are_masked_once_rendered(agora_conn: AgoraSimulator) -> None:
    task = start_task()
    task.render_template_fields({})
    rendered = redact(task.client_request)
    for key in ("accessKey", "secretKey", "stsToken"):
        assert rendered["storageConfig"][key] == "***"
    assert sorted(sensitive_values({"a": [{"token": "t1"}], "storageConfig": STORAGE})) == sorted(
        ["t1", "AKIA-test-access", "test-storage-secret", "test-sts-token"]
    )


def test_templated_storage_credentials_are_masked_once_rendered(agora_conn: AgoraSimulator) -> None:
    """Values known only after rendering (from a connection or params) are masked too, not just literals.

    Airflow's redactor masks ``secretKey`` and ``stsToken`` by their key names on its own; ``accessKey``
    and a key inside a log line are masked only because the operator registers the rendered values.
    """
    storage = {**STORAGE, "accessKey": "{{ params.access }}", "secretKey": "{{ params.secret }}"}
    task = start_task(client_request={"storageConfig": storage})
    task.render_template_fields({"params": {"access": "AKIA-rendered-access", "secret": "rendered-secret"}})
    assert task.client_request["storageConfig"]["accessKey"] == "AKIA-rendered-access"
    assert redact(task.client_request)["storageConfig"]["accessKey"] == "***"
    assert redact("uploading with AKIA-rendered-access and rendered-secret") == "uploading with *** and ***"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"recording_mode": "composite"}, "recording_mode 'composite'"),
        ({"uid": 0}, "uid 0"),
        ({"cname": ""}, "cname"),
        ({"client_request": "not a dict"}, "client_request for channel 'room1' must be a dict"),
    ],
)
def test_start_bad_input_fails_with_one_sentence(agora_conn: AgoraSimulator, kwargs: dict, words: str) -> None:
    params = {"cname": "room1", "uid": 527841, "recording_mode": "mix", "client_request": {}, **kwargs}
    task = AgoraStartRecordingOperator(task_id="start", **params)
    with pytest.raises(AirflowFailException, match=words):
        task.execute({})
    assert agora_conn.request_log == []


def test_stop_returns_the_final_file_list(agora_conn: AgoraSimulator) -> None:
    started = start_task().execute({})
    wait_until_in_progress(started)
    result = stop_task(started).execute({})
    assert result["ended_by"] == "stop"
    assert result["uploading_status"] == "uploaded"
    assert [f["fileName"] for f in result["files"]] == [f"{started['sid']}_room1.m3u8"]
    assert set(result) == {
        "resource_id",
        "sid",
        "recording_mode",
        "status",
        "ended_by",
        "files",
        "server_response",
        "uploading_status",
    }


@pytest.mark.parametrize(
    ("choice", "outcome"),
    [("skip", AirflowSkipException), ("fail", AirflowFailException), ("succeed", None)],
)
def test_stop_with_nobody_publishing_is_a_configurable_outcome(
    slow_agora_conn: AgoraSimulator, choice: str, outcome: type | None
) -> None:
    started = start_task().execute({})  # stopped well within the 30 s before the first slice
    task = stop_task(started, on_no_recorded_data=choice)
    if outcome is None:
        result = task.execute({})
        assert result["files"] == []
    else:
        with pytest.raises(outcome, match="no recorded data"):
            task.execute({})


def wait_until_gone(started: dict[str, Any], timeout: float = 30.0) -> None:
    """Poll ``query`` until Agora answers 404 (the worker is gone), failing after ``timeout`` seconds."""
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    deadline = time.monotonic() + timeout
    while True:
        try:
            hook.query(started["resource_id"], started["sid"], recording_mode=started["recording_mode"])
        except AgoraNotFoundError:
            return
        assert time.monotonic() < deadline, "the recording was never gone"
        time.sleep(0.05)


def test_stop_of_a_session_already_gone_is_reported_plainly(agora_conn: AgoraSimulator) -> None:
    started = start_task().execute({})
    wait_until_in_progress(started)
    stop_task(started).execute({})
    wait_until_gone(started)  # past the 6-7-8 tail: the next stop is a 404, never a code 49
    with pytest.raises(AirflowFailException, match=r"was already gone \(HTTP 404\) when it was asked to stop"):
        stop_task(started).execute({})
    result = stop_task(started, on_already_stopped="succeed").execute({})
    assert result["ended_by"] == "already_stopped"


def test_stop_of_a_session_already_exiting_is_reported_plainly(agora_conn: AgoraSimulator) -> None:
    # Held at its exit status for an hour (simulated) after a stop: the second stop meets the exit
    # (code 49) however slow the machine, never the 404 that follows it.
    (created,) = agora_conn.create_recordings([time.time() + 3600], hold=3600)
    sid = created["sid"]
    started = {"resource_id": created["resource_id"], "sid": sid, "recording_mode": "mix"}
    started |= {"cname": f"bulk_{sid}", "uid": "1"}  # each bulk recording has a channel of its own
    assert stop_task(started).execute({})["ended_by"] == "stop"
    with pytest.raises(AirflowFailException, match=r"was already exiting \(code 49\) when it was asked to stop"):
        stop_task(started).execute({})
    result = stop_task(started, on_already_stopped="succeed").execute({})
    assert result["ended_by"] == "already_stopped"


def test_stop_code_49_keeps_the_file_list_agora_returned(scripted: ScriptedAgora) -> None:
    scripted.script((400, bodies.STOP_CODE_49))
    started = {"resource_id": "rid", "sid": "2354cf898b41b76d70850ba58b9b9ffb", "recording_mode": "mix"}
    result = stop_task({**started, "cname": "123456", "uid": "10002"}, on_already_stopped="succeed").execute({})
    assert result["files"] == [{"fileName": "quickstart/2354cf898b41b76d70850ba58b9b9ffb_123456.m3u8"}]


def test_operators_are_templated() -> None:
    assert {"cname", "uid", "recording_mode", "client_request", "app_id"} <= set(
        AgoraStartRecordingOperator.template_fields
    )
    assert {"resource_id", "sid", "recording_mode", "cname", "uid"} <= set(AgoraStopRecordingOperator.template_fields)
