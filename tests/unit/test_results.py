"""The response model on every documented body shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_agora.exceptions import AgoraResponseError
from airflow_provider_agora.results import parse_recording, recording_result
from tests import agora_bodies as bodies


def test_json_file_list_keeps_agora_keys_and_values() -> None:
    snapshot = parse_recording(bodies.QUERY_JSON, sid="s1")
    assert snapshot.status == 5
    assert snapshot.files == bodies.QUERY_JSON["serverResponse"]["fileList"]
    assert snapshot.server_response is bodies.QUERY_JSON["serverResponse"]


def test_string_file_list_becomes_one_file_with_the_recording_start() -> None:
    snapshot = parse_recording(bodies.QUERY_STRING, sid="yyy")
    assert snapshot.status == 5
    assert snapshot.files == [{"fileName": "zzzz.m3u8", "sliceStartTime": 1606357122528}]


def test_web_recording_files_are_spelled_like_the_other_modes() -> None:
    snapshot = parse_recording(bodies.QUERY_WEB, sid="38f8e3c")
    assert snapshot.status == 0
    assert snapshot.files == [{"fileName": "xxx.m3u8", "sliceStartTime": 0}]


def test_web_recording_with_cdn_push_reports_rtmp_outputs() -> None:
    snapshot = parse_recording(bodies.QUERY_WEB_RTMP, sid="s")
    assert (snapshot.status, snapshot.files) == (4, [])
    assert snapshot.rtmp_outputs == [{"rtmpUrl": "rtmp://xxx", "status": "publishing"}]


def test_screenshot_recording_has_a_status_and_no_files() -> None:
    snapshot = parse_recording(bodies.QUERY_SNAPSHOT, sid="s")
    assert (snapshot.status, snapshot.files) == (5, [])


@pytest.mark.parametrize(
    ("body", "files", "uploading"),
    [
        (bodies.STOP_WEB, [], "uploaded"),
        (bodies.STOP_JSON, bodies.QUERY_JSON["serverResponse"]["fileList"], "uploaded"),
        (bodies.STOP_STRING, [{"fileName": "zzzz.m3u8"}], "uploaded"),
        (bodies.STOP_BACKUPED, [], "backuped"),
        (bodies.STOP_CODE_49, [{"fileName": "quickstart/2354cf898b41b76d70850ba58b9b9ffb_123456.m3u8"}], None),
    ],
)
def test_stop_answers(body: dict, files: list, uploading: str | None) -> None:
    snapshot = parse_recording(body, sid="s", require_status=False)
    assert snapshot.status is None
    assert snapshot.files == files
    assert snapshot.uploading_status == uploading


def test_strings_that_agora_sometimes_sends_are_coerced() -> None:
    body = {
        "serverResponse": {
            "status": "5",
            "fileList": [
                {
                    "filename": "a.m3u8",
                    "isPlayable": "true",
                    "mixedAllUser": "false",
                    "sliceStartTime": "1562724971626",
                },
                {"FileName": "b.mp4", "uid": 123, "trackType": "audio"},
            ],
        }
    }
    snapshot = parse_recording(body, sid="s")
    assert snapshot.status == 5
    assert snapshot.files == [
        {"fileName": "a.m3u8", "isPlayable": True, "mixedAllUser": False, "sliceStartTime": 1562724971626},
        {"fileName": "b.mp4", "uid": "123", "trackType": "audio"},
    ]


def test_unknown_fields_stay_in_the_raw_server_response() -> None:
    body = {"serverResponse": {"status": 5, "subServiceStatus": {"recordingService": "serviceReady"}}}
    assert parse_recording(body, sid="s").server_response["subServiceStatus"] == {"recordingService": "serviceReady"}


@pytest.mark.parametrize(
    "body",
    [bodies.QUERY_JSON, bodies.QUERY_STRING, bodies.QUERY_WEB, bodies.QUERY_WEB_RTMP],
    ids=["json", "string", "web", "web_rtmp"],
)
def test_result_is_json_serialisable(body: dict[str, Any]) -> None:
    """The XCom value itself survives JSON unchanged, as Airflow stores it."""
    result = recording_result("rid", "s", "mix", parse_recording(body, sid="s"), "status")
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"resourceId": "r"}, "no serverResponse"),
        ({"serverResponse": {"fileList": []}}, "no usable serverResponse.status (missing)"),
        ({"serverResponse": {"status": "running"}}, "'running', not a number"),
        ({"serverResponse": {"status": True}}, "not a number"),
        ({"serverResponse": {"status": 5, "fileList": {"fileName": "a"}}}, "is a dict, not a list"),
        ({"serverResponse": {"status": 5, "fileList": [7]}}, "as int 7, not an object"),
        (["not", "an", "object"], "no serverResponse"),
    ],
)
def test_malformed_answers_give_one_clear_error_naming_the_recording(body: object, words: str) -> None:
    with pytest.raises(AgoraResponseError) as raised:
        parse_recording(body, sid="sid-42")
    assert "sid=sid-42" in str(raised.value)
    assert words in str(raised.value)
