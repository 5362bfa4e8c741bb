"""The request protocol of Agora's Cloud Recording REST API: which request to send, what an answer means.

No I/O here. The sync hook and the async trigger both build requests and read answers with these
functions, so a rule about Agora lives in exactly one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from airflow_provider_agora.exceptions import (
    AgoraApiError,
    AgoraAuthenticationError,
    AgoraBadRequestError,
    AgoraConfigurationError,
    AgoraNoRecordedDataError,
    AgoraNotFoundError,
    AgoraRateLimitError,
    AgoraRequestNotCompletedError,
    AgoraResponseError,
    AgoraRouteNotFoundError,
    AgoraServerError,
)

RECORDING_MODES = ("individual", "mix", "web")

# Agora's documented body codes that change what an answer means.
CODE_REQUEST_NOT_COMPLETED = 65  # HTTP 206: reached Agora, timed out there; retry the same request
CODE_NO_RECORDED_DATA = 435  # HTTP 206 on stop: nobody published in the channel
CODE_INVALID_OPERATION = 49  # HTTP 400 on stop: the task is already exiting

# Resource IDs are URL-safe base64, sids hexadecimal, App IDs hexadecimal: none needs more than this.
_PATH_PARAMETER = re.compile(r"[A-Za-z0-9_\-]{1,1024}")
_UID = re.compile(r"[0-9]{1,10}")
_MAX_UID = 2**32 - 1
_SNIPPET = 200
# Never wait longer than this for a Retry-After, whatever the server says.
MAX_RETRY_AFTER_SECONDS = 60.0

JSON_HEADERS = {"Content-Type": "application/json;charset=utf-8", "Accept": "application/json"}


@dataclass(frozen=True)
class Endpoint:
    """One request to send: ``operation`` names it in messages and logs."""

    operation: str
    method: str
    path: str

    @property
    def is_control(self) -> bool:
        """Everything but ``query`` changes a recording: it goes ahead of polls in the budget."""
        return self.operation != "query"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _about(sid: str | None) -> str:
    return f"recording sid={sid}" if sid else "the recording"


def check_recording_mode(recording_mode: object, *, sid: str | None = None) -> str:
    if recording_mode not in RECORDING_MODES:
        raise AgoraConfigurationError(
            f"recording_mode {_short(recording_mode)} for {_about(sid)} is not valid: "
            f"use one of {', '.join(RECORDING_MODES)}."
        )
    return str(recording_mode)


def check_path_parameter(name: str, value: object, *, sid: str | None = None) -> str:
    """Refuse anything that could change which endpoint a request reaches, then URL-encode it."""
    if not isinstance(value, str) or not value:
        raise AgoraConfigurationError(
            f"{name} for {_about(sid)} must be a non-empty string, got {_short(value)}: "
            f"pass the value returned by Agora's acquire/start (for example from the start task's XCom)."
        )
    if not _PATH_PARAMETER.fullmatch(value):
        raise AgoraConfigurationError(
            f"{name} {_short(value)} for {_about(sid)} contains characters Agora never uses "
            f"(only letters, digits, '-' and '_' are allowed): check where the value comes from."
        )
    return quote(value, safe="")


def check_uid(uid: object, *, sid: str | None = None) -> str:
    """Agora wants the recorder's uid as a string holding an integer from 1 to 2**32-1."""
    text = str(uid) if isinstance(uid, int) and not isinstance(uid, bool) else uid
    if not isinstance(text, str) or not _UID.fullmatch(text) or not 0 < int(text) <= _MAX_UID:
        raise AgoraConfigurationError(
            f"uid {_short(uid)} for {_about(sid)} is not valid: Agora needs a whole number from 1 to "
            f"{_MAX_UID}, unique in the channel, as a string or int."
        )
    return text


def check_cname(cname: object, *, sid: str | None = None) -> str:
    if not isinstance(cname, str) or not cname:
        raise AgoraConfigurationError(
            f"cname for {_about(sid)} must be the channel name as a non-empty string, got {_short(cname)}."
        )
    return cname


def _base(app_id: str, sid: str | None) -> str:
    return f"/v1/apps/{check_path_parameter('app_id', app_id, sid=sid)}/cloud_recording"


def _session_path(app_id: str, resource_id: str, sid: str, recording_mode: str) -> str:
    mode = check_recording_mode(recording_mode, sid=sid)
    rid = check_path_parameter("resource_id", resource_id, sid=sid)
    return f"{_base(app_id, sid)}/resourceid/{rid}/sid/{check_path_parameter('sid', sid, sid=sid)}/mode/{mode}"


def acquire_endpoint(app_id: str) -> Endpoint:
    return Endpoint("acquire", "POST", f"{_base(app_id, None)}/acquire")


def start_endpoint(app_id: str, resource_id: str, recording_mode: str) -> Endpoint:
    mode = check_recording_mode(recording_mode)
    rid = check_path_parameter("resource_id", resource_id)
    return Endpoint("start", "POST", f"{_base(app_id, None)}/resourceid/{rid}/mode/{mode}/start")


