"""The results the provider hands to downstream tasks, and how Agora's answers become them.

``query`` and ``stop`` answers are normalised into one JSON-serialisable shape.

Agora spells a recording's files four ways: ``fileListMode`` ``"string"`` (one M3U8 name, mix mode
with HLS only), ``"json"`` (a list of file objects), web recording (files under
``extensionServiceState[].payload.fileList``, whose items spell ``filename``), and nothing at all
(screenshots). ``parse_recording`` turns all of them into a list of file dicts with Agora's own
key names, so downstream tasks never care which mode made the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, cast

from airflow_provider_agora.exceptions import AgoraResponseError

__all__ = [
    "EndedBy",
    "PlaylistSummary",
    "RecordingFile",
    "RecordingMode",
    "RecordingResult",
    "RecordingSnapshot",
    "SettlingNotification",
    "StartResult",
    "StopResult",
    "parse_recording",
    "recording_result",
]


#: How a recording was made; Agora's ``mode`` path segment (``_protocol.RECORDING_MODES`` checks it).
RecordingMode = Literal["individual", "mix", "web"]
#: What ended a wait or a recording, in a result's ``ended_by``: its status reached the target
#: ("status"), it stayed gone past the grace period with ``on_not_found="succeed"`` ("not_found"),
#: a notification settled it ("notification"), the stop operator stopped it ("stop"), or it was
#: already gone when asked to stop ("already_stopped").
EndedBy = Literal["status", "not_found", "notification", "stop", "already_stopped"]


class RecordingFile(TypedDict, total=False):
    """One file of a recording, with Agora's key names whichever mode wrote it.

    Keys Agora adds beyond these are kept as sent.
    """

    fileName: str
    trackType: str  # "audio", "video" or "audio_and_video"
    uid: str  # "0" for a mixed file
    mixedAllUser: bool
    isPlayable: bool
    sliceStartTime: int  # ms since the epoch
    # Added by the provider where the storage is known (the sensor's or stop operator's ``storage``):
    key: str  # the object key in the bucket (the fileNamePrefix applied)
    uri: str  # where Airflow's ObjectStoragePath reads it, e.g. s3://bucket/key; absent without a reader


class PlaylistSummary(TypedDict):
    """What an HLS playlist in the bucket holds, once verified."""

    segments: int
    duration_seconds: float


class SettlingNotification(TypedDict):
    """Which of Agora's notifications ended a wait."""

    notice_id: str
    event_type: int


class _RecordingResultBase(TypedDict):
    """The keys every result has."""

    resource_id: str
    sid: str
    recording_mode: RecordingMode
    status: int | None  # Agora's serverResponse.status
    ended_by: EndedBy | None  # None only in what a wait saw last, before anything ended it
    files: list[RecordingFile]
    server_response: dict[str, Any]  # Agora's serverResponse, as sent


class RecordingResult(_RecordingResultBase, total=False):
    """The sensor's XCom value (and the core of the stop operator's)."""

    notification: SettlingNotification  # only when a notification settled the wait ("notification")
    storage: dict[str, Any]  # where the files are (vendor, region, bucket, prefix, uri): no secret
    playlists: dict[str, PlaylistSummary]  # per playlist key, once verified in storage
    verified_in_storage: bool  # True: every file was found in the bucket, complete; False: no file list to check


class StopResult(_RecordingResultBase):
    """The stop operator's XCom value."""

    uploading_status: str | None  # "uploaded", or "backuped": some files arrive later


class _StartResultBase(TypedDict):
    """The keys every start result has."""

    resource_id: str
    sid: str
    cname: str
    uid: str
    recording_mode: RecordingMode
    app_id: str


class StartResult(_StartResultBase, total=False):
    """The start operator's XCom value: what the sensor and the stop operator need."""

    storage: dict[str, Any]  # from clientRequest.storageConfig, without its keys


# Agora's file keys, by their lower-case spelling (web recording writes ``filename``).
_FILE_KEYS = {
    "filename": "fileName",
    "tracktype": "trackType",
    "uid": "uid",
    "mixedalluser": "mixedAllUser",
    "isplayable": "isPlayable",
    "slicestarttime": "sliceStartTime",
}
_BOOLEAN_KEYS = {"mixedAllUser", "isPlayable"}
_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only: str.isdigit also accepts "²"
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}

WEB_RECORDER_SERVICE = "web_recorder_service"
RTMP_PUBLISH_SERVICE = "rtmp_publish_service"


@dataclass(frozen=True)
class RecordingSnapshot:
    """What one ``query`` or ``stop`` answer says about a recording."""

    status: int | None
    files: list[RecordingFile]
    server_response: dict[str, Any]
    uploading_status: str | None = None
    rtmp_outputs: list[dict[str, Any]] = field(default_factory=list)


def _as_bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return value


