"""Agora's Notification Center Service (NCS) for the simulator: signed webhook POSTs of lifecycle events.

Configured with a URL and a secret, the simulator POSTs Agora's envelope for cloud recording
(``productId`` 3) when the simulated lifecycle reaches an event::

    {"noticeId": "<uuid hex>", "productId": 3, "eventType": N, "notifyMs": <epoch ms of this send>,
     "payload": {"cname", "uid", "sid", "sequence", "sendts", "serviceType", "details"}}

with ``Content-Type: application/json``, ``Agora-Signature`` (lowercase hex HMAC-SHA1 of the raw
body with the secret) and ``Agora-Signature-V2`` (the same with SHA-256).

Events (``eventType``: ``serviceType``, when): 40 (1) when the recorder is ready (status 4); web
recordings also 70 (6) then. At a normal end E (``stop``, idle exit after ``maxIdleTime``, a bulk
recording's end time, ``resourceExpiredHour``): 71 (6, web only) and 30 (2) at E, 31 (2) when status
7 begins (the final file list, MP4 files included; web: no ``fileList``), 11 (0, ``exitStatus`` 0)
when status 8 begins; 30 and 31 only when something was recorded. Abnormal exit (fault): 1 (0,
fatal ``cloud_recording_error``) and 11 (``exitStatus`` 1). Fail-over (``transient_not_found``
fault): 12 (0, ``newUid``); later events carry the new uid. ``sequence`` counts per sid from 0 in
the order events happen; ``sendts`` is when the event happened on the simulated clock. With the
``backuped`` fault a 32 (2, the same file list) follows each 31 that has a file list; with
``redeliver`` each delivered notification is sent once more under a new ``noticeId``. When the
recording's S3-compatible storage refuses its uploads (``_storage``), 1 (0, ``module`` 1 uploader,
``errorLevel`` 4, ``errorCode`` 32) at that moment; the recording goes on.

Delivery: one sender thread POSTs in order of due time (``http.client``, no proxies, 10 s socket
timeout). Anything but a 200 answer is resent, same ``noticeId``, with a new ``notifyMs`` (always
later than the previous send's) and so new signatures, after :data:`NOTIFY_RETRY_DELAYS` (simulated
seconds, so divided by ``speed``); after the last retry the notification is dropped and counted.
Every attempt is logged as a :class:`NotificationRecord`.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import http.client
import itertools
import json
import secrets
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_agora.simulator._faults import Faults
from airflow_provider_agora.simulator._lifecycle import FIRST_SLICE_AT, Clock, Recording
from airflow_provider_agora.simulator._storage import (
    STORAGE_CONFIG_ERROR_CODE,
    STORAGE_CONFIG_ERROR_MSG,
    UPLOADER_ERROR_LEVEL,
    UPLOADER_MODULE,
)

if TYPE_CHECKING:
    from airflow_provider_agora.simulator._service import CloudRecordingService

#: ``productId`` of Cloud Recording in NCS envelopes.
PRODUCT_ID = 3
#: Real seconds the sender waits on the receiver (socket timeout); Agora wants a 200 within 10 s.
NOTIFY_TIMEOUT = 10.0
#: Waits before the first, second and third resend, in simulated seconds (divided by ``speed``).
#: Agora says only "immediately, then growing intervals, three retries"; these values are ours.
NOTIFY_RETRY_DELAYS: tuple[float, ...] = (0.0, 2.0, 4.0)
#: ``serviceType`` per ``eventType``.
SERVICE_TYPES: dict[int, int] = {1: 0, 11: 0, 12: 0, 30: 2, 31: 2, 32: 2, 40: 1, 70: 6, 71: 6}
#: ``details.msgName`` per ``eventType``.
EVENT_NAMES: dict[int, str] = {
    1: "cloud_recording_error",
    11: "session_exit",
    12: "session_failover",
    30: "uploader_started",
    31: "uploaded",
    32: "backuped",
    40: "recorder_started",
    70: "web_recorder_started",
    71: "web_recorder_stopped",
}
#: ``errorCode`` of the fatal recorder error sent on an abnormal exit (module 0, the recorder;
#: 3 is the recording SDK's ``ERR_INTERNAL_FAILED``).
ABNORMAL_ERROR_CODE = 3
ABNORMAL_ERROR_MSG = "recorder internal failure"
#: ``NotificationRecord.outcome`` values.
OUTCOMES = ("delivered", "retrying", "dropped", "dropped_by_fault")

_WRONG_SECRET = b"not-the-notify-secret"
_MAX_RESPONSE = 1 << 16
_MAX_UID = 2**32 - 1
_NOW = float("-inf")  # due time of "look at this recording now" entries
_UPLOADER_ERROR = -1  # internal event code of an uploader error: sent as eventType 1, module 1


def check_notify_url(url: str) -> str:
    """An ``http://`` or ``https://`` URL with a host, or ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"notify_url must be an http:// or https:// URL, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"notify_url has an invalid port: {url!r}") from None
    return url


