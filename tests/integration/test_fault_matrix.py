"""The fault matrix: every fault, in every sensor mode, against a real HTTP server.

Each case runs in poke, reschedule and deferrable mode, each driven the way Airflow drives it, and
asserts what a user would check:
- how the task ends, and the message they read;
- how many requests reached Agora;
- the XCom value, which is the same in the three modes (Airflow < 3.3 has no task state store, and
  the few cases where that changes how a mode ends say so);
- the waits: a retry after a 429 is never sooner than its ``Retry-After`` (as Agora saw the requests
  arrive), every retry wait the hook planned is within the retry policy's cap and the 60 s
  ``Retry-After`` cap, a persistent 404 ends no earlier than the grace period after the first 404,
  and a wait that never ends no earlier than the sensor's ``timeout``;
- the rate limit, in the cases that send more than ten requests (the others say it does not apply);
- on Airflow 3.3, that the task state store is empty once the try has ended.

The README's "Failure behaviour" table is this file in words.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_agora import _settings
from airflow_provider_agora._compat import (
    AirflowFailException,
    AirflowSensorTimeout,
)
from airflow_provider_agora.exceptions import AgoraRateLimitError
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook, RetryPolicy
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from airflow_provider_agora.testing import reset_process_state
from tests import agora_bodies as bodies
from tests.integration.sensor_modes import (
    MODE_ARGUMENTS,
    RUNNERS,
    TRIGGER_ROWS,
    StillRescheduling,
)
from tests.support import (
    CUSTOMER_ID,
    CUSTOMER_SECRET,
    FAST_RETRIES,
    ScriptedAgora,
    ScriptedAnswer,
    TaskStateStore,
    connection_json,
    free_port,
    max_in_sliding_second,
)

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
MODES = ("poke", "reschedule", "deferrable")
IN_PROGRESS = (200, {"serverResponse": {"status": 5, "fileListMode": "string", "fileList": "a.m3u8"}})
SERVICE_404 = (404, bodies.SERVICE_NOT_FOUND)
NEVER_SEEN = "It was never seen running by this task"
# The XCom value of a recording answered with IN_PROGRESS, reached by its status.
CLEAN = {
    "resource_id": "rid",
    "sid": SID,
    "recording_mode": "mix",
    "status": 5,
    "ended_by": "status",
    "files": [{"fileName": "a.m3u8"}],
    "server_response": IN_PROGRESS[1]["serverResponse"],
}
SECRETS = {
    "customer secret": CUSTOMER_SECRET,
    "basic token": base64.b64encode(f"{CUSTOMER_ID}:{CUSTOMER_SECRET}".encode()).decode(),
}
# The README's numbers, written out here rather than imported from the code under test.
RETRY_AFTER_CAP = 60.0
RATE_LIMIT = 10


def _has_task_state_store() -> bool:
    try:
        from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401
    except ImportError:
        return False
    return True


HAS_TASK_STATE_STORE = _has_task_state_store()


class PlannedSleeps(RetryPolicy):
    """FAST_RETRIES, except that each wait is planned and logged, not slept.

    Only for a ``Retry-After`` beyond the 60 s cap: the hook's own log line says how long it would
    wait, and the matrix does not spend a minute per mode on it.
    """

    def retrying(self, log: logging.Logger) -> Any:
        return super().retrying(log).copy(sleep=lambda seconds: None)

    def async_retrying(self, log: logging.Logger) -> Any:
        async def no_sleep(seconds: float) -> None:
            return None

        return super().async_retrying(log).copy(sleep=no_sleep)


PLANNED_SLEEPS = PlannedSleeps(**asdict(FAST_RETRIES))
# The retry policy's log line before each wait; its last argument is the wait it planned.
RETRY_LOG_LINE = "Attempt %d of %d failed: %s Retrying in %.1f s."

ENDINGS: list[Any] = []


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


# -- running a wait the way Airflow runs each mode ----------------------------------------------------


@dataclass
class Ending:
    """How a try ended, as Airflow would record it."""

    # success | fail (no retry) | timeout (no retry) | error (Airflow's retries apply)
    # | up_for_reschedule (still rescheduled long after the timeout: never a right answer)
    kind: str
    message: str = ""
    value: Any = None  # the XCom return value


def _sensor(policy: RetryPolicy, **kwargs: Any) -> AgoraRecordingQuerySensor:
    task = AgoraRecordingQuerySensor(task_id="wait", resource_id="rid", sid=SID, **kwargs)
    task.hook = AgoraHook(task.agora_conn_id, retry_policy=policy)
    return task


def _ending(error: BaseException) -> Ending:
    if isinstance(error, AirflowSensorTimeout):
        return Ending("timeout", str(error))
    if isinstance(error, AirflowFailException):
        return Ending("fail", str(error))
    if isinstance(error, StillRescheduling):
        return Ending("up_for_reschedule", str(error))
    return Ending("error", str(error))


# -- the cases ------------------------------------------------------------------------------------

Connect = Callable[[ScriptedAgora, pytest.MonkeyPatch], None]


def _refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # a loopback port nobody listens on


def to_refused_port(scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(_refused_url()))


def first_domain(unreachable: Callable[[], str]) -> Connect:
    """No host: Agora's two primary domains, the first of which cannot be reached."""

    def connect(scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_settings, "PRIMARY_BASE_URLS", (unreachable(), scripted.url))
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(""))

    return connect