def _as_int(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return value


def _normalise_file(item: Any, *, sid: str | None) -> RecordingFile:
    if isinstance(item, str):
        return {"fileName": item}
    if not isinstance(item, dict):
        raise AgoraResponseError(
            f"Agora listed a file of recording sid={sid} as {type(item).__name__} {item!r}, not an object: "
            f"the answer is kept in the task log; report it to Agora support.",
            body=item,
        )
    normalised: dict[str, Any] = {}
    for key, value in item.items():
        canonical = _FILE_KEYS.get(str(key).lower(), str(key))
        if canonical in _BOOLEAN_KEYS:
            value = _as_bool(value)
        elif canonical == "sliceStartTime":
            value = _as_int(value)
        elif canonical == "uid" and isinstance(value, int):
            value = str(value)
        normalised[canonical] = value
    return cast(RecordingFile, normalised)


def _file_list(value: Any, *, sid: str | None, where: str, slice_start: Any = None) -> list[RecordingFile]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        single: RecordingFile = {"fileName": value}
        if slice_start is not None:
            single["sliceStartTime"] = _as_int(slice_start)
        return [single]
    if isinstance(value, list):
        return [_normalise_file(item, sid=sid) for item in value]
    raise AgoraResponseError(
        f"Agora's {where} of recording sid={sid} is a {type(value).__name__}, not a list or a file name: "
        f"{value!r}. Report it to Agora support with the request id.",
        body=value,
    )


def _status(value: Any, *, sid: str | None, required: bool) -> int | None:
    status = _as_int(value)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    if required:
        seen = "missing" if value is None else f"{value!r}, not a number"
        raise AgoraResponseError(
            f"Agora's answer for recording sid={sid} has no usable serverResponse.status ({seen}); "
            f"cannot tell how far the recording is: retry later, and report the request id to Agora if "
            f"it persists.",
        )
    return None


def _server_response(body: Any, *, sid: str | None, required: bool) -> dict[str, Any]:
    server_response = body.get("serverResponse") if isinstance(body, dict) else None
    if isinstance(server_response, dict):
        return server_response
    if required:
        raise AgoraResponseError(
            f"Agora's answer for recording sid={sid} has no serverResponse object "
            f"({str(body)[:200]!r}): retry later, and report it to Agora support if it persists.",
            body=body,
        )
    return {}


def _extension_services(server_response: dict[str, Any], *, sid: str | None) -> list[tuple[Any, dict[str, Any]]]:
    """``(serviceName, payload)`` of each ``extensionServiceState`` entry that is an object."""
    services = server_response.get("extensionServiceState") or []
    if not isinstance(services, list):
        raise AgoraResponseError(
            f"Agora's extensionServiceState of recording sid={sid} is not a list: {services!r}.", body=services
        )
    return [
        (service.get("serviceName"), service["payload"] if isinstance(service.get("payload"), dict) else {})
        for service in services
        if isinstance(service, dict)
    ]


def parse_recording(body: Any, *, sid: str | None, require_status: bool = True) -> RecordingSnapshot:
    """Normalise a ``query`` (``require_status=True``) or ``stop`` answer.

    Unknown fields are not interpreted but stay in ``server_response``, so nothing Agora said is lost.
    """
    server_response = _server_response(body, sid=sid, required=require_status)
    files = _file_list(
        server_response.get("fileList", server_response.get("fileListStr")),
        sid=sid,
        where="serverResponse.fileList",
        slice_start=server_response.get("sliceStartTime"),
    )
    uploading_status = server_response.get("uploadingStatus")
    rtmp_outputs: list[dict[str, Any]] = []
    for name, payload in _extension_services(server_response, sid=sid):
        if name == WEB_RECORDER_SERVICE:
            files += _file_list(payload.get("fileList"), sid=sid, where="web_recorder_service fileList")
        elif name == RTMP_PUBLISH_SERVICE and isinstance(payload.get("outputs"), list):
            rtmp_outputs += [output for output in payload["outputs"] if isinstance(output, dict)]
        if "uploadingStatus" in payload:
            uploading_status = payload["uploadingStatus"]

    return RecordingSnapshot(
        status=_status(server_response.get("status"), sid=sid, required=require_status),
        files=files,
        server_response=server_response,
        uploading_status=uploading_status if isinstance(uploading_status, str) else None,
        rtmp_outputs=rtmp_outputs,
    )


def recording_result(
    resource_id: str, sid: str, recording_mode: RecordingMode, snapshot: RecordingSnapshot, ended_by: EndedBy | None
) -> RecordingResult:
    """The XCom value of the sensor and the stop operator: everything a downstream task needs."""
    return {
        "resource_id": resource_id,
        "sid": sid,
        "recording_mode": recording_mode,
        "status": snapshot.status,
        "ended_by": ended_by,
        "files": snapshot.files,
        "server_response": snapshot.server_response,
    }
