"""Agora's Cloud Recording REST API without sockets: routing, auth, rate limit, faults, endpoints.

The order of checks mirrors Agora's Kong gateway in front of the recording service: an unknown
route is 404 before anything else, then Basic auth (401), then injected faults, then the
per-customer rate limit (429), then the App ID check and the endpoint itself.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import re
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_agora.simulator._faults import Faults
from airflow_provider_agora.simulator._lifecycle import (
    ALL_STREAMS,
    DEFAULT_BULK_HOLD,
    DEFAULT_RESOURCE_EXPIRED_HOUR,
    FIRST_SLICE_AT,
    RESOURCE_TTL,
    Clock,
    Recording,
    Resource,
)
from airflow_provider_agora.simulator._responses import (
    BAD_CREDENTIALS,
    INVALID_APPID,
    NO_ROUTE,
    UNAUTHORIZED,
    Response,
    json_response,
    rate_limited,
    service_error,
)

_MODES = "individual|mix|web"
_APP = r"/v1/apps/(?P<appid>[^/]+)/cloud_recording"
_RESOURCE = _APP + r"/resourceid/(?P<rid>[^/]+)"
_SESSION = _RESOURCE + r"/sid/(?P<sid>[^/]+)/mode/(?P<mode>" + _MODES + ")"

#: (method, path pattern, endpoint name); any other method/path is the gateway's 404.
ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(_APP + r"/acquire"), "acquire"),
    ("POST", re.compile(_RESOURCE + r"/mode/(?P<mode>" + _MODES + ")/start"), "start"),
    ("GET", re.compile(_SESSION + r"/query"), "query"),
    ("POST", re.compile(_SESSION + r"/update"), "update"),
    ("POST", re.compile(_RESOURCE + r"/sid/(?P<sid>[^/]+)/mode/(?P<mode>mix)/updateLayout"), "updateLayout"),
    ("POST", re.compile(_SESSION + r"/stop"), "stop"),
)

#: Most recordings one ``create_recordings`` call makes (keeps a control request bounded).
MAX_BULK_RECORDINGS = 100_000

# Agora's channel-name alphabet (89 characters) and limit (64 bytes).
_CNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%&()+-:;<=.>?@[]^_{}|~,")
_MAX_UID = 2**32 - 1


@dataclass(frozen=True)
class ApiResult:
    """An answer plus what the request log needs to know about the caller."""

    response: Response
    customer_id: str | None


class _BadRequest(Exception):
    """Raised by body validation; carries the finished answer."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class SlidingWindowLimiter:
    """Kong-style limit: at most ``limit`` accepted requests per key in any (t-1, t] second."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._accepted: dict[str, deque[float]] = {}

    def admit(self, key: str, now: float) -> bool:
        """Record and admit a request arriving at ``now`` (real seconds), or refuse it uncounted."""
        if self._limit is None:
            return True
        with self._lock:
            window = self._accepted.setdefault(key, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self._limit:
                return False
            window.append(now)
            return True


def _customer_from_header(header: str | None) -> tuple[str | None, str | None]:
    """Decode ``Authorization: Basic``; returns (customer id, secret), Nones when unreadable."""
    if not header:
        return None, None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None, None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    customer, sep, secret = decoded.partition(":")
    return (customer, secret) if sep else (customer, None)


def _parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        raise _BadRequest(service_error(400, 8, "invalid JSON body")) from None
    if not isinstance(data, dict):
        raise _BadRequest(service_error(400, 2, "request body must be a JSON object"))
    return data


def _client_request(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("clientRequest", {})
    if not isinstance(value, dict):
        raise _BadRequest(service_error(400, 2, "invalid parameter: clientRequest"))
    return value


def _require_cname_uid(body: dict[str, Any]) -> tuple[str, str]:
    cname, uid = body.get("cname"), body.get("uid")
    if not isinstance(cname, str) or not cname or len(cname.encode()) > 64 or set(cname) - _CNAME_CHARS:
        raise _BadRequest(service_error(400, 401, "invalid_channel_name"))
    if not isinstance(uid, str) or not uid.isdigit() or not 0 < int(uid) <= _MAX_UID:
        raise _BadRequest(service_error(400, 2, "invalid parameter: uid must be a string of 1..2^32-1"))
    return cname, uid


class CloudRecordingService:
    """The simulated service; ``handle`` is called from many server threads at once."""

    def __init__(
        self,
        customer_id: str,
        customer_secret: str,
        app_ids: Iterable[str],
        clock: Clock,
        faults: Faults,
        rate_limit_per_second: int | None,
    ) -> None:
        self._customer_id = customer_id
        self._customer_secret = customer_secret
        ordered_app_ids = tuple(app_ids)
        self._app_ids = frozenset(ordered_app_ids)
        self._default_app_id = ordered_app_ids[0] if ordered_app_ids else None
        self._clock = clock
        self._faults = faults
        self._limiter = SlidingWindowLimiter(rate_limit_per_second)
        self._lock = threading.Lock()
        self._resources: dict[str, Resource] = {}
        self._recordings: dict[str, Recording] = {}  # by sid
        self._started: dict[str, str] = {}  # resourceId -> sid
        self._handlers: dict[str, Callable[[dict[str, str], bytes], Response]] = {
            "acquire": self._acquire,
            "start": self._start,
            "query": self._query,
            "update": self._update,
            "updateLayout": self._update_layout,
            "stop": self._stop,
        }
        #: Called with the sids whose timeline just changed (start, stop, leave, bulk creation);
        #: the notification sender sets it. Called with the lock held: it must not block.
        self.on_change: Callable[[Sequence[str]], None] | None = None

    # -- entry point ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, authorization: str | None, body: bytes, arrival: float) -> ApiResult:
        """Answer one API request that arrived at ``arrival`` (monotonic real seconds)."""
        customer, secret = _customer_from_header(authorization)
        route = self._route(method, path)
        if route is None:
            return ApiResult(NO_ROUTE, customer)
        name, params = route
        if not authorization:
            return ApiResult(UNAUTHORIZED, customer)
        if customer != self._customer_id or secret != self._customer_secret:
            return ApiResult(BAD_CREDENTIALS, customer)
        fault = self._faults.take(name)
        if fault is not None:
            return ApiResult(fault, customer)
        if not self._limiter.admit(customer, arrival):
            return ApiResult(rate_limited(1), customer)
        if params["appid"] not in self._app_ids:
            return ApiResult(INVALID_APPID, customer)
        try:
            return ApiResult(self._handlers[name](params, body), customer)
        except _BadRequest as exc:
            return ApiResult(exc.response, customer)

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for route_method, pattern, name in ROUTES:
            match = pattern.fullmatch(path)
            if match is not None and route_method == method:
                return name, match.groupdict()
        return None

    def _changed(self, sids: Sequence[str]) -> None:
        if self.on_change is not None and sids:
            self.on_change(sids)

    @contextlib.contextmanager
    def locked_recording(self, sid: str) -> Iterator[Recording | None]:
        """The recording ``sid`` (``None`` if unknown) with the lock held, for the notification sender."""
        with self._lock:
            yield self._recordings.get(sid)

    # -- simulation controls -------------------------------------------------------------------

    def leave_channel(self, cname: str) -> int:
        """Every user leaves ``cname``; returns how many running recordings will idle-exit."""
        now = self._clock.now()
        affected: list[str] = []
        with self._lock:
            for recording in self._recordings.values():
                if (
                    recording.resource.cname == cname
                    and recording.mode != "web"
                    and recording.left_at is None
                    and self._status(recording, now) is not None
                ):
                    recording.left_at = now
                    affected.append(recording.sid)
            self._changed(affected)
        return len(affected)

    def create_recordings(
        self,
        end_times: Sequence[float],
        *,
        hold: float = DEFAULT_BULK_HOLD,
        mode: str = "mix",
        app_id: str | None = None,
        client_request: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Create recordings directly, for load tests: no acquire/start, no rate limit, no faults.

        Each is at status 5 with its first slice uploaded from now on, goes to 6 at its own
        ``end_times`` entry (wall-clock epoch seconds), 7 and 8 one and two simulated seconds later,
        and is gone ``hold`` simulated seconds after its end time. An end time in the past starts
        the recording before it, so it still has files. Each gets its own channel, so none conflicts
        with a started recording. Returns ``{"resource_id", "sid", "end_time"}`` per recording, in order.
        """
        chosen_app = check_bulk_arguments(
            end_times, hold, mode, self._default_app_id if app_id is None else app_id, self._app_ids, client_request
        )
        now = self._clock.now()
        created: list[dict[str, Any]] = []
        with self._lock:
            for end_time in end_times:
                ends_at = self._clock.from_epoch(float(end_time))
                sid = uuid.uuid4().hex
                resource = Resource(chosen_app, f"bulk_{sid}", "1", secrets.token_urlsafe(96), now, 720)
                started_at = min(now, ends_at) - FIRST_SLICE_AT
                recording = Recording.create(resource, sid, mode, dict(client_request or {}), started_at)
                recording.exit_at = ends_at
                recording.exit_duration = float(hold)
                self._resources[resource.resource_id] = resource
                self._recordings[sid] = recording
                self._started[resource.resource_id] = sid
                created.append({"resource_id": resource.resource_id, "sid": sid, "end_time": float(end_time)})
            self._changed([item["sid"] for item in created])
        return created

    # -- helpers (call with self._lock held) ------------------------------------------------------

    def _status(self, recording: Recording, now: float) -> int | None:
        if recording.abnormal_at is None:
            recording.abnormal_at = self._faults.abnormal_at(recording.sid)
        return recording.status(now)

    def _slice_start_ms(self, recording: Recording) -> int:
        return self._clock.epoch_ms(recording.started_at + FIRST_SLICE_AT)

    def _session(self, params: dict[str, str], now: float) -> tuple[Recording, int]:
        """The live recording addressed by the path, or the service's 404."""
        recording = self._recordings.get(params["sid"])
        status = None
        if (
            recording is not None
            and recording.resource.resource_id == params["rid"]
            and recording.resource.app_id == params["appid"]
            and recording.mode == params["mode"]
            and not self._faults.is_transiently_missing(recording.sid)
        ):
            status = self._status(recording, now)
        if recording is None or status is None:
            extra: dict[str, Any] = {"resourceId": params["rid"], "sid": params["sid"]}
            if recording is not None:
                extra = {"cname": recording.resource.cname, "uid": recording.resource.uid, **extra}
            raise _BadRequest(service_error(404, 404, "failed to find worker", **extra))
        return recording, status

    @staticmethod
    def _check_body_matches(recording: Recording, body: dict[str, Any]) -> None:
        if body.get("cname") != recording.resource.cname or body.get("uid") != recording.resource.uid:
            raise _BadRequest(service_error(400, 432, "cname or uid does not match the resourceId"))

    @staticmethod
    def _ids(recording: Recording) -> dict[str, Any]:
        resource = recording.resource
        return {"cname": resource.cname, "uid": resource.uid, "resourceId": resource.resource_id, "sid": recording.sid}

    # -- endpoints -----------------------------------------------------------------------------

    def _acquire(self, params: dict[str, str], raw: bytes) -> Response:
        body = _parse_json_object(raw)
        cname, uid = _require_cname_uid(body)
        expired_hour = _client_request(body).get("resourceExpiredHour", DEFAULT_RESOURCE_EXPIRED_HOUR)
        if isinstance(expired_hour, bool) or not isinstance(expired_hour, int) or not 1 <= expired_hour <= 720:
            return service_error(400, 2, "Acquire: invalid resourceExpiredHour value!")
        resource_id = secrets.token_urlsafe(96)
        resource = Resource(params["appid"], cname, uid, resource_id, self._clock.now(), expired_hour)
        with self._lock:
            self._resources[resource_id] = resource
        return json_response(200, {"cname": cname, "uid": uid, "resourceId": resource_id})

    def _start(self, params: dict[str, str], raw: bytes) -> Response:
        body = _parse_json_object(raw)
        client_request = _client_request(body)
        now = self._clock.now()
        with self._lock:
            resource = self._resources.get(params["rid"])
            if resource is None or resource.app_id != params["appid"]:
                return service_error(400, 432, "invalid resourceId")
            if params["rid"] in self._started:
                return service_error(201, 7, "already started")
            if now - resource.acquired_at > RESOURCE_TTL:
                return service_error(400, 433, "resource expired")
            if body.get("cname") != resource.cname or body.get("uid") != resource.uid:
                return service_error(400, 432, "cname or uid does not match the resourceId")
            for other in self._recordings.values():
                if other.resource.instance == resource.instance and self._status(other, now) is not None:
                    return service_error(400, 53, "task conflict")
            sid = uuid.uuid4().hex
            recording = Recording.create(resource, sid, params["mode"], client_request, now)
            self._recordings[sid] = recording
            self._started[resource.resource_id] = sid
            self._changed([sid])
            return json_response(200, self._ids(recording))

    def _query(self, params: dict[str, str], raw: bytes) -> Response:
        now = self._clock.now()
        with self._lock:
            recording, status = self._session(params, now)
            server_response = recording.query_response(now, status, self._slice_start_ms(recording))
            return json_response(200, {**self._ids(recording), "serverResponse": server_response})

    def _update(self, params: dict[str, str], raw: bytes) -> Response:
        body = _parse_json_object(raw)
        client_request = _client_request(body)
        now = self._clock.now()
        with self._lock:
            recording, _ = self._session(params, now)
            self._check_body_matches(recording, body)
            _apply_update(recording, client_request)
            return json_response(200, self._ids(recording))

    def _update_layout(self, params: dict[str, str], raw: bytes) -> Response:
        body = _parse_json_object(raw)
        client_request = _client_request(body)
        layout = client_request.get("mixedVideoLayout", 0)
        if layout not in (0, 1, 2, 3) or isinstance(layout, bool):
            return service_error(400, 1028, "invalid mixedVideoLayout")
        now = self._clock.now()
        with self._lock:
            recording, _ = self._session(params, now)
            self._check_body_matches(recording, body)
            recording.layout = dict(client_request)  # each call overwrites the previous layout
            return json_response(200, self._ids(recording))

    def _stop(self, params: dict[str, str], raw: bytes) -> Response:
        body = _parse_json_object(raw)
        async_stop = _client_request(body).get("async_stop", False)
        if not isinstance(async_stop, bool):
            return service_error(400, 2, "invalid parameter: async_stop")
        now = self._clock.now()
        with self._lock:
            recording, _ = self._session(params, now)
            self._check_body_matches(recording, body)
            if recording.is_exiting(now):
                return service_error(400, 49, "invalid operation", **self._ids(recording))
            recording.exit_at = now
            self._changed([recording.sid])
            if recording.slice_count(now) == 0:
                return service_error(206, 435, "no recorded data", **self._ids(recording))
            uploading = "unknown" if async_stop else "uploaded"
            server_response = recording.stop_response(now, self._slice_start_ms(recording), uploading)
            return json_response(200, {**self._ids(recording), "serverResponse": server_response})


