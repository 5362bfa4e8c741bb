"""NCS notifications: the signature scheme, the envelope, and what each documented event means.

Bodies are the examples of shared/reference/agora-notifications.md section 1.7, wrapped in the
envelope that section describes; the signature vector is section 1.3's (historical docs body).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_agora.notifications import (
    CLOUD_RECORDING_PRODUCT_ID,
    ENDED,
    ENDING_EVENT_TYPES,
    ERROR,
    EXITED,
    FAILOVER,
    MAX_DETAIL_KEY_LENGTH,
    MAX_DETAIL_TEXT_LENGTH,
    MAX_KEPT_DETAILS,
    MAX_NESTING_DEPTH,
    OTHER,
    PROGRESS,
    UPLOAD_FAILED,
    WEB_FAILED,
    Notification,
    NotificationError,
    describe,
    load_stored,
    parse_notification,
    sign,
    verify_signature,
)
from tests.support import connection_json

# --- Section 1.3: the historical docs body and its digests under key b"secret" -------------------
VECTOR_BODY = (
    b'{"eventMs":1560408533119,"eventType":10,"noticeId":"4eb720f0-8da7-11e9-a43e-53f411c2761f",'
    b'"notifyMs":1560408533119,"payload":{"a":"1","b":2},"productId":1}'
)
VECTOR_SHA1 = "033c62f40f687675f17f0f41f91a40c71c0f134c"
VECTOR_SHA256 = "6d3320c60b11101395b7fc8f9068748808a0aa1bfa064438e39d1bc2c7d74d99"
SECRET = "secret"
PREVIOUS = "previous-secret-Qx3"
WRONG_SHA256 = "0" * 64
WRONG_SHA1 = "0" * 40

# --- Section 1.7: Agora's `details` examples, verbatim ----------------------------------------
DETAILS_31_COMPOSITE = (
    '{"msgName":"uploaded","fileList":[{"fileName":"xxx.mp4","trackType":"audio_and_video","uid":"0",'
    '"mixedAllUser":true,"isPlayable":true,"sliceStartTime":1619172632080},{"fileName":"xxx.m3u8",'
    '"trackType":"audio_and_video","uid":"0","mixedAllUser":true,"isPlayable":true,'
    '"sliceStartTime":1619172632080}],"status":0}'
)
DETAILS_31_INDIVIDUAL = (
    '{"msgName":"uploaded","fileList":[{"fileName":"xxx.m3u8","trackType":"audio","uid":"57297",'
    '"mixedAllUser":false,"isPlayable":true,"sliceStartTime":1619172871089},{"fileName":"xxx.m3u8",'
    '"trackType":"audio","uid":"10230","mixedAllUser":false,"isPlayable":true,"sliceStartTime":1619172871099}],'
    '"status":0}'
)
DETAILS_31_WEB = '{"msgName":"uploaded","status":0}'
DETAILS_71 = (
    '{"msgName":"web_recorder_stopped","code":1,"message":"max_recording_hour","details":"max recording hour is 4",'
    '"fileList":[{"filename":"test_p1627613634_www.m3u8","sliceStartTime":1627613641393},'
    '{"filename":"test_p1627613634_www_0.mp4","sliceStartTime":1627613641393}]}'
)
# X1's recorded-looking envelope: top-level sid and payload.sid.
X1_ENVELOPE = (
    b'{"noticeId":"31aeb35a9245cbd977cfe18b438b75ed","notifyMs":1596555306283,"eventType":40,'
    b'"sid":"d12fdce9024d37862a8f3a88e387c817",'
    b'"payload":{"serviceType":1,"uid":"1001","sequence":1,"sendts":1596555306257,"cname":"Testing2",'
    b'"details":{"status":0,"msgName":"recorder_started"},"sid":"d12fdce9024d37862a8f3a88e387c817"},"productId":3}'
)

FILES_31_COMPOSITE = [
    {
        "fileName": "xxx.mp4",
        "trackType": "audio_and_video",
        "uid": "0",
        "mixedAllUser": True,
        "isPlayable": True,
        "sliceStartTime": 1619172632080,
    },
    {
        "fileName": "xxx.m3u8",
        "trackType": "audio_and_video",
        "uid": "0",
        "mixedAllUser": True,
        "isPlayable": True,
        "sliceStartTime": 1619172632080,
    },
]
FILES_31_INDIVIDUAL = [
    {
        "fileName": "xxx.m3u8",
        "trackType": "audio",
        "uid": "57297",
        "mixedAllUser": False,
        "isPlayable": True,
        "sliceStartTime": 1619172871089,
    },
    {
        "fileName": "xxx.m3u8",
        "trackType": "audio",
        "uid": "10230",
        "mixedAllUser": False,
        "isPlayable": True,
        "sliceStartTime": 1619172871099,
    },
]
FILES_71 = [
    {"fileName": "test_p1627613634_www.m3u8", "sliceStartTime": 1627613641393},
    {"fileName": "test_p1627613634_www_0.mp4", "sliceStartTime": 1627613641393},
]

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
SERVICE_TYPES = {1: 0, 11: 0, 12: 0, 31: 2, 32: 2, 71: 6, 72: 6}


def envelope(event_type: int, details: dict[str, Any] | str, **payload: Any) -> bytes:
    """A cloud-recording notification as section 1.7 composes it (AG-hdr envelope + AG-ev payload)."""
    body = {
        "noticeId": f"notice-{event_type}",
        "productId": 3,
        "eventType": event_type,
        "notifyMs": 1619172900000,
        "payload": {
            "cname": "room-1",
            "uid": "527841",
            "sid": SID,
            "sequence": 7,
            "sendts": 1619172899000,
            "serviceType": SERVICE_TYPES.get(event_type, 1),
            "details": json.loads(details) if isinstance(details, str) else details,
            **payload,
        },
    }
    return json.dumps(body).encode()


def as_backuped(details: str) -> str:
    """Section 1.7: 32 examples are the 31 ones with msgName "backuped"."""
    return details.replace('"msgName":"uploaded"', '"msgName":"backuped"')


# =============================================================================================
# Signatures


def test_sign_reproduces_the_reference_test_vector() -> None:
    assert sign(VECTOR_BODY, SECRET) == {"Agora-Signature": VECTOR_SHA1, "Agora-Signature-V2": VECTOR_SHA256}


def test_sign_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="empty secret"):
        sign(VECTOR_BODY, "")


def test_reference_vector_verifies_with_both_headers() -> None:
    headers = {"Agora-Signature": VECTOR_SHA1, "Agora-Signature-V2": VECTOR_SHA256}
    assert verify_signature(VECTOR_BODY, headers, [SECRET]) is True


def test_reference_vector_verifies_with_v2_alone() -> None:
    assert verify_signature(VECTOR_BODY, {"Agora-Signature-V2": VECTOR_SHA256}, [SECRET]) is True


def test_v1_is_accepted_when_v2_is_absent() -> None:
    assert verify_signature(VECTOR_BODY, {"Agora-Signature": VECTOR_SHA1}, [SECRET]) is True


def test_a_wrong_v2_fails_even_with_a_right_v1() -> None:
    headers = {"Agora-Signature": VECTOR_SHA1, "Agora-Signature-V2": WRONG_SHA256}
    assert verify_signature(VECTOR_BODY, headers, [SECRET]) is False


def test_a_blank_v2_does_not_fall_back_to_v1() -> None:
    headers = {"Agora-Signature": VECTOR_SHA1, "Agora-Signature-V2": ""}
    assert verify_signature(VECTOR_BODY, headers, [SECRET]) is False


def test_a_wrong_v1_alone_fails() -> None:
    assert verify_signature(VECTOR_BODY, {"Agora-Signature": WRONG_SHA1}, [SECRET]) is False


def test_the_previous_secret_is_accepted_during_a_rotation() -> None:
    headers = sign(VECTOR_BODY, PREVIOUS)
    assert verify_signature(VECTOR_BODY, headers, ["new-secret", PREVIOUS]) is True


def test_a_secret_that_is_neither_current_nor_previous_fails() -> None:
    headers = sign(VECTOR_BODY, "third-secret")
    assert verify_signature(VECTOR_BODY, headers, [SECRET, PREVIOUS]) is False


def test_more_than_two_secrets_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at most 2 secrets"):
        verify_signature(VECTOR_BODY, sign(VECTOR_BODY, SECRET), [SECRET, PREVIOUS, "third-secret"])


def test_one_string_instead_of_a_list_of_secrets_is_refused() -> None:
    with pytest.raises(TypeError, match="list of secrets"):
        verify_signature(VECTOR_BODY, sign(VECTOR_BODY, SECRET), SECRET)


def test_empty_and_none_secrets_are_skipped() -> None:
    assert verify_signature(VECTOR_BODY, sign(VECTOR_BODY, SECRET), ["", None, SECRET]) is True


@pytest.mark.parametrize("secrets", [[], [""], [None, ""]], ids=["none", "empty", "blank"])
def test_without_a_secret_nothing_verifies(secrets: list[str | None]) -> None:
    assert verify_signature(VECTOR_BODY, sign(VECTOR_BODY, SECRET), secrets) is False


def test_a_notification_without_signature_fails() -> None:
    assert verify_signature(VECTOR_BODY, {"Content-Type": "application/json"}, [SECRET]) is False


def test_a_tampered_body_fails() -> None:
    tampered = VECTOR_BODY.replace(b'"eventType":10', b'"eventType":11')
    assert verify_signature(tampered, sign(VECTOR_BODY, SECRET), [SECRET]) is False


@pytest.mark.parametrize("name", ["agora-signature-v2", "AGORA-SIGNATURE-V2", "agora-Signature-V2"])
def test_header_names_are_case_insensitive(name: str) -> None:
    assert verify_signature(VECTOR_BODY, {name: VECTOR_SHA256}, [SECRET]) is True


def test_upper_case_digest_with_spaces_is_accepted() -> None:
    assert verify_signature(VECTOR_BODY, {"Agora-Signature-V2": f" {VECTOR_SHA256.upper()} "}, [SECRET]) is True


def test_starlette_headers_are_read() -> None:
    datastructures = pytest.importorskip("starlette.datastructures")
    headers = datastructures.Headers(raw=[(b"agora-signature-v2", VECTOR_SHA256.encode())])
    assert verify_signature(VECTOR_BODY, headers, [SECRET]) is True


def test_conflicting_copies_of_the_v2_header_fail() -> None:
    headers = {"Agora-Signature-V2": VECTOR_SHA256, "agora-signature-v2": WRONG_SHA256}
    assert verify_signature(VECTOR_BODY, headers, [SECRET]) is False


@pytest.mark.parametrize(
    "v2",
    [VECTOR_SHA1, VECTOR_SHA256[:-1], "z" * 64, "é" * 64, VECTOR_SHA256 + "00"],
    ids=["sha1-digest-in-v2", "too-short", "not-hex", "not-ascii", "too-long"],
)
def test_malformed_v2_values_fail(v2: str) -> None:
    assert verify_signature(VECTOR_BODY, {"Agora-Signature-V2": v2}, [SECRET]) is False


# =============================================================================================
# Section 1.7's examples


@pytest.mark.parametrize(
    ("event_type", "details", "files"),
    [
        (31, DETAILS_31_COMPOSITE, FILES_31_COMPOSITE),
        (31, DETAILS_31_INDIVIDUAL, FILES_31_INDIVIDUAL),
        (32, as_backuped(DETAILS_31_COMPOSITE), FILES_31_COMPOSITE),
        (32, as_backuped(DETAILS_31_INDIVIDUAL), FILES_31_INDIVIDUAL),
    ],
    ids=["31-composite", "31-individual", "32-composite", "32-individual"],
)
def test_uploaded_with_status_0_ended_with_its_files(event_type: int, details: str, files: list) -> None:
    notification = parse_notification(envelope(event_type, details))
    assert (notification.kind, notification.upload_status, notification.files) == (ENDED, 0, files)


def test_web_recordings_31_has_no_file_list_and_ended_without_files() -> None:
    notification = parse_notification(envelope(31, DETAILS_31_WEB, serviceType=6))
    assert (notification.kind, notification.files) == (ENDED, [])


def test_71_example_max_recording_hour_ended_with_its_filename_files_normalised() -> None:
    """Code 1: the recording reached the maxRecordingHour it was started with, a configured end."""
    notification = parse_notification(envelope(71, DETAILS_71))
    assert (notification.kind, notification.web_code, notification.files) == (ENDED, 1, FILES_71)


def test_71_with_a_failure_code_is_web_failed() -> None:
    details = DETAILS_71.replace('"code":1', '"code":4').replace("max_recording_hour", "page_load_timeout")
    notification = parse_notification(envelope(71, details))
    assert (notification.kind, notification.web_code, notification.files) == (WEB_FAILED, 4, FILES_71)


def test_71_with_code_0_ended_with_its_files() -> None:
    details = DETAILS_71.replace('"code":1', '"code":0')
    notification = parse_notification(envelope(71, details))
    assert (notification.kind, notification.web_code, notification.files) == (ENDED, 0, FILES_71)


def test_the_x1_envelope_parses_with_payload_fields() -> None:
    notification = parse_notification(X1_ENVELOPE)
    assert notification == Notification(
        notice_id="31aeb35a9245cbd977cfe18b438b75ed",
        product_id=3,
        event_type=40,
        notify_ms=1596555306283,
        sid="d12fdce9024d37862a8f3a88e387c817",
        cname="Testing2",
        uid="1001",
        sequence=1,
        sendts=1596555306257,
        service_type=1,
        details={"status": 0, "msgName": "recorder_started"},
        kind=PROGRESS,
        files=[],
    )


def test_top_level_sid_is_used_when_the_payload_has_none() -> None:
    body = json.loads(X1_ENVELOPE)
    del body["payload"]["sid"]
    body["sid"] = "top-level-sid"
    assert parse_notification(json.dumps(body).encode()).sid == "top-level-sid"


def test_payload_sid_wins_over_top_level_sid() -> None:
    body = json.loads(X1_ENVELOPE)
    body["sid"] = "top-level-sid"
    assert parse_notification(json.dumps(body).encode()).sid == "d12fdce9024d37862a8f3a88e387c817"


# =============================================================================================
# The other classified events


@pytest.mark.parametrize("event_type", [31, 32])
def test_uploaded_with_a_non_zero_status_is_upload_failed(event_type: int) -> None:
    details = json.loads(DETAILS_31_COMPOSITE) | {"status": 1}
    notification = parse_notification(envelope(event_type, details))
    assert (notification.kind, notification.upload_status) == (UPLOAD_FAILED, 1)


@pytest.mark.parametrize("exit_status", [0, 1])
def test_session_exit_carries_its_exit_status(exit_status: int) -> None:
    notification = parse_notification(envelope(11, {"msgName": "session_exit", "exitStatus": exit_status}))
    assert (notification.kind, notification.exit_status, notification.files) == (EXITED, exit_status, [])


def test_failover_carries_the_new_uid_as_a_string() -> None:
    notification = parse_notification(envelope(12, {"msgName": "session_failover", "newUid": 3858078}))
    assert (notification.kind, notification.new_uid) == (FAILOVER, "3858078")


def test_fatal_error_carries_its_error_level() -> None:
    details = {"msgName": "cloud_recording_error", "module": 1, "errorLevel": 5, "errorCode": 47, "stat": 0}
    notification = parse_notification(envelope(1, details))
    assert (notification.kind, notification.error_level) == (ERROR, 5)


def test_capability_limit_is_web_failed() -> None:
    details = {"msgName": "web_recorder_capability_limit", "limitType": "WebGL"}
    assert parse_notification(envelope(72, details)).kind == WEB_FAILED


@pytest.mark.parametrize("event_type", [2, 3, 4, 30, 33, 40, 41, 42, 43, 44, 45, 70, 73, 100])
def test_informational_events_are_progress(event_type: int) -> None:
    assert parse_notification(envelope(event_type, {"msgName": "whatever"})).kind == PROGRESS


def test_an_unknown_event_type_is_other() -> None:
    assert parse_notification(envelope(999, {"msgName": "new_event"})).kind == OTHER


def test_another_products_notification_parses_as_other() -> None:
    # AG-hdr's generic RTC example (productId 1): no sid, cname or details in its payload.
    raw = (
        b'{"noticeId":"2000001428:4330:107","productId":1,"eventType":101,"notifyMs":1611566412672,'
        b'"payload":{"channelName":"test_webhook","ts":1560396834,"clientSeq":1625051030746}}'
    )
    notification = parse_notification(raw)
    assert (notification.product_id, notification.kind, notification.sid, notification.details) == (1, OTHER, None, {})


def test_another_products_payload_of_another_shape_is_not_an_error() -> None:
    raw = b'{"noticeId":"n","productId":5,"eventType":1,"notifyMs":1,"payload":"not an object"}'
    assert parse_notification(raw).kind == OTHER


def test_numbers_sent_as_numeric_strings_are_accepted() -> None:
    body = json.loads(envelope(31, DETAILS_31_COMPOSITE))
    body |= {"productId": "3", "eventType": "31", "notifyMs": "1619172900000"}
    body["payload"] |= {"sequence": "7", "sendts": "1619172899000", "serviceType": "2"}
    body["payload"]["details"]["status"] = "0"
    notification = parse_notification(json.dumps(body).encode())
    assert (notification.kind, notification.event_type, notification.notify_ms, notification.sequence) == (
        ENDED,
        31,
        1619172900000,
        7,
    )


def test_files_are_normalised_like_query_answers() -> None:
    details = {
        "status": 0,
        "fileList": [{"filename": "a.mp4", "uid": 57297, "mixedAllUser": "false", "sliceStartTime": "1619172871089"}],
    }
    notification = parse_notification(envelope(31, details))
    assert notification.files == [
        {"fileName": "a.mp4", "uid": "57297", "mixedAllUser": False, "sliceStartTime": 1619172871089}
    ]


def test_ending_event_types_are_the_terminal_events() -> None:
    assert frozenset({11, 31, 32, 71}) == ENDING_EVENT_TYPES


# =============================================================================================
# Malformed bodies


def _mutated(change: Any) -> bytes:
    body = json.loads(envelope(31, DETAILS_31_COMPOSITE))
    change(body)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "The notification body is not JSON"),
        (b"\xff\xfe\x00garbage", "The notification body is not JSON"),
        (b'{"noticeId":"n","productId":3,"eventType":31,"notifyMs":NaN,"payload":{}}', "is not JSON"),
        (b"[" * 100_000, "The notification body is nested deeper than 16 levels of arrays and objects."),
        (b"[1, 2]", "The notification body is a JSON array, not an object."),
        (_mutated(lambda b: b.pop("noticeId")), "The notification has no noticeId."),
        (_mutated(lambda b: b.update(noticeId=[1])), "noticeId that is a JSON array, not a string"),
        (_mutated(lambda b: b.pop("eventType")), "The notification 'notice-31' has no eventType."),
        (_mutated(lambda b: b.pop("productId")), "The notification 'notice-31' has no productId."),
        (_mutated(lambda b: b.pop("notifyMs")), "The notification 'notice-31' has no notifyMs."),
        (_mutated(lambda b: b.update(eventType="uploaded")), "eventType 'uploaded', which is not an integer"),
        (_mutated(lambda b: b.update(eventType=True)), "eventType True, which is not an integer"),
        (_mutated(lambda b: b.pop("payload")), "The notification 'notice-31' has no payload, not an object."),
        (_mutated(lambda b: b.update(payload=[])), "has a payload that is a JSON array, not an object"),
        (_mutated(lambda b: b["payload"].update(details="x")), "payload.details that is a JSON string, not an object"),
        (
            _mutated(lambda b: b["payload"].update(sequence="first")),
            "payload.sequence 'first', which is not an integer",
        ),
        (_mutated(lambda b: b["payload"]["details"].pop("status")), "(eventType 31) has no payload.details.status."),
        (_mutated(lambda b: b["payload"]["details"].update(fileList=7)), "payload.details.fileList that is not a list"),
        (_mutated(lambda b: b["payload"]["details"].update(fileList=[7])), "payload.details.fileList that is not a"),
        (envelope(71, {"code": "ok"}), "payload.details.code 'ok', which is not an integer"),
        (envelope(11, {"exitStatus": "abnormal"}), "payload.details.exitStatus 'abnormal', which is not an integer"),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "nan",
        "too-deep",
        "array",
        "no-noticeId",
        "noticeId-array",
        "no-eventType",
        "no-productId",
        "no-notifyMs",
        "eventType-text",
        "eventType-boolean",
        "no-payload",
        "payload-array",
        "details-string",
        "sequence-text",
        "31-without-status",
        "fileList-number",
        "fileList-item-number",
        "71-code-text",
        "11-exitStatus-text",
    ],
)
def test_malformed_bodies_raise_one_clear_sentence(raw: bytes, message: str) -> None:
    with pytest.raises(NotificationError) as caught:
        parse_notification(raw)
    text = str(caught.value)
    assert message in text
    assert text.startswith("The ") and text.endswith(".") and "\n" not in text


# =============================================================================================
# Limits: nesting depth (checked on the raw text, before json.loads)

# envelope() nests details two levels down (body, payload), and details is a third level.
DETAILS_DEPTH = 3


def nested_arrays(levels: int) -> list[Any]:
    """``levels`` arrays, each the only item of the one around it."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def body_of_depth(depth: int) -> bytes:
    """A cloud-recording 40 whose deepest value is ``depth`` arrays and objects down."""
    return envelope(40, {"msgName": "recorder_started", "extra": nested_arrays(depth - DETAILS_DEPTH)})


