"""The fault matrix: every fault, in every sensor mode, against a real HTTP server.

Each case asserts what a user would check: how the task ends, the message they read, how many
requests reached Agora, and that the rate limit held. The README's "Failure behaviour" table is
this file in words.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from airflow_provider_agora import _settings
from airflow_provider_agora._compat import AirflowFailException, AirflowSensorTimeout, TaskDeferred
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from tests import agora_bodies as bodies
from tests.support import (
    CUSTOMER_ID,
    CUSTOMER_SECRET,
    FAST_RETRIES,
    ScriptedAgora,
    ScriptedAnswer,
    TaskStateStore,
    connection_json,
    max_in_sliding_second,
)

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
MODES = ("poke", "reschedule", "deferrable")
IN_PROGRESS = (200, {"serverResponse": {"status": 5, "fileListMode": "string", "fileList": "a.m3u8"}})
SERVICE_404 = (404, bodies.SERVICE_NOT_FOUND)
SECRETS = {
    "customer secret": CUSTOMER_SECRET,
    "basic token": base64.b64encode(f"{CUSTOMER_ID}:{CUSTOMER_SECRET}".encode()).decode(),
}


def _has_task_state_store() -> bool:
    try:
        from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401
    except ImportError:
        return False
    return True


TRIGGER_ROWS: list[str] = []


@pytest.fixture(autouse=True)
def no_secret_anywhere(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Every case, at DEBUG: no secret in logs, printed output, XCom values or serialized trigger kwargs."""
    caplog.set_level(logging.DEBUG)
    TRIGGER_ROWS.clear()
    ENDINGS.clear()
    yield
    captured = capsys.readouterr()
    places = {
        "log records": caplog.text,
        "output": captured.out + captured.err,
        "XCom values": json.dumps([ending.value for ending in ENDINGS], default=str),
        "messages": "\n".join(ending.message for ending in ENDINGS),
        "trigger rows": "\n".join(TRIGGER_ROWS),
    }
    leaks = [(name, where) for name, secret in SECRETS.items() for where, text in places.items() if secret in text]
    assert leaks == []


ENDINGS: list[Any] = []


@dataclass
class Ending:
    """How a wait ended, as Airflow would record it."""

    kind: str  # success | fail (no retry) | timeout (no retry) | error (Airflow's retries apply)
    message: str = ""
    value: Any = None


def _sensor(**kwargs: Any) -> AgoraRecordingQuerySensor:
    task = AgoraRecordingQuerySensor(task_id="wait", resource_id="rid", sid=SID, **kwargs)
    task.hook = AgoraHook(task.agora_conn_id, retry_policy=FAST_RETRIES)
    return task


def _ending(error: BaseException) -> Ending:
    if isinstance(error, AirflowSensorTimeout):
        return Ending("timeout", str(error))
    if isinstance(error, AirflowFailException):
        return Ending("fail", str(error))
    return Ending("error", str(error))


async def _only_event(trigger: Any) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


def run_wait(mode: str, **kwargs: Any) -> Ending:
    """Run the sensor to its end in one mode, the way Airflow drives that mode."""
    ending = _run_wait(mode, **kwargs)
    ENDINGS.append(ending)
    return ending


def _run_wait(mode: str, **kwargs: Any) -> Ending:
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 20)
    try:
        if mode == "poke":
            return Ending("success", value=_sensor(**kwargs).execute({}))
        if mode == "reschedule":
            # Every reschedule runs a fresh operator; only the task state store (Airflow 3.3+) remains.
            context: dict[str, Any] = {"task_state_store": TaskStateStore()} if _has_task_state_store() else {}
            started = time.monotonic()
            while True:
                result = _sensor(mode="reschedule", **kwargs).poke(context)
                if result:
                    return Ending("success", value=result.xcom_value)
                if time.monotonic() - started > kwargs["timeout"]:
                    raise AirflowSensorTimeout("Sensor has timed out (reschedule)")
                time.sleep(kwargs["poke_interval"])  # the reschedule interval
        step: Any = _sensor(deferrable=True, **kwargs).execute
        arguments: tuple[Any, ...] = ({},)
        while True:  # deferred, resumed, perhaps deferred again (checkpoints), until the end
            try:
                return Ending("success", value=step(*arguments))
            except TaskDeferred as deferred:
                TRIGGER_ROWS.append(json.dumps(deferred.trigger.serialize()))  # what the trigger table stores
                event = asyncio.run(_only_event(deferred.trigger))
                step = _sensor(deferrable=True, **kwargs).execute_complete  # a new instance resumes
                arguments = ({}, event)
    except Exception as error:
        return _ending(error)


@dataclass
class Case:
    name: str
    answers: list[Any]
    outcome: str
    words: str = ""
    requests: tuple[int, int] | None = None  # (min, max) requests that reached the server
    sensor: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # connection extra


