"""The rules by which Agora's notifications settle a wait: the same outcomes as ``query`` answers.

Pure functions over parsed notifications, so each row of the README's table is one test here.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from airflow_provider_agora._waiting import (
    Outcome,
    WaitMemory,
    WaitSpec,
    decide_on_notifications,
    merge_files,
)
from airflow_provider_agora.notifications import Notification, parse_notification
from airflow_provider_agora.results import RecordingResult

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
SPEC = WaitSpec.checked(resource_id="rid", sid=SID, recording_mode="mix", exit_files_grace_period=30)
HLS = {
    "fileName": "rec/x.m3u8",
    "trackType": "audio_and_video",
    "uid": "0",
    "mixedAllUser": True,
    "isPlayable": True,
    "sliceStartTime": 1619172632080,
}
MP4 = {**HLS, "fileName": "rec/x_0.mp4"}


def notification(event_type: int, details: dict[str, Any], *, notice_id: str | None = None) -> Notification:
    body = {
        "noticeId": notice_id or uuid.uuid4().hex,
        "productId": 3,
        "eventType": event_type,
        "notifyMs": int(time.time() * 1000),
        "payload": {
            "cname": "room1",
            "uid": "527841",
            "sid": SID,
            "sequence": 1,
            "sendts": 1,
            "serviceType": 2,
            "details": details,
        },
    }
    return parse_notification(json.dumps(body).encode())


UPLOADED = notification(31, {"msgName": "uploaded", "status": 0, "fileList": [HLS, MP4]})
EXITED_OK = notification(11, {"msgName": "session_exit", "exitStatus": 0})
EXITED_BADLY = notification(11, {"msgName": "session_exit", "exitStatus": 1})
FAILOVER = notification(12, {"msgName": "session_failover", "newUid": 3858078})
FATAL = notification(
    1,
    {
        "msgName": "cloud_recording_error",
        "module": 0,
        "errorLevel": 5,
        "errorCode": 52,
        "stat": 0,
        "errorMsg": "start timeout",
    },
)
SEEN: RecordingResult = {
    "resource_id": "rid",
    "sid": SID,
    "recording_mode": "mix",
    "status": 5,
    "ended_by": None,
    "files": [{"fileName": "rec/x.m3u8", "sliceStartTime": 1619172632080}, {"fileName": "rec/x_early.ts"}],
    "server_response": {"status": 5},
}


def test_uploaded_settles_the_wait_with_every_file_ever_seen() -> None:
    decision = decide_on_notifications(SPEC, WaitMemory(last_seen=SEEN), [UPLOADED], now=100.0)
    assert decision is not None and decision.outcome is Outcome.DONE
    assert decision.result is not None
    assert decision.result["ended_by"] == "notification"
    assert decision.result["notification"] == {"notice_id": UPLOADED.notice_id, "event_type": 31}
    assert [f["fileName"] for f in decision.result["files"]] == ["rec/x.m3u8", "rec/x_early.ts", "rec/x_0.mp4"]
    assert decision.result["files"][0] == HLS  # the notification's details complete what polling saw


def test_duplicates_and_uploaded_after_exit_give_one_outcome() -> None:
    orders = [[UPLOADED, EXITED_OK], [EXITED_OK, UPLOADED], [EXITED_OK, UPLOADED, UPLOADED]]
    outcomes = []
    for order in orders:
        decision = decide_on_notifications(SPEC, WaitMemory(), order, now=100.0)
        assert decision is not None and decision.result is not None
        outcomes.append((decision.outcome, decision.result["status"], len(decision.result["files"])))
    assert outcomes == [(Outcome.DONE, 8, 2)] * 3


def test_a_normal_exit_without_files_waits_for_them_then_finishes_with_what_is_known() -> None:
    waiting = decide_on_notifications(SPEC, WaitMemory(last_seen=SEEN), [EXITED_OK], now=100.0)
    assert waiting is not None and waiting.outcome is Outcome.WAIT and waiting.memory.exit_seen_at == 100.0
    still = decide_on_notifications(SPEC, waiting.memory, [EXITED_OK], now=129.9)
    assert still is not None and still.outcome is Outcome.WAIT
    done = decide_on_notifications(SPEC, waiting.memory, [EXITED_OK], now=130.0)
    assert done is not None and done.outcome is Outcome.DONE and done.result is not None
    assert [f["fileName"] for f in done.result["files"]] == ["rec/x.m3u8", "rec/x_early.ts"]
    assert "no 'uploaded' notification (31)" in done.message


def test_an_abnormal_exit_fails_like_status_20() -> None:
    decision = decide_on_notifications(SPEC, WaitMemory(last_seen=SEEN), [UPLOADED, EXITED_BADLY], now=1.0)
    assert decision is not None and decision.outcome is Outcome.FAIL
    assert f"notification {EXITED_BADLY.notice_id} (event 11, session_exit)" in decision.message


def test_an_abnormal_web_stop_fails() -> None:
    stopped = notification(
        71, {"msgName": "web_recorder_stopped", "code": 4, "message": "page_load_timeout", "fileList": []}
    )
    decision = decide_on_notifications(SPEC, WaitMemory(), [stopped], now=1.0)
    assert decision is not None and decision.outcome is Outcome.FAIL


def test_a_web_recordings_31_without_files_does_not_end_the_wait_its_71_does() -> None:
    web = WaitSpec.checked(resource_id="rid", sid=SID, recording_mode="web")
    uploaded = notification(31, {"msgName": "uploaded", "status": 0})
    assert decide_on_notifications(web, WaitMemory(), [uploaded], now=1.0) is None
    stopped = notification(
        71,
        {
            "msgName": "web_recorder_stopped",
            "code": 0,
            "message": "ok",
            "fileList": [{"filename": "p_www.m3u8", "sliceStartTime": 1}],
        },
    )
    decision = decide_on_notifications(web, WaitMemory(), [uploaded, stopped], now=1.0)
    assert decision is not None and decision.outcome is Outcome.DONE and decision.result is not None
    assert decision.result["files"] == [{"fileName": "p_www.m3u8", "sliceStartTime": 1}]


def test_a_failover_restarts_a_running_404_grace_period_once() -> None:
    decision = decide_on_notifications(SPEC, WaitMemory(not_found_since=10.0), [FAILOVER], now=50.0)
    assert decision is not None and decision.outcome is Outcome.WAIT
    assert decision.memory.not_found_since == 50.0
    again = decide_on_notifications(SPEC, decision.memory, [FAILOVER], now=80.0)
    assert again is None  # already acted on: the grace period is not restarted at every poll


def test_a_fatal_error_asks_for_a_query_at_once_once() -> None:
    decision = decide_on_notifications(SPEC, WaitMemory(), [FATAL], now=1.0)
    assert decision is not None and (decision.outcome, decision.query_now) == (Outcome.WAIT, True)
    assert decide_on_notifications(SPEC, decision.memory, [FATAL], now=2.0) is None


def test_progress_events_settle_nothing() -> None:
    started = notification(40, {"msgName": "recorder_started", "status": 0})
    assert decide_on_notifications(SPEC, WaitMemory(), [started], now=1.0) is None


def test_the_memory_round_trips_with_what_notifications_added() -> None:
    decision = decide_on_notifications(SPEC, WaitMemory(not_found_since=1.0), [FAILOVER, EXITED_OK], now=5.0)
    assert decision is not None
    assert WaitMemory.from_json(json.loads(json.dumps(decision.memory.to_json()))) == decision.memory


def test_merge_files_keeps_every_file_once() -> None:
    merged = merge_files([{"fileName": "a"}, {"fileName": "b"}], [{"fileName": "b", "uid": "0"}, {"fileName": "c"}])
    assert merged == [{"fileName": "a"}, {"fileName": "b", "uid": "0"}, {"fileName": "c"}]