def test_the_nesting_limit_leaves_room_for_agoras_deepest_body() -> None:
    assert MAX_NESTING_DEPTH == 16


def test_a_body_nested_one_level_deeper_than_the_limit_is_refused() -> None:
    with pytest.raises(NotificationError, match="nested deeper than 16 levels"):
        parse_notification(body_of_depth(MAX_NESTING_DEPTH + 1))


def test_a_body_nested_exactly_to_the_limit_is_accepted() -> None:
    assert parse_notification(body_of_depth(MAX_NESTING_DEPTH)).kind == PROGRESS


def test_brackets_inside_strings_do_not_count_towards_the_depth() -> None:
    hostile = '[[[[{{{{"' + '\\"[[[[' * 1000 + "\\\\[[[["
    assert parse_notification(envelope(40, {"msgName": hostile})).details["msgName"].startswith('[[[[{{{{"')


def test_an_escaped_backslash_before_a_closing_quote_does_not_hide_deeper_nesting() -> None:
    """JSON ``"x\\\\"`` ends its string; a scanner that took ``\\"`` for an escaped quote would miss what follows."""
    raw = envelope(40, {"msgName": "x\\", "extra": nested_arrays(MAX_NESTING_DEPTH)})
    with pytest.raises(NotificationError, match="nested deeper"):
        parse_notification(raw)


