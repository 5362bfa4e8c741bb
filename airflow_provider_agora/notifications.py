"""Agora Notification Center Service (NCS) notifications: signatures, parsing and classification.

Pure functions, no I/O and no logging: a receiver verifies the raw body with ``verify_signature``,
turns it into a ``Notification`` with ``parse_notification`` and stores ``Notification.to_json()``;
whoever waits for a recording reads it back with ``load_stored`` (or ``Notification.from_json``).

Bodies come from the internet and a valid signature only proves they come from *an* Agora project,
so every limit is enforced here: the JSON nesting depth is checked before anything parses the body
(no input can exhaust the stack, in the receiver or in a reader), every integer read must fit the
range its field can have, and a Notification keeps a bounded part of Agora's ``details``.

NCS signs the raw request body twice with the product's Secret: ``Agora-Signature`` is the hex
HMAC-SHA1 and ``Agora-Signature-V2`` the hex HMAC-SHA256. Nothing else is signed (no timestamp, no
URL), so replay protection and de-duplication are the receiver's job: terminal events
(``ENDING_EVENT_TYPES``) by ``(sid, eventType)``, the others by ``noticeId``.

A notification's files are normalised by the same code that normalises ``query`` answers, so a
file list looks the same whichever way it arrived (web recording's ``filename`` becomes
``fileName``, ``uid`` a string, ``sliceStartTime`` an integer).

This module imports only the standard library when it is imported, so that the receiver pays
nothing for it at start-up; the file normaliser (which imports Airflow) is imported on first use.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

if TYPE_CHECKING:
    from airflow_provider_agora.results import RecordingFile

__all__ = [
    "CLOUD_RECORDING_PRODUCT_ID",
    "ENDED",
    "ENDING_EVENT_TYPES",
    "ERROR",
    "EXITED",
    "FAILOVER",
    "KINDS",
    "MAX_DETAIL_KEY_LENGTH",
    "MAX_DETAIL_TEXT_LENGTH",
    "MAX_KEPT_DETAILS",
    "MAX_NESTING_DEPTH",
    "OTHER",
    "PROGRESS",
    "PROGRESS_EVENT_TYPES",
    "SIGNATURE_HEADER",
    "SIGNATURE_V2_HEADER",
    "UPLOAD_FAILED",
    "WEB_FAILED",
    "Notification",
    "NotificationError",
    "NotificationKind",
    "describe",
    "load_stored",
    "namespace_of",
    "parse_notification",
    "sign",
    "verify_signature",
]

CLOUD_RECORDING_PRODUCT_ID = 3

SIGNATURE_HEADER = "Agora-Signature"  # hex HMAC-SHA1 of the raw body
SIGNATURE_V2_HEADER = "Agora-Signature-V2"  # hex HMAC-SHA256 of the raw body

# What a cloud-recording notification means for the recording (``Notification.kind``).
NotificationKind = Literal["ended", "upload_failed", "exited", "web_failed", "failover", "error", "progress", "other"]
ENDED: NotificationKind = (
    "ended"  # 31/32 with status 0, 71 with code 0 or 1: the recording ended and its files are listed
)
UPLOAD_FAILED: NotificationKind = "upload_failed"  # 31/32 with a status other than 0
EXITED: NotificationKind = "exited"  # 11: the session exited; exit_status 0 normal, 1 abnormal
WEB_FAILED: NotificationKind = (
    "web_failed"  # 71 with a code other than 0, or 72 (capability limit): web recording stopped
)
FAILOVER: NotificationKind = "failover"  # 12: the recording moved to another server and uid (new_uid)
ERROR: NotificationKind = "error"  # 1: an error; error_level 5 is fatal
PROGRESS: NotificationKind = "progress"  # a documented informational event
OTHER: NotificationKind = "other"  # an event type this module does not know, or another product's notification
KINDS: frozenset[str] = frozenset(get_args(NotificationKind))

#: Terminal events: de-duplicate them by ``(sid, eventType)``, everything else by ``noticeId``.
ENDING_EVENT_TYPES = frozenset({11, 31, 32, 71})

#: Agora's documented informational cloud-recording events: warnings (2), status conflicts (3), the
#: first M3U8 (4), high-availability registration (13), uploader (30, 33), recorder (40-45), VoD
#: (60, 61), web recorder started/reloaded (70, 73), postponed transcoding (80, 81, 1001), download
#: (90) and CDN push (100).
PROGRESS_EVENT_TYPES = frozenset({2, 3, 4, 13, 30, 33, 40, 41, 42, 43, 44, 45, 60, 61, 70, 73, 80, 81, 90, 100, 1001})

_UPLOADED = frozenset({31, 32})
_WEB_STOPPED = 71
# 71's codes for a web recording that ended as configured: 0 "ok" (stopped), 1 "max_recording_hour"
# (its maxRecordingHour was reached; Agora's own example lists the files). The others are failures.
_WEB_STOPPED_NORMALLY = frozenset({0, 1})
_WEB_CAPABILITY_LIMIT = 72
_SESSION_EXIT = 11
_FAILOVER = 12
_ERROR = 1

#: The deepest nesting of arrays and objects a body or a stored notification may have. Agora's deepest
#: real body is envelope, payload, details, fileList, file object: 5.
MAX_NESTING_DEPTH = 16
#: What a Notification keeps of Agora's ``details`` (the file list aside, which becomes ``files``):
#: at most this many keys, each a string of at most MAX_DETAIL_KEY_LENGTH characters, with scalar
#: values only, strings cut to MAX_DETAIL_TEXT_LENGTH characters.
MAX_KEPT_DETAILS = 32
MAX_DETAIL_KEY_LENGTH = 64
MAX_DETAIL_TEXT_LENGTH = 1024
# Kept before any other key when details has more than MAX_KEPT_DETAILS: the ones Agora documents.
_DOCUMENTED_DETAILS = (
    "msgName",
    "status",
    "code",
    "message",
    "details",
    "exitStatus",
    "errorLevel",
    "errorCode",
    "errorMsg",
    "module",
    "stat",
    "newUid",
    "limitType",
    "recorderStartTime",
)

# Integer ranges (inclusive): any integer read must fit 64 bits; ids and types are 32-bit
# non-negative; millisecond timestamps are non-negative and exact in a double (and in JavaScript), so
# ``notify_ms / 1000`` can never overflow.
_INT64 = (-(2**63), 2**63 - 1)
_ID = (0, 2**31 - 1)
_MILLISECONDS = (0, 2**53 - 1)

# A JSON string (skipped whole; an unterminated one runs to the end) or one bracket.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_MAX_SECRETS = 2  # the current Secret and, while it is being rotated, the previous one
_ABSENT = object()
_MALFORMED = object()
_DROPPED = object()


class NotificationError(ValueError):
    """A notification body, or a stored notification, cannot be understood; the message says why."""


# ---------------------------------------------------------------------------------------------
# Signatures


def sign(raw: bytes, secret: str) -> dict[str, str]:
    """Both signature headers NCS sends with ``raw`` when the product's Secret is ``secret``."""
    if not secret:
        raise ValueError("An NCS notification cannot be signed with an empty secret.")
    key = secret.encode("utf-8")
    return {
        SIGNATURE_HEADER: hmac.new(key, raw, hashlib.sha1).hexdigest(),
        SIGNATURE_V2_HEADER: hmac.new(key, raw, hashlib.sha256).hexdigest(),
    }