def answers(*items: Any) -> list[Any]:
    return list(items)


CASES = [
    Case(
        "429 with Retry-After",
        answers(*[ScriptedAnswer(429, bodies.RATE_LIMITED, {"Retry-After": "1"})] * 2, IN_PROGRESS),
        "success",
        requests=(3, 3),
        sensor={"target_status": 5},
    ),
    Case(
        "429 storm without Retry-After",
        answers(*[(429, bodies.RATE_LIMITED)] * 8, IN_PROGRESS),
        "success",
        requests=(9, 9),
        sensor={"target_status": 5},
    ),
    *[
        Case(
            f"HTTP {status}",
            answers(*[(status, body)] * 2, IN_PROGRESS),
            "success",
            requests=(3, 3),
            sensor={"target_status": 5},
        )
        for status, body in (
            (500, {"code": 500, "reason": "internal_error"}),
            (502, b"<html>Bad Gateway</html>"),
            (503, {"code": 503, "reason": "unavailable"}),
            (504, {"code": 62, "reason": "request timeout"}),
        )
    ],
    Case(
        "HTTP 206 code 65",
        answers(*[(206, {"code": 65, "reason": "request not completed"})] * 2, IN_PROGRESS),
        "success",
        requests=(3, 3),
        sensor={"target_status": 5},
    ),
    Case(
        "connection reset mid-body",
        answers(*[ScriptedAnswer(200, bodies.QUERY_JSON, fault="reset")] * 2, IN_PROGRESS),
        "success",
        requests=(3, 3),
        sensor={"target_status": 5},
    ),
    Case(
        "answer stalls past the client timeout",
        answers(ScriptedAnswer(200, bodies.QUERY_JSON, fault="stall", delay=1.5), IN_PROGRESS),
        "success",
        requests=(2, 2),
        sensor={"target_status": 5},
        extra={"timeout": 0.3},
    ),
    Case(
        "5xx that never ends",
        answers((503, {"code": 503, "reason": "unavailable"})),
        "timeout",
        "timed out",
        requests=(2, 200),
        sensor={"timeout": 1.0},
    ),
    Case(
        "transient 404 shorter than the grace period",
        answers(*[SERVICE_404] * 3, IN_PROGRESS),
        "success",
        requests=(4, 4),
        sensor={"target_status": 5, "not_found_grace_period": 60},
    ),
    Case(
        "persistent service 404",
        answers(SERVICE_404),
        "fail",
        "past not_found_grace_period=0.5 s",
        requests=(2, 40),
        sensor={"not_found_grace_period": 0.5},
    ),
    Case(
        "gateway 404",
        answers((404, bodies.GATEWAY_NO_ROUTE)),
        "fail",
        "the URL, HTTP method, App ID or recording mode is wrong",
        requests=(1, 1),
        sensor={"not_found_grace_period": 60},
    ),
    Case(
        "abnormal exit (status 20)",
        answers((200, {"serverResponse": {"status": 20, "fileList": "a.m3u8", "fileListMode": "string"}})),
        "fail",
        "failure status 20 (exited abnormally). Last file list: 1 file(s): a.m3u8",
        requests=(1, 1),
    ),
    Case(
        "non-JSON body",
        answers((200, b"<html>maintenance</html>")),
        "error",
        f"recording sid={SID} with HTTP 200 but the body is not a JSON object",
        requests=(1, 1),
    ),
    Case(
        "JSON without serverResponse",
        answers((200, {"resourceId": "rid", "sid": SID})),
        "error",
        f"answer for recording sid={SID} has no serverResponse object",
        requests=(1, 1),
    ),
    Case(
        "status missing",
        answers((200, {"serverResponse": {"fileList": []}})),
        "error",
        f"recording sid={SID} has no usable serverResponse.status (missing)",
        requests=(1, 1),
    ),
    Case(
        "status as a string",
        answers((200, {"serverResponse": {"status": "5"}})),
        "success",
        requests=(1, 1),
        sensor={"target_status": 5},
    ),
    Case(
        "status not a number",
        answers((200, {"serverResponse": {"status": "running"}})),
        "error",
        "'running', not a number",
        requests=(1, 1),
    ),
    Case(
        "fileList of the wrong type",
        answers((200, {"serverResponse": {"status": 5, "fileList": {"a": 1}}})),
        "error",
        f"fileList of recording sid={SID} is a dict, not a list",
        requests=(1, 1),
    ),
    Case(
        "filename instead of fileName, booleans as strings",
        answers(
            (
                200,
                {
                    "serverResponse": {
                        "status": 5,
                        "fileList": [{"filename": "a.m3u8", "isPlayable": "true", "sliceStartTime": "1562724971626"}],
                    }
                },
            )
        ),
        "success",
        requests=(1, 1),
        sensor={"target_status": 5},
    ),
    Case(
        "huge body",
        answers(
            (
                200,
                {
                    "serverResponse": {
                        "status": 5,
                        "fileListMode": "json",
                        "fileList": [
                            {"fileName": f"slice_{n}.ts", "uid": "1", "sliceStartTime": n} for n in range(20_000)
                        ],
                    }
                },
            )
        ),
        "success",
        requests=(1, 1),
        sensor={"target_status": 5},
    ),
    Case(
        "credentials rejected",
        answers((401, bodies.BAD_CREDENTIALS)),
        "error",
        "rejected the credentials",
        requests=(1, 1),
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fault(case: Case, mode: str, scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "airflow_provider_agora.triggers.agora.AgoraAsyncHook", partial(AgoraAsyncHook, retry_policy=FAST_RETRIES)
    )
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(scripted.url, **case.extra))
    scripted.script(*case.answers)
    ending = run_wait(mode, **case.sensor)
    assert ending.kind == case.outcome, ending.message
    assert case.words in ending.message
    if case.outcome in ("fail", "error", "timeout"):
        assert f"sid={SID}" in ending.message or case.outcome == "timeout"
    if case.requests is not None:
        low, high = case.requests
        assert low <= len(scripted.requests) <= high
    assert max_in_sliding_second(scripted.times) <= 10
    if ending.kind == "success":
        assert ending.value["sid"] == SID
        assert ending.value["status"] == 5


def test_nothing_is_lost_from_a_huge_file_list(scripted: ScriptedAgora) -> None:
    (huge,) = [case for case in CASES if case.name == "huge body"]
    scripted.script(*huge.answers)
    for mode in MODES:
        ending = run_wait(mode, target_status=5)
        assert len(ending.value["files"]) == 20_000


def test_agoras_spelling_quirks_are_normalised_in_every_mode(scripted: ScriptedAgora) -> None:
    (quirks,) = [case for case in CASES if case.name.startswith("filename instead")]
    scripted.script(*quirks.answers)
    for mode in MODES:
        files = run_wait(mode, target_status=5).value["files"]
        assert files == [{"fileName": "a.m3u8", "isPlayable": True, "sliceStartTime": 1562724971626}]


@pytest.mark.parametrize("mode", MODES)
def test_connection_refused_never_fails_before_the_timeout(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "airflow_provider_agora.triggers.agora.AgoraAsyncHook", partial(AgoraAsyncHook, retry_policy=FAST_RETRIES)
    )
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(f"http://127.0.0.1:{port}"))
    ending = run_wait(mode, timeout=1.0)
    assert ending.kind == "timeout", ending.message