def test_a_utf16_body_is_depth_checked_on_its_characters() -> None:
    """In UTF-16 "\u2200" is the bytes 00 22: a byte scan would see a quote there and stop counting."""
    text = envelope(40, {"msgName": "\u2200", "extra": nested_arrays(MAX_NESTING_DEPTH)}).decode()
    with pytest.raises(NotificationError, match="nested deeper"):
        parse_notification(text.replace("\\u2200", "\u2200").encode("utf-16-le"))


def test_a_megabyte_of_open_brackets_is_refused_without_recursion() -> None:
    with pytest.raises(NotificationError, match="nested deeper than 16 levels"):
        parse_notification(b"[" * 2**20)


# =============================================================================================
# Limits: integer ranges


def with_raw_number(key: str, number: str) -> bytes:
    """The 31 example with ``key`` (envelope or payload) set to the JSON number text ``number``."""
    body = json.loads(envelope(31, DETAILS_31_COMPOSITE))
    where = body if key in body else body["payload"]
    where[key] = "PLACEHOLDER"
    return json.dumps(body).replace('"PLACEHOLDER"', number).encode()


@pytest.mark.parametrize("digits", [400, 5000], ids=["400-digits", "5000-digits"])
def test_a_huge_notify_ms_is_refused(digits: int) -> None:
    with pytest.raises(NotificationError):
        parse_notification(with_raw_number("notifyMs", "9" * digits))