def namespace_of(secret: str) -> str:
    """Where notifications verified with ``secret`` are kept: a digest that names the Agora project
    (Agora issues one NCS Secret per project) without revealing the secret.

    Two connections that hold the same secret share a namespace; a notification verified with
    another project's secret lands in another one, so it can neither settle this project's waits
    nor suppress its genuine notifications as duplicates.
    """
    if not secret:
        raise ValueError("An NCS namespace needs a non-empty secret.")
    return hmac.new(secret.encode("utf-8"), b"airflow-provider-agora/ncs-namespace", hashlib.sha256).hexdigest()[:16]


def verify_signature(raw: bytes, headers: Mapping[str, str], secrets: Sequence[str | None]) -> bool:
    """Whether ``raw`` (the request body exactly as received) was signed by NCS with one of ``secrets``.

    ``Agora-Signature-V2`` (HMAC-SHA256) decides when it is present, even when ``Agora-Signature``
    would match; ``Agora-Signature`` (HMAC-SHA1) is consulted only when V2 is absent. Header names are
    case-insensitive (``headers`` may be a dict or Starlette's ``Headers``), digests are compared in
    constant time, and anything missing or malformed is False. ``secrets`` holds the current Secret
    and, during a rotation, the previous one; empty entries are skipped, so no secret at all is False.
    """
    if isinstance(secrets, (str, bytes)):
        raise TypeError("verify_signature takes a list of secrets (current, previous), not one string.")
    keys = [secret.encode("utf-8") for secret in secrets if secret]
    if len(keys) > _MAX_SECRETS:
        raise ValueError(
            f"verify_signature takes at most {_MAX_SECRETS} secrets (the current one and the previous one), "
            f"not {len(keys)}."
        )
    if not keys:
        return False

    v2 = _signature_header(headers, SIGNATURE_V2_HEADER, _SHA256_HEX)
    if v2 is not _ABSENT:
        return isinstance(v2, str) and _matches(raw, v2, keys, "sha256")
    v1 = _signature_header(headers, SIGNATURE_HEADER, _SHA1_HEX)
    return isinstance(v1, str) and _matches(raw, v1, keys, "sha1")