def session_endpoint(operation: str, app_id: str, resource_id: str, sid: str, recording_mode: str) -> Endpoint:
    """``query``, ``update``, ``updateLayout`` or ``stop`` of one running session."""
    if operation == "updateLayout" and recording_mode != "mix":
        raise AgoraConfigurationError(
            f"updateLayout for {_about(sid)} exists only in mix mode, not {_short(recording_mode)}."
        )
    method = "GET" if operation == "query" else "POST"
    return Endpoint(operation, method, f"{_session_path(app_id, resource_id, sid, recording_mode)}/{operation}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            from datetime import datetime, timezone

            seconds = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _decode(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def _snippet(content: bytes) -> str:
    text = content[:_SNIPPET].decode("utf-8", "replace").strip()
    return text + ("..." if len(content) > _SNIPPET else "")


@dataclass(frozen=True)
class _ErrorRule:
    """One row of the table below: which answers it covers, the exception raised, and what to add."""

    statuses: range
    code: object  # an int code, or one of the markers below
    error: type[AgoraApiError]
    hint: str = ""


_ANY_CODE = "any"  # the body may have a code or not
_SERVICE = "service"  # the body has a "code" key: the recording service answered
_GATEWAY = "gateway"  # no "code" key: the API gateway in front of the service answered

# From Agora's documentation (Cloud Recording's RESTful API "common errors" and "response status
# codes" pages, docs.agora.io); the first row that matches decides. A 2xx answer without a code
# is a success and never reaches this table.
_ERROR_TABLE: tuple[_ErrorRule, ...] = (
    _ErrorRule(range(206, 207), CODE_REQUEST_NOT_COMPLETED, AgoraRequestNotCompletedError),
    _ErrorRule(
        range(206, 207),
        CODE_NO_RECORDED_DATA,
        AgoraNoRecordedDataError,
        " Nobody published audio or video in the channel, so there are no files.",
    ),
    _ErrorRule(
        range(401, 402),
        _ANY_CODE,
        AgoraAuthenticationError,
        " Agora rejected the credentials: check the Customer ID and Customer Secret of the connection and "
        "that they belong to the App ID's project.",
    ),
    _ErrorRule(range(404, 405), _SERVICE, AgoraNotFoundError),
    _ErrorRule(
        range(404, 405),
        _GATEWAY,
        AgoraRouteNotFoundError,
        " Agora's gateway found no such endpoint: the URL, HTTP method, App ID or recording mode is wrong "
        "(a session recorded in one mode must be queried in the same mode).",
    ),
    _ErrorRule(range(429, 430), _ANY_CODE, AgoraRateLimitError),
    _ErrorRule(range(500, 600), _ANY_CODE, AgoraServerError),
    _ErrorRule(range(400, 500), _ANY_CODE, AgoraBadRequestError),
    _ErrorRule(range(0, 1000), _ANY_CODE, AgoraApiError),
)


def code_number(code: object) -> int | None:
    """Agora's body code as a number, whether it was sent as ``65`` or ``"65"``."""
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().isdigit():
        return int(code.strip())
    return None


def _rule_for(status: int, has_code: bool, code: int | None) -> _ErrorRule:
    for rule in _ERROR_TABLE:
        if status not in rule.statuses:
            continue
        if (
            rule.code == _ANY_CODE
            or (rule.code == _SERVICE and has_code)
            or (rule.code == _GATEWAY and not has_code)
            or (isinstance(rule.code, int) and rule.code == code)
        ):
            return rule
    return _ERROR_TABLE[-1]


def interpret_response(
    operation: str,
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    sid: str | None = None,
) -> dict[str, Any]:
    """Return Agora's JSON body for a successful answer, or raise the exception that says what went wrong.

    Agora's error bodies come in two shapes: ``{"code": N, "reason": ...}`` from the recording
    service and ``{"message": ...}`` from the API gateway in front of it. The difference matters
    most for 404: the service's means "no such session (now)", the gateway's means "wrong URL". A
    body with a ``code`` key is the service's even when the code is a string (some proxies send
    it so); the code is kept on the exception as sent.
    """
    body = _decode(content)
    request_id = headers.get("X-Request-Id") or headers.get("x-request-id")
    fields = body if isinstance(body, dict) else {}
    raw_code = fields.get("code")
    has_code = raw_code is not None
    code: int | str | None = raw_code if isinstance(raw_code, (int, str)) and not isinstance(raw_code, bool) else None
    reason = fields.get("reason") if isinstance(fields.get("reason"), str) else None
    message = fields.get("message") if isinstance(fields.get("message"), str) else None

    if 200 <= status < 300 and not has_code:
        if isinstance(body, dict):
            return body
        raise AgoraResponseError(
            f"Agora answered {operation} for {_about(sid)} with HTTP {status} but the body is not a JSON "
            f"object ({_snippet(content)!r}; request id {request_id}): retry later, and report it to Agora "
            f"support with the request id if it persists.",
            body=body if body is not None else _snippet(content),
        )

    said = (
        f"code {raw_code}" + (f" ({reason})" if reason else "")
        if has_code
        else repr(message)
        if message
        else repr(_snippet(content))
    )
    summary = f"Agora {operation} for {_about(sid)} failed with HTTP {status}: {said}; request id {request_id}."
    details: dict[str, Any] = {
        "operation": operation,
        "status": status,
        "code": code,
        "reason": reason,
        "message": message,
        "request_id": request_id,
        "body": body if body is not None else _snippet(content),
    }
    rule = _rule_for(status, has_code, code_number(raw_code))
    if rule.error is AgoraRateLimitError:
        raise AgoraRateLimitError(
            summary + rule.hint, retry_after=parse_retry_after(headers.get("Retry-After")), **details
        )
    raise rule.error(summary + rule.hint, **details)