def signatures(secret: bytes, body: bytes) -> tuple[str, str]:
    """``(Agora-Signature, Agora-Signature-V2)``: hex HMAC-SHA1 and HMAC-SHA256 of the raw body."""
    return (
        hmac.new(secret, body, hashlib.sha1).hexdigest(),
        hmac.new(secret, body, hashlib.sha256).hexdigest(),
    )


@dataclass(frozen=True)
class NotificationRecord:
    """One POST of a notification, or one the ``drop`` fault swallowed (``attempt`` 0, never sent).

    ``attempt`` is 1 for the first send and 2-4 for resends; ``status`` is the receiver's HTTP
    status (``None`` without an answer, then ``error`` says why); ``time`` is ``time.time()`` when
    the attempt began; ``outcome`` is ``delivered`` (200), ``retrying`` (will be resent),
    ``dropped`` (last retry failed) or ``dropped_by_fault``.
    """

    notice_id: str
    event_type: int
    sid: str
    attempt: int
    status: int | None
    error: str | None
    time: float
    notify_ms: int | None
    outcome: str


@dataclass
class _Delivery:
    notice_id: str
    event_type: int
    sid: str
    payload: dict[str, Any]
    attempt: int = 0
    last_notify_ms: int = 0
    redelivered: bool = False  # the ``redeliver`` fault's second copy (sent once, never again)


@dataclass
class _Track:
    """What the event thread has already sent for one sid."""

    uid: str
    sequence: int = 0
    emitted: set[int] = field(default_factory=set)
    scheduled: float | None = None  # simulated time of the next planned event
    held: list[_Delivery] = field(default_factory=list)  # 31 held back by ``reorder_31_after_11``