@pytest.mark.parametrize("number", ["-1", str(2**53), "1e300"], ids=["negative", "2**53", "huge-float"])
def test_a_notify_ms_outside_0_to_2_53_is_refused(number: str) -> None:
    with pytest.raises(NotificationError, match=r"notifyMs .*, which is not between 0 and 9007199254740991"):
        parse_notification(with_raw_number("notifyMs", number))


def test_the_largest_json_safe_notify_ms_is_accepted() -> None:
    assert parse_notification(with_raw_number("notifyMs", str(2**53 - 1))).notify_ms == 2**53 - 1


def test_the_receiver_dates_the_largest_notify_ms_it_can_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver ages a notification from its ``notifyMs``: the largest value the parser lets through
    (year 287396) is refused as future-dated, a 400 Agora does not resend, not an error (a 500) it resends."""
    pytest.importorskip("fastapi", reason="the receiver is an Airflow 3 API-server plugin; Airflow 2 has no FastAPI")
    from airflow_provider_agora._ncs.receiver import handle_notification

    conn_id = "agora_largest_notify_ms"  # an id of its own: the receiver caches connections by id
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", connection_json("", ncs_secret=SECRET))
    raw = with_raw_number("notifyMs", str(2**53 - 1))
    reply = handle_notification(conn_id, raw, sign(raw, SECRET))
    assert (reply.status, reply.body) == (400, {"status": "error", "message": "notifyMs is in the future."})


@pytest.mark.parametrize("key", ["productId", "eventType"])
def test_an_id_beyond_31_bits_is_refused(key: str) -> None:
    with pytest.raises(NotificationError, match=f"{key} 2147483648, which is not between 0 and 2147483647"):
        parse_notification(with_raw_number(key, str(2**31)))


def test_a_25_digit_sequence_on_a_cloud_recording_notification_is_refused() -> None:
    with pytest.raises(NotificationError, match=r"payload.sequence 1{25}, which is not between"):
        parse_notification(with_raw_number("sequence", "1" * 25))


def test_a_negative_sendts_on_a_cloud_recording_notification_is_refused() -> None:
    with pytest.raises(NotificationError, match=r"payload.sendts -1, which is not between 0 and"):
        parse_notification(with_raw_number("sendts", "-1"))


def test_a_25_digit_sequence_on_another_products_notification_is_ignored() -> None:
    raw = b'{"noticeId":"n","productId":1,"eventType":101,"notifyMs":1,"payload":{"sequence":' + b"1" * 25 + b"}}"
    assert parse_notification(raw).sequence is None


def test_a_status_beyond_64_bits_is_refused() -> None:
    details = DETAILS_31_COMPOSITE.replace('"status":0', '"status":' + "9" * 400)
    with pytest.raises(NotificationError, match=r"payload.details.status 9+\.\.\., which is not between"):
        parse_notification(envelope(31, details))


def test_a_new_uid_beyond_64_bits_is_refused() -> None:
    with pytest.raises(NotificationError, match=r"payload.details.newUid .*, which does not fit 64 bits"):
        parse_notification(envelope(12, {"msgName": "session_failover", "newUid": 2**64}))


def test_a_file_with_a_slice_start_time_beyond_64_bits_is_refused() -> None:
    details = {"status": 0, "fileList": [{"fileName": "a.mp4", "sliceStartTime": "9" * 400}]}
    with pytest.raises(NotificationError, match=r"lists a file whose 'sliceStartTime' .* does not fit 64 bits"):
        parse_notification(envelope(31, details))


# =============================================================================================
# Limits: what a notification keeps of its details


def many_files(count: int) -> list[dict[str, Any]]:
    return [{**FILES_31_COMPOSITE[0], "fileName": f"sid_channel_{index:06d}_20240101.ts"} for index in range(count)]


def test_the_kept_details_of_a_31_have_no_file_list() -> None:
    notification = parse_notification(envelope(31, DETAILS_31_COMPOSITE))
    assert notification.details == {"msgName": "uploaded", "status": 0}


def test_a_file_list_sent_as_one_file_name_is_in_files_not_in_the_kept_details() -> None:
    notification = parse_notification(envelope(31, {"msgName": "uploaded", "status": 0, "fileList": "a.m3u8"}))
    assert (notification.files, notification.details) == (
        [{"fileName": "a.m3u8"}],
        {"msgName": "uploaded", "status": 0},
    )


def test_the_files_of_a_31_keep_every_file_of_a_big_list() -> None:
    files = many_files(2000)
    assert parse_notification(envelope(31, {"msgName": "uploaded", "status": 0, "fileList": files})).files == files


def test_a_stored_31_with_a_big_file_list_is_about_the_size_of_its_body() -> None:
    raw = envelope(31, {"msgName": "uploaded", "status": 0, "fileList": many_files(2000)})
    stored = json.dumps(parse_notification(raw).to_json())
    assert len(stored) < 1.2 * len(raw)


def test_the_kept_details_of_a_71_keep_its_nested_details_string() -> None:
    notification = parse_notification(envelope(71, DETAILS_71))
    assert notification.details == {
        "msgName": "web_recorder_stopped",
        "code": 1,
        "message": "max_recording_hour",
        "details": "max recording hour is 4",
    }


def test_details_with_1000_extra_keys_keep_at_most_max_kept_details() -> None:
    details = {f"extra{index}": "x" * 50 for index in range(1000)} | {"msgName": "uploaded", "status": 0}
    notification = parse_notification(envelope(31, details))
    assert len(notification.details) == MAX_KEPT_DETAILS


def test_agoras_documented_details_are_kept_before_extra_keys() -> None:
    details = {f"extra{index}": index for index in range(1000)} | {"msgName": "uploaded", "status": 0}
    kept = parse_notification(envelope(31, details)).details
    assert (kept["msgName"], kept["status"]) == ("uploaded", 0)


def test_a_100_kib_detail_string_is_cut_to_max_detail_text_length() -> None:
    notification = parse_notification(envelope(40, {"msgName": "recorder_started", "note": "x" * 100 * 1024}))
    assert notification.details["note"] == "x" * MAX_DETAIL_TEXT_LENGTH


def test_the_kept_details_are_bounded_whatever_details_holds() -> None:
    details: dict[str, Any] = {f"{index:04d}" + "k" * 80: "v" for index in range(100)}  # keys too long: dropped
    details |= {f"key{index}": "x" * 100 * 1024 for index in range(1000)}
    details |= {"nested": {"a": [1, 2]}, "list": [1], "huge": 10**100, "msgName": "recorder_started"}
    kept = parse_notification(envelope(40, details)).details
    assert len(json.dumps(kept)) <= MAX_KEPT_DETAILS * (MAX_DETAIL_KEY_LENGTH + MAX_DETAIL_TEXT_LENGTH + 6)


def test_nested_values_long_keys_and_out_of_range_integers_are_not_kept() -> None:
    details = {
        "msgName": "recorder_started",
        "nested": {"a": 1},
        "list": [1],
        "k" * (MAX_DETAIL_KEY_LENGTH + 1): 1,
        "huge": 2**64,
        "flag": True,
        "ratio": 0.5,
        "none": None,
    }
    kept = parse_notification(envelope(40, details)).details
    assert kept == {"msgName": "recorder_started", "flag": True, "ratio": 0.5, "none": None}


# =============================================================================================
# Odd input: every refusal is a NotificationError


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00\x00garbage",
        b"\xc3\x28",
        envelope(31, DETAILS_31_COMPOSITE).replace(b'"status": 0', b'"status": 1e400'),
        envelope(31, DETAILS_31_COMPOSITE).replace(b'"status": 0', b'"status": NaN'),
        envelope(31, DETAILS_31_COMPOSITE).replace(b'"status": 0', b'"status": -Infinity'),
        envelope(31, DETAILS_31_COMPOSITE).replace(b'"status": 0', b'"status": ' + b"1" * 5000),
        envelope(31, DETAILS_31_COMPOSITE).replace(b'"status": 0', b'"status": 1.5'),
        envelope(31, DETAILS_31_COMPOSITE)[:-7],
        b'"[[[[',
        b"",
        "not bytes",
        None,
    ],
    ids=[
        "utf32-bom-garbage",
        "invalid-utf8",
        "huge-float",
        "nan",
        "infinity",
        "5000-digit-status",
        "fractional-status",
        "truncated",
        "unterminated-string",
        "empty",
        "text-not-json",
        "none",
    ],
)
def test_odd_input_raises_only_notification_error(raw: Any) -> None:
    with pytest.raises(NotificationError):
        parse_notification(raw)


@pytest.mark.parametrize(
    ("raw", "msg_name"),
    [
        (envelope(40, {"msgName": "a\u0000b"}), "a\u0000b"),
        (envelope(40, {"msgName": "[[[[{{{{"}), "[[[[{{{{"),
        (envelope(40, {"msgName": "\ud800"}), "\ud800"),
        (
            envelope(40, {"msgName": "first"}).replace(b'"msgName": "first"', b'"msgName": "first", "msgName": "last"'),
            "last",
        ),
    ],
    ids=["nul", "brackets", "lone-surrogate", "duplicated-key"],
)
def test_odd_but_valid_bodies_parse_and_store(raw: bytes, msg_name: str) -> None:
    notification = parse_notification(raw)
    assert load_stored(json.dumps(notification.to_json())).details["msgName"] == msg_name


# =============================================================================================
# Storage and logging


@pytest.mark.parametrize(
    "raw",
    [
        envelope(31, DETAILS_31_COMPOSITE),
        envelope(71, DETAILS_71),
        envelope(11, {"exitStatus": 1}),
        envelope(12, {"newUid": 12}),
        envelope(1, {"errorLevel": 5}),
        X1_ENVELOPE,
        b'{"noticeId":"n","productId":1,"eventType":101,"notifyMs":1,"payload":{}}',
    ],
    ids=["31", "71", "11", "12", "1", "x1", "rtc"],
)
def test_to_json_round_trips_through_json_text(raw: bytes) -> None:
    notification = parse_notification(raw)
    stored = json.dumps(notification.to_json())
    assert Notification.from_json(json.loads(stored)) == notification


def test_to_json_is_a_copy() -> None:
    notification = parse_notification(envelope(31, DETAILS_31_COMPOSITE))
    stored = notification.to_json()
    stored["files"].clear()  # type: ignore[attr-defined]
    stored["details"]["status"] = 1  # type: ignore[index]
    assert (notification.files, notification.details["status"]) == (FILES_31_COMPOSITE, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("notice_id"), "The stored notification has no notice_id."),
        (lambda d: d.update(kind="finished"), "kind 'finished' is not one of"),
        (lambda d: d.update(event_type="31"), "event_type is a str, not a int."),
        (lambda d: d.update(files=["a.mp4"]), "files are not all objects."),
    ],
    ids=["missing-key", "unknown-kind", "wrong-type", "file-not-object"],
)
def test_from_json_refuses_what_to_json_did_not_write(change: Any, message: str) -> None:
    data = parse_notification(envelope(31, DETAILS_31_COMPOSITE)).to_json()
    change(data)
    with pytest.raises(NotificationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Notification.from_json(data)


def test_load_stored_returns_the_notification_of_a_good_document() -> None:
    notification = parse_notification(envelope(31, DETAILS_31_COMPOSITE))
    assert load_stored(json.dumps(notification.to_json()).encode()) == notification


def test_load_stored_refuses_a_document_nested_too_deep() -> None:
    """494 levels passed json.loads and then killed readers with RecursionError in from_json's deepcopy."""
    data = parse_notification(envelope(31, DETAILS_31_COMPOSITE)).to_json() | {"details": "DEEP"}
    stored = json.dumps(data).replace('"DEEP"', '{"x":' + "[" * 494 + "]" * 494 + "}")
    with pytest.raises(NotificationError, match="The stored notification is nested deeper than 16 levels"):
        load_stored(stored)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff", "null", "[]", '{"kind": "ended"}', "NaN", "[" * 1_000_000, b'{"a": 1e400}'],
    ids=["empty", "not-utf8", "null", "array", "incomplete", "nan", "megabyte-deep", "huge-float"],
)
def test_load_stored_refuses_what_it_cannot_read_with_notification_error(raw: str | bytes) -> None:
    with pytest.raises(NotificationError):
        load_stored(raw)