def _signature_header(headers: Mapping[str, str], name: str, shape: re.Pattern[str]) -> object:
    """The header's lower-case hex digest, ``_ABSENT``, or ``_MALFORMED`` (wrong shape, or conflicting copies)."""
    wanted = name.lower()
    values = set()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            values.add(value.strip().lower() if isinstance(value, str) else None)
    if not values:
        return _ABSENT
    if len(values) > 1:
        return _MALFORMED
    value = values.pop()
    return value if value is not None and shape.fullmatch(value) else _MALFORMED


def _matches(raw: bytes, digest: str, keys: list[bytes], algorithm: str) -> bool:
    matched = False
    for key in keys:  # no early exit: every configured secret costs the same
        matched |= hmac.compare_digest(hmac.new(key, raw, algorithm).hexdigest(), digest)
    return matched


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Notification:
    """One NCS notification: Agora's envelope and payload, plus what it means for the recording.

    ``details`` is a bounded part of Agora's ``payload.details``, so a stored notification stays small:
    its scalar values (``msgName``, ``status``, ``code``, ``exitStatus``, ...; strings cut to
    ``MAX_DETAIL_TEXT_LENGTH`` characters) under at most ``MAX_KEPT_DETAILS`` keys of at most
    ``MAX_DETAIL_KEY_LENGTH`` characters, Agora's documented keys first. Nested objects and arrays are
    dropped, ``fileList`` too: its files are all in ``files``. The derived fields are set only for the
    events that carry them: ``files`` for 31, 32 and 71 (normalised like ``query`` answers),
    ``upload_status`` for 31/32, ``web_code`` for 71, ``exit_status`` for 11, ``new_uid`` for 12,
    ``error_level`` for 1.
    """

    notice_id: str
    product_id: int
    event_type: int
    notify_ms: int
    sid: str | None
    cname: str | None
    uid: str | None
    sequence: int | None
    sendts: int | None
    service_type: int | None
    details: dict[str, Any]
    kind: NotificationKind
    files: list[RecordingFile]
    exit_status: int | None = None
    error_level: int | None = None
    new_uid: str | None = None
    web_code: int | None = None
    upload_status: int | None = None

    def to_json(self) -> dict[str, object]:
        """A JSON-serialisable copy, keyed by field name; ``from_json`` turns it back into an equal Notification."""
        return {item.name: copy.deepcopy(getattr(self, item.name)) for item in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Notification:
        """The Notification that ``to_json`` wrote; keys it does not know are ignored.

        Integers must be in their fields' ranges and ``details`` is bounded as ``parse_notification``
        bounds it (older documents kept Agora's whole details). ``data`` is trusted to be shallow: to read
        JSON text, use ``load_stored``, which checks its depth first.
        """
        if not isinstance(data, Mapping):
            raise NotificationError(f"A stored notification is a {type(data).__name__}, not an object.")
        stored = _Stored(data)
        kind = stored.text("kind")
        if kind not in KINDS:
            raise NotificationError(f"The stored notification's kind {_shown(kind)} is not one of {sorted(KINDS)}.")
        raw_files = stored.value("files", list)
        if not all(isinstance(item, dict) for item in raw_files):
            raise NotificationError("The stored notification's files are not all objects.")
        return cls(
            notice_id=stored.text("notice_id"),
            product_id=stored.integer("product_id", _ID),
            event_type=stored.integer("event_type", _ID),
            notify_ms=stored.integer("notify_ms", _MILLISECONDS),
            sid=stored.optional_text("sid"),
            cname=stored.optional_text("cname"),
            uid=stored.optional_text("uid"),
            sequence=stored.optional_integer("sequence"),
            sendts=stored.optional_integer("sendts", _MILLISECONDS),
            service_type=stored.optional_integer("service_type"),
            details=_kept_details(stored.value("details", dict)),
            kind=cast("NotificationKind", kind),
            files=cast("list[RecordingFile]", copy.deepcopy(raw_files)),
            exit_status=stored.optional_integer("exit_status"),
            error_level=stored.optional_integer("error_level"),
            new_uid=stored.optional_text("new_uid"),
            web_code=stored.optional_integer("web_code"),
            upload_status=stored.optional_integer("upload_status"),
        )


class _Stored:
    """Typed reads from a stored (``to_json``) notification, strict: the provider wrote it."""

    def __init__(self, data: Mapping[str, object]) -> None:
        self.data = data

    def value(self, key: str, kind: type[Any]) -> Any:
        if key not in self.data:
            raise NotificationError(f"The stored notification has no {key}.")
        value = self.data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise NotificationError(
                f"The stored notification's {key} is a {type(value).__name__}, not a {kind.__name__}."
            )
        return value

    def text(self, key: str) -> str:
        return cast(str, self.value(key, str))

    def integer(self, key: str, bounds: tuple[int, int] = _INT64) -> int:
        number = cast(int, self.value(key, int))
        if not bounds[0] <= number <= bounds[1]:
            raise NotificationError(
                f"The stored notification's {key} {_shown(number)} is not between {bounds[0]} and {bounds[1]}."
            )
        return number

    def optional_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def optional_integer(self, key: str, bounds: tuple[int, int] = _INT64) -> int | None:
        return None if self.data.get(key) is None else self.integer(key, bounds)


def load_stored(raw: str | bytes) -> Notification:
    """The Notification in a stored ``to_json`` document (JSON text), for readers that skip what they cannot use.

    Anything unreadable (not JSON, nested deeper than ``MAX_NESTING_DEPTH``, wrong types or ranges)
    raises NotificationError and nothing else, so one bad document cannot stop a reader.
    """
    try:
        text = _json_text(raw, "stored notification")
        _check_depth(text, "stored notification")
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        return Notification.from_json(data)
    except NotificationError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise NotificationError(
            f"The stored notification cannot be read ({type(error).__name__}: {_printable(str(error), 160)})."
        ) from None


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_notification(raw: bytes) -> Notification:
    """The Notification in an NCS request body (verify the signature first).

    The envelope (``noticeId``, ``productId``, ``eventType``, ``notifyMs``) is required for every
    product. A cloud-recording notification's ``payload`` is required and checked; another product's
    payload is read as far as it fits and the notification's kind is ``OTHER``. Numbers sent as
    numeric strings are accepted. The sid is ``payload.sid``, else the top-level ``sid``. The kept
    ``details`` are bounded (see ``Notification``); the kind is decided on the details as sent.

    Ranges: ``productId`` and ``eventType`` are 0 to 2**31 - 1, ``notifyMs`` and ``sendts`` 0 to
    2**53 - 1 (the clock is the receiver's to check), every other integer fits 64 bits.

    Raises NotificationError, and nothing else, with one sentence saying what is wrong, when the body
    is not JSON, is nested deeper than ``MAX_NESTING_DEPTH`` (checked before parsing), is not an
    object, misses an envelope field or has one out of range, or (cloud recording) has a payload,
    details or file list of the wrong type, an integer out of range, or a 31/32 without a numeric
    ``status`` or a 71 without a numeric ``code`` (their kind depends on it).
    """
    text = _json_text(raw, "notification body")
    _check_depth(text, "notification body")
    try:
        body = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as error:
        raise NotificationError(f"The notification body is not JSON ({_printable(str(error), 160)}).") from None
    if not isinstance(body, dict):
        raise NotificationError(f"The notification body is a JSON {_json_type(body)}, not an object.")

    notice_id = _text(body, "noticeId", "notification", strict=True)
    if notice_id is None:
        raise NotificationError("The notification has no noticeId.")
    where = f"notification {_shown(notice_id)}"
    product_id = _required_integer(body, "productId", where, _ID)
    event_type = _required_integer(body, "eventType", where, _ID)
    notify_ms = _required_integer(body, "notifyMs", where, _MILLISECONDS)

    strict = product_id == CLOUD_RECORDING_PRODUCT_ID
    payload = body.get("payload")
    if not isinstance(payload, dict):
        if strict:
            shape = "no payload" if payload is None else f"a payload that is a JSON {_json_type(payload)}"
            raise NotificationError(f"The {where} has {shape}, not an object.")
        payload = {}
    details = payload.get("details")
    if not isinstance(details, dict):
        if strict and details is not None:
            raise NotificationError(
                f"The {where} has payload.details that is a JSON {_json_type(details)}, not an object."
            )
        details = {}

    sid = _text(payload, "sid", where, strict=strict, prefix="payload.") or _text(body, "sid", where, strict=strict)
    notification = Notification(
        notice_id=notice_id,
        product_id=product_id,
        event_type=event_type,
        notify_ms=notify_ms,
        sid=sid,
        cname=_text(payload, "cname", where, strict=strict, prefix="payload."),
        uid=_text(payload, "uid", where, strict=strict, prefix="payload."),
        sequence=_integer(payload, "sequence", where, strict=strict, prefix="payload."),
        sendts=_integer(payload, "sendts", where, strict=strict, prefix="payload.", bounds=_MILLISECONDS),
        service_type=_integer(payload, "serviceType", where, strict=strict, prefix="payload."),
        details=_kept_details(details),
        kind=OTHER,
        files=[],
    )
    if not strict:
        return notification
    return _classified(notification, details, where)


def _classified(notification: Notification, details: dict[str, Any], where: str) -> Notification:
    """The cloud-recording notification with its kind and the derived fields of its event type.

    ``details`` is Agora's, as sent: the notification keeps only part of it, not ``fileList``.
    """
    event_type = notification.event_type
    if event_type in _UPLOADED:
        status = _integer(details, "status", where, strict=True, prefix="payload.details.")
        if status is None:
            raise NotificationError(f"The {where} (eventType {event_type}) has no payload.details.status.")
        return replace(
            notification,
            kind=ENDED if status == 0 else UPLOAD_FAILED,
            upload_status=status,
            files=_files(details, notification.sid, where),
        )
    if event_type == _WEB_STOPPED:
        code = _integer(details, "code", where, strict=True, prefix="payload.details.")
        if code is None:
            raise NotificationError(f"The {where} (eventType 71) has no payload.details.code.")
        return replace(
            notification,
            kind=ENDED if code in _WEB_STOPPED_NORMALLY else WEB_FAILED,
            web_code=code,
            files=_files(details, notification.sid, where),
        )
    if event_type == _WEB_CAPABILITY_LIMIT:
        return replace(notification, kind=WEB_FAILED)
    if event_type == _SESSION_EXIT:
        exit_status = _integer(details, "exitStatus", where, strict=True, prefix="payload.details.")
        return replace(notification, kind=EXITED, exit_status=exit_status)
    if event_type == _FAILOVER:
        new_uid = _text(details, "newUid", where, strict=True, prefix="payload.details.")
        return replace(notification, kind=FAILOVER, new_uid=new_uid)
    if event_type == _ERROR:
        error_level = _integer(details, "errorLevel", where, strict=True, prefix="payload.details.")
        return replace(notification, kind=ERROR, error_level=error_level)
    if event_type in PROGRESS_EVENT_TYPES:
        return replace(notification, kind=PROGRESS)
    return notification


def _files(details: dict[str, Any], sid: str | None, where: str) -> list[RecordingFile]:
    """``details.fileList`` through the normaliser the sensor uses for ``query`` answers."""
    # Imported here, not at module level: results imports Airflow, which the simulator does without.
    from airflow_provider_agora.exceptions import AgoraResponseError
    from airflow_provider_agora.results import _file_list

    value = details.get("fileList")
    try:
        files = _file_list(value, sid=sid, where="payload.details.fileList")
    except (AgoraResponseError, ValueError, TypeError):
        raise NotificationError(
            f"The {where} has a payload.details.fileList that is not a list of file objects: {_shown(value)}."
        ) from None
    for file in files:
        for key, item in file.items():
            if isinstance(item, int) and not isinstance(item, bool) and not _INT64[0] <= item <= _INT64[1]:
                raise NotificationError(
                    f"The {where} lists a file whose {_shown(key)} {_shown(item)} does not fit 64 bits."
                )
    return files


def _kept_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """The bounded part of Agora's details a Notification keeps (see ``Notification``): no second copy of
    the file list and no nesting, so a stored notification is about the size of its files."""
    kept: dict[str, Any] = {}
    for key in itertools.chain(_DOCUMENTED_DETAILS, details):
        if len(kept) >= MAX_KEPT_DETAILS:
            break
        if key == "fileList" or key in kept or key not in details:
            continue
        if not isinstance(key, str) or len(key) > MAX_DETAIL_KEY_LENGTH:
            continue
        value = _kept_scalar(details[key])
        if value is not _DROPPED:
            kept[key] = value
    return kept


def _kept_scalar(value: object) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else _DROPPED
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROPPED
    if isinstance(value, str):
        return value[:MAX_DETAIL_TEXT_LENGTH]
    return _DROPPED


def _text(data: Mapping[str, Any], key: str, where: str, *, strict: bool, prefix: str = "") -> str | None:
    """A string field (a number becomes its decimal string); missing or empty is None."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT64[0] <= value <= _INT64[1]:
            return str(value)
        if strict:
            raise NotificationError(f"The {where} has {prefix}{key} {_shown(value)}, which does not fit 64 bits.")
        return None
    if strict:
        raise NotificationError(
            f"The {where} has {prefix}{key} that is a JSON {_json_type(value)}, not a string: {_shown(value)}."
        )
    return None


def _integer(
    data: Mapping[str, Any],
    key: str,
    where: str,
    *,
    strict: bool,
    prefix: str = "",
    bounds: tuple[int, int] = _INT64,
) -> int | None:
    """An integer field within ``bounds`` (inclusive), also when sent as a numeric string; missing is None.

    Wrong or out of range is a NotificationError when ``strict``, else None (ignored).
    """
    value = data.get(key)
    if value is None:
        return None
    number = _as_integer(value)
    if number is not None and bounds[0] <= number <= bounds[1]:
        return number
    if not strict:
        return None
    if number is None:
        raise NotificationError(f"The {where} has {prefix}{key} {_shown(value)}, which is not an integer.")
    raise NotificationError(
        f"The {where} has {prefix}{key} {_shown(value)}, which is not between {bounds[0]} and {bounds[1]}."
    )


def _required_integer(data: Mapping[str, Any], key: str, where: str, bounds: tuple[int, int]) -> int:
    number = _integer(data, key, where, strict=True, bounds=bounds)
    if number is None:
        raise NotificationError(f"The {where} has no {key}.")
    return number


def _as_integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def _json_text(raw: object, what: str) -> str:
    """``raw`` as text, decoded as ``json.loads`` decodes bytes (UTF-8, -16 or -32), so the depth scan
    reads the characters the parser will read."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, (bytes, bytearray)):
        raise NotificationError(f"The {what} is a {type(raw).__name__}, not bytes or text.")
    try:
        return raw.decode(json.detect_encoding(raw), "surrogatepass")
    except (UnicodeDecodeError, LookupError) as error:
        raise NotificationError(f"The {what} is not JSON ({_printable(str(error), 160)}).") from None


def _check_depth(text: str, what: str) -> None:
    """Refuse JSON text nested deeper than ``MAX_NESTING_DEPTH``, before anything parses it.

    One left-to-right pass over the brackets outside strings (a string, escapes and all, is one
    token), with no recursion, so a 1 MiB ``[[[[...`` costs one linear scan that stops at the limit.
    """
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                raise NotificationError(
                    f"The {what} is nested deeper than {MAX_NESTING_DEPTH} levels of arrays and objects."
                )
        elif char in "]}" and depth:
            depth -= 1


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:20]} is out of range")
    return number


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _shown(value: object, limit: int = 60) -> str:
    """A value as it may appear in an error message or a log line: repr, one line, truncated."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # no repr of a megabyte to show sixty characters of it
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print (sys.get_int_max_str_digits)
        return "a very long integer"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Logging


def describe(notification: Notification) -> str:
    """One short, log-safe sentence about a notification: noticeId, sid, eventType, msgName, kind.

    Nothing else from the payload: no channel name, no file names or storage paths (only how many
    files), and values are cut short and stripped of control characters.
    """
    msg_name = notification.details.get("msgName")
    name = f" ({_printable(msg_name)})" if isinstance(msg_name, str) and msg_name else ""
    product = (
        "" if notification.product_id == CLOUD_RECORDING_PRODUCT_ID else f" for productId {notification.product_id}"
    )
    files = f", {len(notification.files)} file(s)" if notification.files else ""
    return (
        f"Agora notification {_printable(notification.notice_id)}{product}: "
        f"sid={_printable(notification.sid) if notification.sid else '-'}, "
        f"eventType {notification.event_type}{name}, {notification.kind}{files}."
    )


def _printable(text: str, limit: int = 64) -> str:
    cleaned = "".join(char if char.isprintable() else "?" for char in text[:limit])
    return cleaned if len(text) <= limit else cleaned + "..."