def check_bulk_arguments(
    end_times: Any, hold: Any, mode: Any, app_id: Any, app_ids: Iterable[str], client_request: Any
) -> str:
    """Validate ``create_recordings`` arguments (they may come from JSON); returns the App ID to use."""
    if not isinstance(end_times, (list, tuple)) or any(
        isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) for t in end_times
    ):
        raise ValueError("end_times must be a list of epoch seconds")
    if len(end_times) > MAX_BULK_RECORDINGS:
        raise ValueError(f"at most {MAX_BULK_RECORDINGS} recordings per call")
    if isinstance(hold, bool) or not isinstance(hold, (int, float)) or not hold > 0:
        raise ValueError("hold must be a number of seconds > 0")
    if mode not in _MODES.split("|"):
        raise ValueError(f"mode must be one of {_MODES.replace('|', ', ')}")
    if not isinstance(app_id, str) or app_id not in frozenset(app_ids):
        raise ValueError(f"unknown app_id {app_id!r}")
    if client_request is not None and not isinstance(client_request, dict):
        raise ValueError("client_request must be a JSON object")
    return str(app_id)


def _apply_update(recording: Recording, client_request: dict[str, Any]) -> None:
    """Apply the parts of ``update`` that change later answers: subscriptions, onhold, CDN URLs."""
    subscribe = client_request.get("streamSubscribe")
    if isinstance(subscribe, dict):
        for group, key, attr in (
            ("audioUidList", "subscribeAudioUids", "audio_uids"),
            ("videoUidList", "subscribeVideoUids", "video_uids"),
        ):
            lists = subscribe.get(group)
            chosen = lists.get(key) if isinstance(lists, dict) else None
            if isinstance(chosen, list) and chosen and ALL_STREAMS not in chosen:
                setattr(recording, attr, [str(uid) for uid in chosen])
    web = client_request.get("webRecordingConfig")
    if isinstance(web, dict) and isinstance(web.get("onhold"), bool):
        recording.onhold = web["onhold"]
    rtmp = client_request.get("rtmpPublishConfig")
    if isinstance(rtmp, dict) and isinstance(rtmp.get("outputs"), list):
        recording.rtmp_urls = [str(o.get("rtmpUrl", "")) for o in rtmp["outputs"] if isinstance(o, dict)]