@pytest.mark.parametrize(
    ("key", "value"),
    [("notify_ms", 10**400), ("notify_ms", -1), ("event_type", 2**31), ("sequence", 2**63)],
    ids=["huge-notify-ms", "negative-notify-ms", "event-type-beyond-31-bits", "sequence-beyond-64-bits"],
)
def test_load_stored_refuses_integers_out_of_range(key: str, value: int) -> None:
    data = parse_notification(envelope(31, DETAILS_31_COMPOSITE)).to_json() | {key: value}
    with pytest.raises(NotificationError, match=f"{key} .* is not between"):
        load_stored(json.dumps(data))


def test_load_stored_bounds_a_document_stored_with_the_whole_details() -> None:
    """Documents stored before details were bounded still read, without their second copy of the files."""
    notification = parse_notification(envelope(31, DETAILS_31_COMPOSITE))
    data = notification.to_json() | {"details": json.loads(DETAILS_31_COMPOSITE)}
    assert load_stored(json.dumps(data)) == notification


def test_describe_names_notice_sid_event_and_msg_name() -> None:
    notification = parse_notification(envelope(31, DETAILS_31_COMPOSITE))
    assert describe(notification) == (
        f"Agora notification notice-31: sid={SID}, eventType 31 (uploaded), ended, 2 file(s)."
    )


def test_describe_keeps_hostile_values_on_one_short_line_without_paths() -> None:
    details = {"msgName": "uploaded\nFAKE LOG LINE" + "x" * 200, "status": 0, "fileList": ["secret/path/a.m3u8"]}
    line = describe(parse_notification(envelope(31, details, cname="private-channel")))
    assert "\n" not in line and len(line) < 250 and "secret/path" not in line and "private-channel" not in line


def test_describe_names_another_product() -> None:
    raw = b'{"noticeId":"n1","productId":1,"eventType":101,"notifyMs":1,"payload":{}}'
    assert describe(parse_notification(raw)) == "Agora notification n1 for productId 1: sid=-, eventType 101, other."


def test_importing_the_module_does_not_import_airflow() -> None:
    code = "import sys, airflow_provider_agora.notifications; sys.exit('airflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_cloud_recording_product_id() -> None:
    assert CLOUD_RECORDING_PRODUCT_ID == 3