def to_connection(value: str) -> Connect:
    def connect(scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", value)

    return connect


@dataclass
class Case:
    name: str
    answers: list[Any]
    outcome: str
    words: str = ""
    requests: tuple[int, int | None] = (1, 1)  # (min, max) requests that reached the server; None: no max
    sensor: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # extra of the connection to the scripted server
    connect: Connect | None = None  # another connection than the scripted server's
    policy: RetryPolicy = FAST_RETRIES
    xcom: dict[str, Any] | None = None  # success: the XCom value's keys and values
    # More than RATE_LIMIT requests reach the server, so "never more than 10 in a second" is tested.
    # The other cases send at most 10 requests, and the matrix says the rate does not apply to them.
    rate_applies: bool = False
    # Ends (fails, or succeeds with on_not_found="succeed") by a 404 that outlasted the grace period.
    ends_after_grace: bool = False
    # A first try sees the recording running, and its worker is killed; a second try runs to the end.
    worker_killed: bool = False
    # A failure's message names the recording (a connection's problem is not the recording's).
    names_recording: bool = True
    # Where Airflow < 3.3 (no task state store) ends differently: mode -> (outcome, words).
    without_task_state_store: dict[str, tuple[str, str]] = field(default_factory=dict)

    def expected(self, mode: str) -> tuple[str, str]:
        if not HAS_TASK_STATE_STORE and mode in self.without_task_state_store:
            return self.without_task_state_store[mode]
        return self.outcome, self.words


def answers(*items: Any) -> list[Any]:
    return list(items)


CASES = [
    Case(
        "429 with Retry-After",
        answers(*[ScriptedAnswer(429, bodies.RATE_LIMITED, {"Retry-After": "1"})] * 2, IN_PROGRESS),
        "success",
        requests=(3, 3),
        sensor={"target_status": 5},
        xcom=CLEAN,
    ),
    Case(
        "429 with Retry-After beyond the 60 s cap",
        answers(ScriptedAnswer(429, bodies.RATE_LIMITED, {"Retry-After": "3600"}), IN_PROGRESS),
        "success",
        requests=(2, 2),
        sensor={"target_status": 5},
        policy=PLANNED_SLEEPS,
        xcom=CLEAN,
    ),
    Case(
        "429 storm without Retry-After",
        answers(*[(429, bodies.RATE_LIMITED)] * 12, IN_PROGRESS),  # outlasts two pokes' retries
        "success",
        requests=(13, 13),
        sensor={"target_status": 5},
        xcom=CLEAN,
        rate_applies=True,
    ),
    *[
        Case(
            f"HTTP {status}",
            answers(*[(status, body)] * 2, IN_PROGRESS),
            "success",
            requests=(3, 3),
            sensor={"target_status": 5},
            xcom=CLEAN,
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
        xcom=CLEAN,
    ),
    Case(
        "connection reset mid-body",
        answers(*[ScriptedAnswer(200, bodies.QUERY_JSON, fault="reset")] * 2, IN_PROGRESS),
        "success",
        requests=(3, 3),
        sensor={"target_status": 5},
        xcom=CLEAN,
    ),
    Case(
        "answer stalls past the client timeout",
        answers(ScriptedAnswer(200, bodies.QUERY_JSON, fault="stall", delay=1.5), IN_PROGRESS),
        "success",
        requests=(2, 2),
        sensor={"target_status": 5},
        extra={"timeout": 0.3},
        xcom=CLEAN,
    ),
    Case(
        "connection refused by the first domain",
        answers(IN_PROGRESS),
        "success",
        requests=(1, 1),
        sensor={"target_status": 5},
        connect=first_domain(_refused_url),
        xcom=CLEAN,
    ),
    Case(
        "DNS failure of the first domain",
        answers(IN_PROGRESS),
        "success",
        requests=(1, 1),
        sensor={"target_status": 5},
        connect=first_domain(lambda: "http://api.primary.invalid"),
        xcom=CLEAN,
    ),
    Case(
        "5xx that never ends",
        answers((503, {"code": 503, "reason": "unavailable"})),
        "timeout",
        "Sensor has timed out",
        requests=(RATE_LIMIT + 1, None),
        sensor={"timeout": 2.5},
        rate_applies=True,
    ),
    Case(
        "connection refused that never ends",
        answers(IN_PROGRESS),
        "timeout",
        "Sensor has timed out",
        requests=(0, 0),
        sensor={"timeout": 1.0},
        connect=to_refused_port,
    ),
    Case(
        "transient 404 shorter than the grace period",
        answers(*[SERVICE_404] * 3, IN_PROGRESS),
        "success",
        requests=(4, 4),
        sensor={"target_status": 5, "not_found_grace_period": 60},
        xcom=CLEAN,
    ),
    Case(
        "persistent service 404, never seen running",
        answers(SERVICE_404),
        "fail",
        f"past not_found_grace_period=0.5 s: it has ended, never started, or resource_id/sid/recording_mode "
        f"are wrong. {NEVER_SEEN}.",
        requests=(2, None),
        sensor={"not_found_grace_period": 0.5},
        ends_after_grace=True,
    ),
    Case(
        "persistent service 404 after the recording was seen running",
        answers(IN_PROGRESS, SERVICE_404),
        "fail",
        "past not_found_grace_period=0.5 s: it has ended, never started, or resource_id/sid/recording_mode "
        "are wrong. It was last seen at status 5 (in progress) with 1 file(s): a.m3u8.",
        requests=(3, None),
        sensor={"not_found_grace_period": 0.5},
        ends_after_grace=True,
        # Nothing outlives a reschedule: the poke that meets the 404 never saw the recording.
        without_task_state_store={"reschedule": ("fail", NEVER_SEEN)},
    ),
    Case(
        "persistent service 404 after the recording was seen running, on_not_found='succeed'",
        answers(IN_PROGRESS, SERVICE_404),
        "success",
        requests=(3, None),
        sensor={"not_found_grace_period": 0.5, "on_not_found": "succeed"},
        xcom={**CLEAN, "ended_by": "not_found"},
        ends_after_grace=True,
        without_task_state_store={"reschedule": ("fail", NEVER_SEEN)},
    ),
    Case(
        "worker killed mid-wait, on_not_found='succeed'",
        answers(IN_PROGRESS, SERVICE_404),
        "success",
        requests=(3, None),
        sensor={"not_found_grace_period": 0.5, "on_not_found": "succeed"},
        xcom={**CLEAN, "ended_by": "not_found"},
        ends_after_grace=True,
        worker_killed=True,
        # The killed try's memory dies with its process: the next try never saw the recording.
        without_task_state_store={mode: ("fail", NEVER_SEEN) for mode in MODES},
    ),
    Case(
        "gateway 404",
        answers((404, bodies.GATEWAY_NO_ROUTE)),
        "fail",
        "the URL, HTTP method, App ID or recording mode is wrong",
        sensor={"not_found_grace_period": 60},
    ),
    Case(
        "abnormal exit (status 20)",
        answers((200, {"serverResponse": {"status": 20, "fileList": "a.m3u8", "fileListMode": "string"}})),
        "fail",
        "failure status 20 (exited abnormally). Last file list: 1 file(s): a.m3u8",
    ),
    Case(
        "non-JSON body",
        answers((200, b"<html>maintenance</html>")),
        "error",
        f"recording sid={SID} with HTTP 200 but the body is not a JSON object",
    ),
    Case(
        "JSON without serverResponse",
        answers((200, {"resourceId": "rid", "sid": SID})),
        "error",
        f"answer for recording sid={SID} has no serverResponse object",
    ),
    Case(
        "status missing",
        answers((200, {"serverResponse": {"fileList": []}})),
        "error",
        f"recording sid={SID} has no usable serverResponse.status (missing)",
    ),
    Case(
        "status not a number",
        answers((200, {"serverResponse": {"status": "running"}})),
        "error",
        "'running', not a number",
    ),
    Case(
        "fileList of the wrong type",
        answers((200, {"serverResponse": {"status": 5, "fileList": {"a": 1}}})),
        "error",
        f"fileList of recording sid={SID} is a dict, not a list",
    ),
    Case(
        "status as a string",
        answers((200, {"serverResponse": {"status": "5"}})),
        "success",
        sensor={"target_status": 5},
        xcom={"status": 5, "ended_by": "status", "files": []},
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
        sensor={"target_status": 5},
        xcom={
            "status": 5,
            "ended_by": "status",
            "files": [{"fileName": "a.m3u8", "isPlayable": True, "sliceStartTime": 1562724971626}],
        },
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
        sensor={"target_status": 5},
        # Nothing is lost from a huge file list.
        xcom={"files": [{"fileName": f"slice_{n}.ts", "uid": "1", "sliceStartTime": n} for n in range(20_000)]},
    ),
    Case(
        "credentials rejected",
        answers((401, bodies.BAD_CREDENTIALS)),
        "error",
        "rejected the credentials",
    ),
    Case(
        "missing connection",
        answers(IN_PROGRESS),
        "fail",
        "Connection 'no_such_connection' does not exist: create an Agora Cloud Recording connection",
        names_recording=False,
        requests=(0, 0),
        sensor={"agora_conn_id": "no_such_connection"},
    ),
    Case(
        "plain http to a non-loopback host",
        answers(IN_PROGRESS),
        "fail",
        "Agora needs https, and http is only allowed for a local",
        names_recording=False,
        requests=(0, 0),
        connect=to_connection(connection_json("http://agora.example.com")),
    ),
    Case(
        "connection without a Customer Secret",
        answers(IN_PROGRESS),
        "fail",
        "has no Customer Secret (password)",
        names_recording=False,
        requests=(0, 0),
        connect=to_connection(json.dumps({"conn_type": "agora", "login": "id"})),
    ),
    Case(
        "bad parameter value (target_status 9)",
        answers(IN_PROGRESS),
        "fail",
        f"target_status 9 for recording sid={SID} is not on Agora's 0-8 lifecycle",
        requests=(0, 0),
        sensor={"target_status": 9},
    ),
    Case(
        "bad parameter type (failure_statuses=20)",
        answers(IN_PROGRESS),
        "fail",
        f"failure_statuses for recording sid={SID} must be a list of status numbers such as [20], got 20.",
        requests=(0, 0),
        sensor={"failure_statuses": 20},
    ),
]


# -- one case in one mode -------------------------------------------------------------------------


@dataclass
class Run:
    """One mode's run of a case, and what the server and the logs saw of it."""

    mode: str
    ending: Ending
    started: float  # epoch seconds: the task started
    ended: float  # epoch seconds: the task ended
    elapsed: float  # seconds from start to end on the monotonic clock (poke mode's timeout clock)
    times: list[float]  # arrivals at the server, epoch seconds
    served: list[ScriptedAnswer]  # what each arrival was answered
    planned: list[tuple[Any, float]]  # each retry: the error, and the wait the hook planned
    store: TaskStateStore | None


def _scripted_answers(case: Case) -> list[ScriptedAnswer]:
    return [a if isinstance(a, ScriptedAnswer) else ScriptedAnswer(*a) for a in case.answers]


def run_case(case: Case, mode: str, scripted: ScriptedAgora, caplog: pytest.LogCaptureFixture) -> Run:
    reset_process_state()  # a fresh worker process, with its own request budget
    scripted.script(*case.answers)
    first_request, first_record = len(scripted.times), len(caplog.records)
    store = TaskStateStore() if HAS_TASK_STATE_STORE else None
    context: dict[str, Any] = {"task_state_store": store} if store is not None else {}
    kwargs = {"poke_interval": 0.05, "timeout": 20, **case.sensor}
    started, started_monotonic = time.time(), time.monotonic()
    if case.worker_killed:
        # The first try pokes once and sees the recording running; then its worker is killed, so
        # nothing of its ``execute`` runs after that poke. Only what the poke stored remains.
        first_try = _sensor(case.policy, **MODE_ARGUMENTS[mode], **kwargs)
        assert not first_try.poke(context), mode
    try:
        ending = Ending("success", value=RUNNERS[mode](partial(_sensor, case.policy), context, **kwargs))
    except Exception as error:
        ending = _ending(error)
    ended, elapsed = time.time(), time.monotonic() - started_monotonic
    ENDINGS.append(ending)
    times = scripted.times[first_request:]
    script = _scripted_answers(case)
    planned = [
        (record.args[2], float(record.args[3]))
        for record in caplog.records[first_record:]
        if record.msg == RETRY_LOG_LINE and isinstance(record.args, tuple)
    ]
    return Run(
        mode=mode,
        ending=ending,
        started=started,
        ended=ended,
        elapsed=elapsed,
        times=times,
        served=[script[min(n, len(script) - 1)] for n in range(len(times))],
        planned=planned,
        store=store,
    )


def check_run(case: Case, run: Run) -> None:
    """Everything a user would check about one mode's run of a case."""
    mode, ending = run.mode, run.ending
    outcome, words = case.expected(mode)
    assert (mode, ending.kind) == (mode, outcome), ending.message
    assert words in ending.message, f"{mode}: {ending.message}"
    if outcome in ("fail", "error") and case.names_recording:
        assert f"sid={SID}" in ending.message, f"{mode}: {ending.message}"
    if outcome == "success":
        assert case.xcom, "a success case names the XCom it expects"
        assert {key: ending.value[key] for key in case.xcom} == case.xcom, f"{mode}: XCom {ending.value!r}"
    else:
        assert ending.value is None, f"{mode}: a task that did not succeed returns no XCom"

    low, high = case.requests
    assert low <= len(run.times), f"{mode}: {len(run.times)} requests"
    assert high is None or len(run.times) <= high, f"{mode}: {len(run.times)} requests"
    if case.rate_applies:
        assert len(run.times) > RATE_LIMIT, f"{mode}: only {len(run.times)} requests, the rate is not tested"
        assert max_in_sliding_second(run.times) <= RATE_LIMIT, mode
    else:  # the rate column does not apply: ten requests cannot break a limit of ten per second
        assert len(run.times) <= RATE_LIMIT, f"{mode}: {len(run.times)} requests: set rate_applies"

    check_waits(case, run)
    if case.ends_after_grace:
        grace = float(case.sensor["not_found_grace_period"])
        first_404 = next(t for t, a in zip(run.times, run.served, strict=True) if a.status == 404)
        assert run.ended - first_404 >= grace, f"{mode}: ended {run.ended - first_404:.3f} s after the first 404"
    if outcome == "timeout":
        # Poke mode times out by the monotonic clock, reschedule and deferrable mode by the wall
        # clock; whichever the sensor used, it measured at least its timeout.
        waited = max(run.ended - run.started, run.elapsed)
        assert waited >= float(case.sensor["timeout"]), f"{mode}: timed out after {waited:.3f} s"
    if run.store is not None:  # Airflow 3.3: a try that ended leaves no memory for the next one
        assert run.store.values == {}, mode


def check_waits(case: Case, run: Run) -> None:
    """The time between attempts: what the hook planned, and what Agora saw."""
    mode = run.mode
    policy_cap = case.policy.max_delay + case.policy.initial_delay  # the exponential cap plus the jitter
    headers = {a.headers["Retry-After"] for a in run.served if "Retry-After" in a.headers}
    assert len(headers) <= 1, "one Retry-After per case"
    retry_after = min(float(headers.pop()), RETRY_AFTER_CAP) if headers else None
    if any(a.status >= 500 or a.status in (206, 429) or a.fault for a in run.served[:-1]):
        assert run.planned, f"{mode}: failures were retried, but no retry wait was logged"
    for error, wait in run.planned:
        if retry_after is not None and isinstance(error, AgoraRateLimitError):
            assert retry_after <= wait <= max(retry_after, policy_cap), f"{mode}: planned {wait} s after a 429"
        else:
            assert wait <= policy_cap, f"{mode}: planned {wait} s, beyond the retry policy's cap"
    if retry_after is not None:
        # Every 429 was retried within its poke, each after exactly what Agora asked (capped).
        answered_429 = sum(1 for a in run.served if a.status == 429)
        rate_limited = [wait for error, wait in run.planned if isinstance(error, AgoraRateLimitError)]
        assert rate_limited == [retry_after] * answered_429, f"{mode}: planned {rate_limited}"
    if case.policy is PLANNED_SLEEPS:
        return  # the waits were planned, not slept
    client_timeout = case.extra.get("timeout")
    for n in range(len(run.times) - 1):
        gap = run.times[n + 1] - run.times[n]
        served = run.served[n]
        if "Retry-After" in served.headers:
            assert gap >= min(float(served.headers["Retry-After"]), RETRY_AFTER_CAP), f"{mode}: {gap:.3f} s"
        if served.fault == "stall" and client_timeout is not None and served.delay > client_timeout:
            assert gap >= client_timeout, f"{mode}: retried {gap:.3f} s after a stalled request"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fault(
    case: Case, scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One case in poke, reschedule and deferrable mode: the same ending and the same XCom in each."""
    monkeypatch.setattr(
        "airflow_provider_agora.triggers.agora.AgoraAsyncHook", partial(AgoraAsyncHook, retry_policy=case.policy)
    )
    if case.connect is None:
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(scripted.url, **case.extra))
    else:
        case.connect(scripted, monkeypatch)
    runs = [run_case(case, mode, scripted, caplog) for mode in MODES]
    for run in runs:
        check_run(case, run)
    # The XCom is the same in every mode that ends the same way: all three, but for the cases
    # where Airflow < 3.3 (no task state store) ends reschedule mode, or a killed worker's next
    # try, differently.
    for outcome in {case.expected(run.mode)[0] for run in runs}:
        xcoms = {run.mode: run.ending.value for run in runs if case.expected(run.mode)[0] == outcome}
        assert all(value == next(iter(xcoms.values())) for value in xcoms.values()), f"XComs differ: {list(xcoms)}"


# -- beyond the matrix ----------------------------------------------------------------------------


def test_a_worker_killed_mid_wait_keeps_its_404_grace_clock(scripted: ScriptedAgora) -> None:
    """Poke mode on Airflow 3.3: the next try continues the grace clock from the task state store."""
    if not HAS_TASK_STATE_STORE:
        pytest.skip("Airflow < 3.3 has no task state store: a new try starts its grace clock again")
    scripted.script(IN_PROGRESS, SERVICE_404)
    store = TaskStateStore()
    killed = _sensor(FAST_RETRIES, on_not_found="succeed", not_found_grace_period=0.5)
    assert killed.poke({"task_state_store": store}) is False  # saw status 5
    assert killed.poke({"task_state_store": store}) is False  # first 404; then the worker dies
    time.sleep(0.5)  # the time it takes Airflow to notice and start the next try
    result = _sensor(FAST_RETRIES, on_not_found="succeed", not_found_grace_period=0.5).poke({"task_state_store": store})
    assert result and result.xcom_value["ended_by"] == "not_found"
    assert result.xcom_value["files"] == [{"fileName": "a.m3u8"}]
    assert len(scripted.times) == 3  # the grace period had passed: the next try's first 404 ended it


def test_a_reschedule_wait_that_never_ends_is_failed_by_airflows_own_timeout(
    scripted: ScriptedAgora, tmp_path: Path
) -> None:
    """Reschedule mode in a real Airflow (``airflow dags test``), against 503 forever.

    The task state is what Airflow wrote to its metadata database: failed by the sensor timeout,
    without a retry (the DAG allows two), measured from the first reschedule.
    """
    timeout = 3.0
    scripted.script((503, {"code": 503, "reason": "unavailable"}))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "tests" / "dags"),
        "AIRFLOW_CONN_AGORA_DEFAULT": connection_json(scripted.url),
        "AGORA_FAULT_MATRIX_TIMEOUT": str(timeout),
    }
    migrate = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    command = [AIRFLOW, "dags", "test", "agora_fault_matrix_reschedule"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    assert "Sensor has timed out; run duration of" in output
    with sqlite3.connect(tmp_path / "airflow.db") as db:
        state, try_number, end_date = db.execute(
            "SELECT state, try_number, end_date FROM task_instance WHERE dag_id = ? AND task_id = 'wait'",
            ("agora_fault_matrix_reschedule",),
        ).fetchone()
        reschedules, first_reschedule = db.execute("SELECT COUNT(*), MIN(start_date) FROM task_reschedule").fetchone()
    assert (state, try_number) == ("failed", 1)
    assert reschedules >= 2  # the timeout spanned several executions
    waited = datetime.fromisoformat(end_date) - datetime.fromisoformat(first_reschedule)
    assert waited >= timedelta(seconds=timeout)
    assert len(scripted.times) > reschedules  # every execution asked Agora