class Notifier:
    """Two daemon threads: one turns the simulated timeline into notifications, one POSTs them.

    ``touch`` (called by the service with its lock held) and ``fault_changed`` only queue work,
    so request handling never waits on the receiver.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        clock: Clock,
        faults: Faults,
        service: CloudRecordingService,
        timeout: float = NOTIFY_TIMEOUT,
    ) -> None:
        if not secret:
            raise ValueError("a notify secret is required")
        if timeout <= 0:
            raise ValueError("notify timeout must be > 0")
        self.url = check_notify_url(url)
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._secret = secret.encode("utf-8")
        self._clock = clock
        self._faults = faults
        self._service = service
        self._timeout = float(timeout)
        self._cond = threading.Condition()
        self._counter = itertools.count()
        self._events: list[tuple[float, int, str]] = []  # (simulated due time or _NOW, n, sid)
        self._failovers: dict[str, list[float]] = {}  # sid -> simulated times of unreported fail-overs
        self._storage_errors: dict[str, list[float]] = {}  # sid -> simulated times of unreported refusals
        self._deliveries: list[tuple[float, int, _Delivery]] = []  # (monotonic due time, n, delivery)
        self._tracks: dict[str, _Track] = {}  # event thread only
        self._log_lock = threading.Lock()
        self._log: list[NotificationRecord] = []
        self._counts: Counter[str] = Counter()
        self._token: object | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start both threads (daemons); queued work from before the start is sent then."""
        with self._cond:
            if self._token is not None:
                return
            token = self._token = object()
        self._threads = [
            threading.Thread(target=self._run_events, args=(token,), name="agora-simulator-ncs-events", daemon=True),
            threading.Thread(target=self._run_sender, args=(token,), name="agora-simulator-ncs-sender", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads; a POST in flight ends within the timeout and is not resent."""
        with self._cond:
            self._token = None
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=1.0)
        self._threads = []

    # -- inputs ----------------------------------------------------------------------------------

    def touch(self, sids: Sequence[str]) -> None:
        """The timeline of ``sids`` changed: look at them again now."""
        with self._cond:
            for sid in sids:
                heapq.heappush(self._events, (_NOW, next(self._counter), sid))
            self._cond.notify_all()

    def fault_changed(self, fault: str, sid: str) -> None:
        """``Faults.listener``: a fail-over is reported now; an abnormal exit changes the plan."""
        with self._cond:
            if fault == "transient_not_found":
                self._failovers.setdefault(sid, []).append(self._clock.now())
            heapq.heappush(self._events, (_NOW, next(self._counter), sid))
            self._cond.notify_all()

    def storage_error(self, sid: str, at: float) -> None:
        """The storage refused the uploads of ``sid`` at simulated time ``at``: report event 1 (uploader)."""
        with self._cond:
            self._storage_errors.setdefault(sid, []).append(at)
            heapq.heappush(self._events, (_NOW, next(self._counter), sid))
            self._cond.notify_all()

    # -- observation -----------------------------------------------------------------------------

    def records(self) -> list[NotificationRecord]:
        with self._log_lock:
            return list(self._log)

    def clear(self) -> None:
        with self._log_lock:
            self._log.clear()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            pending = len(self._deliveries)
        with self._log_lock:
            counts = dict(self._counts)
        return {
            "enabled": True,
            "url": self.url,
            "notifications": counts.get("notifications", 0),
            "attempts": counts.get("attempts", 0),
            "delivered": counts.get("delivered", 0),
            "retries": counts.get("retries", 0),
            "dropped": counts.get("dropped", 0),
            "dropped_by_fault": counts.get("dropped_by_fault", 0),
            "pending": pending,
        }

    def _record(self, record: NotificationRecord, *counters: str) -> None:
        with self._log_lock:
            self._log.append(record)
            for name in counters:
                self._counts[name] += 1

    # -- event thread ----------------------------------------------------------------------------

    def _run_events(self, token: object) -> None:
        while True:
            with self._cond:
                while True:
                    if self._token is not token:
                        return
                    if self._events:
                        wait = (self._events[0][0] - self._clock.now()) / self._clock.speed
                        if wait <= 0:
                            due, _, sid = heapq.heappop(self._events)
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            try:
                self._advance(sid, due)
            except Exception:  # a bug here must not silence every later notification
                traceback.print_exc(file=sys.stderr)

    def _advance(self, sid: str, due: float) -> None:
        """Queue the events of ``sid`` that are due and schedule its next one."""
        out: list[_Delivery] = []
        with self._service.locked_recording(sid) as recording:
            if recording is None:
                with self._cond:
                    self._failovers.pop(sid, None)  # a fault for an sid the simulator never had
                    self._storage_errors.pop(sid, None)
                return
            track = self._track_of(sid, recording)
            if due != _NOW and due != track.scheduled:
                return  # superseded by a later look at this recording
            with self._cond:
                failovers = self._failovers.pop(sid, [])
                storage_errors = self._storage_errors.pop(sid, [])
            now = self._clock.now()
            abnormal = self._abnormal_at(sid, recording)
            plan = recording.notification_plan(abnormal)
            abnormal_path = any(event_type == 1 for _, event_type in plan)
            slice_start_ms = self._clock.epoch_ms(recording.started_at + FIRST_SLICE_AT)
            for at, event_type in _due_events(recording, track, plan, failovers, now, storage_errors):
                out.extend(self._emit(recording, track, at, event_type, abnormal_path, slice_start_ms))
                if event_type == 1 and recording.abnormal_at is None:
                    recording.abnormal_at = abnormal  # observed: stays exited even if the fault is reset
            upcoming = [at for at, event_type in plan if event_type not in track.emitted and at > now]
            track.scheduled = min(upcoming) if upcoming else None
        with self._cond:
            if track.scheduled is not None:
                heapq.heappush(self._events, (track.scheduled, next(self._counter), sid))
        for delivery in out:
            self._submit(delivery)

    def _track_of(self, sid: str, recording: Recording) -> _Track:
        """The recording's track, made on first sight: its notifications carry its start's uid until a fail-over."""
        track = self._tracks.get(sid)
        if track is None:
            track = self._tracks[sid] = _Track(recording.resource.uid)
        return track

    def _abnormal_at(self, sid: str, recording: Recording) -> float | None:
        """When the recording exits abnormally: as once observed, else as the fault now says (None: never)."""
        if recording.abnormal_at is not None:
            return recording.abnormal_at
        return self._faults.abnormal_at(sid)

    def _details(
        self, recording: Recording, track: _Track, at: float, event_type: int, abnormal: bool, slice_start_ms: int
    ) -> tuple[dict[str, Any], int]:
        """An event's ``details`` as Agora sends them, and the new uid of a fail-over (12; else 0)."""
        new_uid = 0
        uploader_error = event_type == _UPLOADER_ERROR
        if uploader_error:
            event_type = 1
        details: dict[str, Any] = {"msgName": EVENT_NAMES[event_type]}
        if uploader_error:
            details.update(
                module=UPLOADER_MODULE,
                errorLevel=UPLOADER_ERROR_LEVEL,
                errorCode=STORAGE_CONFIG_ERROR_CODE,
                stat=0,
                errorMsg=STORAGE_CONFIG_ERROR_MSG,
            )
        elif event_type in (30, 40):
            details["status"] = 0
        elif event_type == 70:
            details["recorderStartTime"] = self._clock.epoch_ms(at)
        elif event_type == 31:
            details["status"] = 0
            if recording.mode != "web":
                details["fileList"] = recording.final_file_list(at, slice_start_ms)
        elif event_type == 71:
            details.update(code=0, message="ok", fileList=recording.final_file_list(at, slice_start_ms))
        elif event_type == 11:
            details["exitStatus"] = 1 if abnormal else 0
        elif event_type == 1:
            details.update(module=0, errorLevel=5, errorCode=ABNORMAL_ERROR_CODE, stat=0, errorMsg=ABNORMAL_ERROR_MSG)
        elif event_type == 12:
            new_uid = secrets.randbelow(_MAX_UID) + 1
            while str(new_uid) == track.uid:
                new_uid = secrets.randbelow(_MAX_UID) + 1
            details["newUid"] = new_uid
        return details, new_uid

    def _emit(
        self, recording: Recording, track: _Track, at: float, event_type: int, abnormal: bool, slice_start_ms: int
    ) -> list[_Delivery]:
        """Build one event's delivery; returns what is to be sent now (reorder fault aside)."""
        details, new_uid = self._details(recording, track, at, event_type, abnormal, slice_start_ms)
        uploader_error = event_type == _UPLOADER_ERROR
        if uploader_error:
            event_type = 1
        payload = {
            "cname": recording.resource.cname,
            "uid": track.uid,
            "sid": recording.sid,
            "sequence": track.sequence,
            "sendts": self._clock.epoch_ms(at),
            "serviceType": SERVICE_TYPES[event_type],
            "details": details,
        }
        track.sequence += 1
        if event_type == 12:
            track.uid = str(new_uid)
        elif not uploader_error:
            track.emitted.add(event_type)
        deliveries = [_Delivery(uuid.uuid4().hex, event_type, recording.sid, payload)]
        if event_type == 31 and recording.mode != "web" and self._faults.notification_flag("backuped"):
            backuped = {**payload, "sequence": track.sequence, "details": {**details, "msgName": EVENT_NAMES[32]}}
            track.sequence += 1
            deliveries.append(_Delivery(uuid.uuid4().hex, 32, recording.sid, backuped))
        if event_type == 31 and self._faults.notification_flag("reorder_31_after_11"):
            track.held.extend(deliveries)
            return []
        if event_type == 11:
            held, track.held = track.held, []
            return [*deliveries, *held]
        return deliveries

    def _submit(self, delivery: _Delivery) -> None:
        if self._faults.take_drop(delivery.event_type):
            record = NotificationRecord(
                delivery.notice_id,
                delivery.event_type,
                delivery.sid,
                0,
                None,
                "dropped by the drop fault",
                time.time(),
                None,
                "dropped_by_fault",
            )
            self._record(record, "notifications", "dropped_by_fault")
            return
        copies = [delivery, replace(delivery)] if self._faults.notification_flag("duplicate") else [delivery]
        with self._log_lock:
            self._counts["notifications"] += 1
        with self._cond:
            for copy in copies:
                heapq.heappush(self._deliveries, (time.monotonic(), next(self._counter), copy))
            self._cond.notify_all()

    # -- sender thread ---------------------------------------------------------------------------

    def _run_sender(self, token: object) -> None:
        while True:
            with self._cond:
                while True:
                    if self._token is not token:
                        return
                    if self._deliveries:
                        wait = self._deliveries[0][0] - time.monotonic()
                        if wait <= 0:
                            _, _, delivery = heapq.heappop(self._deliveries)
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            try:
                self._attempt(delivery, token)
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def _attempt(self, delivery: _Delivery, token: object) -> None:
        delivery.attempt += 1
        notify_ms = max(int(time.time() * 1000), delivery.last_notify_ms + 1)
        delivery.last_notify_ms = notify_ms
        envelope = {
            "noticeId": delivery.notice_id,
            "productId": PRODUCT_ID,
            "eventType": delivery.event_type,
            "notifyMs": notify_ms,
            "payload": delivery.payload,
        }
        body = json.dumps(envelope, separators=(",", ":")).encode("utf-8")
        secret = _WRONG_SECRET if self._faults.notification_flag("bad_signature") else self._secret
        sha1, sha256 = signatures(secret, body)
        headers = {
            "Content-Type": "application/json",
            "Agora-Signature": sha1,
            "Agora-Signature-V2": sha256,
            "User-Agent": "agora-simulator-ncs",
        }
        began = time.time()
        status, error = self._post(body, headers)
        counters = ["attempts"] + (["retries"] if delivery.attempt > 1 else [])
        if status == 200:
            outcome = "delivered"
        elif delivery.attempt <= len(NOTIFY_RETRY_DELAYS):
            outcome = "retrying"
        else:
            outcome = "dropped"
        if outcome != "retrying":
            counters.append(outcome)
        record = NotificationRecord(
            delivery.notice_id,
            delivery.event_type,
            delivery.sid,
            delivery.attempt,
            status,
            error,
            began,
            notify_ms,
            outcome,
        )
        self._record(record, *counters)
        if outcome == "delivered" and not delivery.redelivered and self._faults.notification_flag("redeliver"):
            again = _Delivery(uuid.uuid4().hex, delivery.event_type, delivery.sid, delivery.payload, redelivered=True)
            with self._cond:
                if self._token is token:
                    heapq.heappush(self._deliveries, (time.monotonic(), next(self._counter), again))
                    self._cond.notify_all()
        if outcome == "retrying":
            delay = NOTIFY_RETRY_DELAYS[delivery.attempt - 1] / self._clock.speed
            with self._cond:
                if self._token is token:
                    heapq.heappush(self._deliveries, (time.monotonic() + delay, next(self._counter), delivery))
                    self._cond.notify_all()

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        """POST once; ``(status, None)`` on any HTTP answer, ``(None, reason)`` without one."""
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            connection.request("POST", self._path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(_MAX_RESPONSE)
            return response.status, None
        except TimeoutError:
            return None, "timeout"
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()


def _due_events(
    recording: Recording,
    track: _Track,
    plan: list[tuple[float, int]],
    failovers: list[float],
    now: float,
    storage_errors: Sequence[float] = (),
) -> list[tuple[float, int]]:
    """``(at, event_type)`` of the events to send now, in the order they happened: the planned ones
    not sent yet and due by ``now``, a 12 per fail-over reported while the recording existed, and an
    uploader error (:data:`_UPLOADER_ERROR`) per storage refusal. At the same time a fail-over comes
    first, then an uploader error, then the plan's events in the plan's order."""
    due = [
        (at, 1, index, event_type)
        for index, (at, event_type) in enumerate(plan)
        if event_type not in track.emitted and at <= now
    ]
    due += [(at, 0, 0, 12) for at in failovers if recording.status(at) is not None]
    due += [(at, 0, 1, _UPLOADER_ERROR) for at in storage_errors]
    due.sort()
    return [(at, event_type) for at, _, _, event_type in due]