@pytest.mark.parametrize("mode", MODES)
def test_dns_failure_of_the_primary_domain_fails_over_to_the_second(
    mode: str, scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "airflow_provider_agora.triggers.agora.AgoraAsyncHook", partial(AgoraAsyncHook, retry_policy=FAST_RETRIES)
    )
    # Agora's two primary domains, the first of which does not resolve.
    monkeypatch.setattr(_settings, "PRIMARY_BASE_URLS", ("http://api.primary.invalid", scripted.url))
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(""))
    scripted.script(IN_PROGRESS)
    ending = run_wait(mode, target_status=5)
    assert ending.kind == "success", ending.message
    assert len(scripted.requests) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("conn", "words"),
    [
        (None, "Connection 'no_such_connection' does not exist: create an Agora Cloud Recording connection"),
        (connection_json("http://agora.example.com"), "Agora needs https, and http is only allowed for a local"),
        (json.dumps({"conn_type": "agora", "login": "id"}), "has no Customer Secret (password)"),
    ],
    ids=["missing", "plain-http", "no-secret"],
)
def test_a_bad_connection_fails_at_once_with_one_sentence(
    mode: str, conn: str | None, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if conn is None:
        ending = run_wait(mode, agora_conn_id="no_such_connection")
    else:
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", conn)
        ending = run_wait(mode)
    assert ending.kind == "fail"
    assert words in ending.message


def test_a_worker_killed_mid_wait_resumes_with_the_same_result(scripted: ScriptedAgora) -> None:
    """Poke mode on Airflow 3.3: the next try continues from the task state store."""
    if not _has_task_state_store():
        pytest.skip("Airflow < 3.3 has no task state store: a new try starts its grace clock again")
    scripted.script(IN_PROGRESS, SERVICE_404)
    store = TaskStateStore()
    killed = _sensor(on_not_found="succeed", not_found_grace_period=0.5)
    assert killed.poke({"task_state_store": store}) is False  # saw status 5
    assert killed.poke({"task_state_store": store}) is False  # first 404; then the worker dies
    time.sleep(0.5)  # the time it takes Airflow to notice and start the next try
    result = _sensor(on_not_found="succeed", not_found_grace_period=0.5).poke({"task_state_store": store})
    assert result and result.xcom_value["ended_by"] == "not_found"
    assert result.xcom_value["files"] == [{"fileName": "a.m3u8"}]
