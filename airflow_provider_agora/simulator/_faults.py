"""Deterministic fault injection.

Counted faults form one FIFO queue consumed by authenticated API requests in arrival order, so a
test can say "the next two requests fail" and count requests exactly. Time-based faults are in
simulated seconds so they scale with the simulator's ``speed``. Notification faults (``duplicate``,
``reorder_31_after_11``, ``drop``, ``bad_signature``, ``backuped``, ``redeliver``) change what the
simulator's NCS sender posts. Storage faults (``missing_segment``, ``late_upload``,
``unfinished_playlist``, ``wrong_storage_credentials``, and the delay of ``backuped``) change what
the simulator's uploader writes to a recording's S3-compatible storage (see ``_storage``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_agora.simulator._responses import Response, rate_limited, service_error

NON_JSON_BODY = b"<html><body>upstream error</body></html>"


@dataclass
class _CountedFault:
    kind: str
    remaining: int
    status: int
    retry_after: int | None = None
    operation: str | None = None  # only requests to this endpoint (``start``, ``query``...) take it

    def response(self) -> Response:
        if self.kind == "throttle":
            return rate_limited(self.retry_after)
        if self.kind == "partial":
            return service_error(206, 65, "request not completed")
        if self.kind == "non_json":
            return Response(status=self.status, body=NON_JSON_BODY, content_type="text/html")
        if self.status == 504:
            return service_error(504, 62, "request timeout")
        reason = "internal error" if self.status >= 500 else "injected error"
        return service_error(self.status, self.status, reason)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "remaining": self.remaining, "status": self.status}
        if self.kind == "throttle":
            data["retry_after"] = self.retry_after
        if self.operation is not None:
            data["operation"] = self.operation
        return data


@dataclass
class _DropRule:
    remaining: int | None  # None: every matching notification until reset
    event_types: frozenset[int] | None  # None: any event type

    def as_dict(self) -> dict[str, Any]:
        types = None if self.event_types is None else sorted(self.event_types)
        return {"remaining": self.remaining, "event_types": types}


#: Notification faults that are switched on and off (``Faults.<name>(enabled)``).
NOTIFICATION_TOGGLES = ("duplicate", "reorder_31_after_11", "bad_signature", "backuped", "redeliver")
#: Storage faults; each applies to one recording (``sid``) or, without one, to every recording.
STORAGE_FAULTS = ("missing_segment", "late_upload", "unfinished_playlist", "wrong_storage_credentials")
#: Default simulated seconds after the end of a ``backuped`` recording at which its files reach the storage.
BACKUP_DELAY = 60.0
_ALL = "*"  # key of a storage fault that applies to every recording


@dataclass(frozen=True)
class StorageFaults:
    """The storage faults that apply to one recording now (its own entry wins over the global one)."""

    missing_segment: int | None = None  # index of the segment that is never written, in every playlist
    late_upload: float = 0.0  # simulated seconds every file is written after it is due
    unfinished_playlist: bool = False  # the playlist never gets its #EXT-X-ENDLIST
    wrong_storage_credentials: bool = False  # the storage refuses every upload (AccessDenied)


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    return count


def _check_delay(seconds: float, name: str) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise ValueError(f"{name} must be a number of seconds >= 0, got {seconds!r}")
    return float(seconds)


def _check_bool(name: str, enabled: bool) -> bool:
    if not isinstance(enabled, bool):
        raise TypeError(f"{name} takes true or false, got {enabled!r}")
    return enabled


class Faults:
    """Faults to inject into the simulated API; every method is thread-safe.

    ``clock`` returns simulated seconds; the simulator passes its scaled clock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, backup_delay: float = BACKUP_DELAY) -> None:
        self._clock = clock
        self._default_backup_delay = _check_delay(backup_delay, "backup_delay")
        self._backup_delay = self._default_backup_delay
        self._storage: dict[str, dict[str, Any]] = {name: {} for name in STORAGE_FAULTS}
        self._lock = threading.Lock()
        self._queue: list[_CountedFault] = []
        self._latency = 0.0
        self._abnormal: dict[str, float] = {}
        self._transient: dict[str, float] = {}
        self._toggles: dict[str, bool] = dict.fromkeys(NOTIFICATION_TOGGLES, False)
        self._drops: list[_DropRule] = []
        #: Called as ``listener(fault, sid)`` after ``abnormal_exit``/``transient_not_found`` (the
        #: simulator's notification sender uses it); ``None`` when nobody listens.
        self.listener: Callable[[str, str], None] | None = None

    # -- counted faults ------------------------------------------------------------------------

    def _enqueue(self, fault: _CountedFault) -> None:
        if fault.remaining:
            with self._lock:
                self._queue.append(fault)

    def fail_next(self, count: int = 1, status: int = 503, operation: str | None = None) -> None:
        """Next ``count`` requests answer ``status`` (504 gets Agora's ``code 62 request timeout``).

        With ``operation`` (``"start"``, ``"query"``, ...) only requests to that endpoint count.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status, got {status!r}")
        self._enqueue(_CountedFault("fail", _check_count(count), status, operation=operation))

    def throttle_next(self, count: int = 1, retry_after: int | None = 1) -> None:
        """Next ``count`` requests answer 429; ``retry_after=None`` omits the ``Retry-After`` header."""
        self._enqueue(_CountedFault("throttle", _check_count(count), 429, retry_after))

    def partial_next(self, count: int = 1, operation: str | None = None) -> None:
        """Next ``count`` requests (to ``operation`` only, if given) answer 206 ``code 65 request not completed``."""
        self._enqueue(_CountedFault("partial", _check_count(count), 206, operation=operation))

    def non_json_next(self, count: int = 1, status: int = 200) -> None:
        """Next ``count`` requests answer an HTML body, like a proxy error page."""
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status, got {status!r}")
        self._enqueue(_CountedFault("non_json", _check_count(count), status))

    def take(self, operation: str | None = None) -> Response | None:
        """Consume the first counted fault that applies to ``operation``, if any, and return its answer."""
        with self._lock:
            head = next((fault for fault in self._queue if fault.operation in (None, operation)), None)
            if head is None:
                return None
            head.remaining -= 1
            if head.remaining <= 0:
                self._queue.remove(head)
            return head.response()

    # -- latency ---------------------------------------------------------------------------------

    @property
    def latency(self) -> float:
        """Real seconds slept before every API answer (not scaled by ``speed``)."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = float(seconds)

    # -- time-based faults -----------------------------------------------------------------------

    def abnormal_exit(self, sid: str, after: float = 0.0) -> None:
        """Recording ``sid`` reports status 20 after ``after`` simulated seconds, then disappears."""
        with self._lock:
            self._abnormal[sid] = self._clock() + max(0.0, float(after))
        self._changed("abnormal_exit", sid)

    def transient_not_found(self, sid: str, duration: float) -> None:
        """For ``duration`` simulated seconds ``sid`` answers 404 while recording goes on (HA fail-over).

        With notifications on, the simulator sends event 12 ``session_failover`` for ``sid`` now.
        """
        with self._lock:
            self._transient[sid] = self._clock() + max(0.0, float(duration))
        self._changed("transient_not_found", sid)

    def abnormal_at(self, sid: str) -> float | None:
        """Simulated time at which ``sid`` exits abnormally, if that fault is set."""
        with self._lock:
            return self._abnormal.get(sid)

    def is_transiently_missing(self, sid: str) -> bool:
        """Whether ``sid`` is inside a transient-404 window now."""
        with self._lock:
            until = self._transient.get(sid)
            return until is not None and self._clock() < until

    def _changed(self, fault: str, sid: str) -> None:
        listener = self.listener
        if listener is not None:
            listener(fault, sid)

    # -- notification faults -----------------------------------------------------------------------

    def duplicate(self, enabled: bool = True) -> None:
        """Notifications: send each one twice, with the same ``noticeId`` (Agora's duplicates)."""
        self._toggle("duplicate", enabled)

    def reorder_31_after_11(self, enabled: bool = True) -> None:
        """Notifications: hold back 31 ``uploaded`` until 11 ``session_exit`` has been sent, then send it."""
        self._toggle("reorder_31_after_11", enabled)

    def bad_signature(self, enabled: bool = True) -> None:
        """Notifications: sign with a wrong secret (both headers), as a forger would."""
        self._toggle("bad_signature", enabled)

    def backuped(self, enabled: bool = True, delay: float | None = None) -> None:
        """Notifications: some files went to Agora's backup storage, so 32 ``backuped`` (with the
        same file list) follows 31 ``uploaded``: a recording then has two notifications that end it.

        Storage: a recording started while this is on writes none of its files until ``delay``
        (simulated seconds, default the simulator's ``backup_delay``) after it ended normally.
        """
        if delay is not None:
            checked = _check_delay(delay, "delay")
        self._toggle("backuped", enabled)
        if delay is not None:
            with self._lock:
                self._backup_delay = checked

    @property
    def backup_delay(self) -> float:
        """Simulated seconds after its end at which a ``backuped`` recording's files reach the storage."""
        with self._lock:
            return self._backup_delay

    def redeliver(self, enabled: bool = True) -> None:
        """Notifications: send each delivered notification once more, under a new ``noticeId``, as
        Agora's high-availability redundancy does (only ``sid`` and ``eventType`` tell it apart)."""
        self._toggle("redeliver", enabled)

    def _toggle(self, name: str, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"{name} takes true or false, got {enabled!r}")
        with self._lock:
            self._toggles[name] = enabled

    def drop(self, count: int | None = None, event_types: Iterable[int] | None = None) -> None:
        """Notifications: never send (lose) some of them.

        ``drop(2)``: the next two notifications; ``drop(event_types=[31])``: every 31 until
        ``reset``; ``drop(1, event_types=[31])``: the next 31 only. Rules are consumed in order,
        like the counted API faults.
        """
        if count is None and event_types is None:
            raise ValueError("drop needs a count, event_types, or both")
        types: frozenset[int] | None = None
        if event_types is not None:
            if isinstance(event_types, (str, bytes)) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in event_types
            ):
                raise TypeError("event_types must be a list of integer eventType values")
            types = frozenset(event_types)
        remaining = None if count is None else _check_count(count)
        if remaining == 0:
            return
        with self._lock:
            self._drops.append(_DropRule(remaining, types))

    def notification_flag(self, name: str) -> bool:
        """Whether the notification fault ``name`` (one of :data:`NOTIFICATION_TOGGLES`) is on."""
        with self._lock:
            return self._toggles[name]

    def take_drop(self, event_type: int) -> bool:
        """Consume the first drop rule that applies to ``event_type``; ``True`` when it is to be dropped."""
        with self._lock:
            rule = next(
                (r for r in self._drops if r.event_types is None or event_type in r.event_types),
                None,
            )
            if rule is None:
                return False
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._drops.remove(rule)
            return True

    # -- storage faults --------------------------------------------------------------------------

    def missing_segment(self, index: int = 0, sid: str | None = None) -> None:
        """Storage: segment ``index`` (0 = the first) of each playlist is listed but never written."""
        self._set_storage("missing_segment", sid, _check_count(index))

    def late_upload(self, delay: float, sid: str | None = None) -> None:
        """Storage: every file is written ``delay`` simulated seconds after it is due (0 clears it)."""
        self._set_storage("late_upload", sid, _check_delay(delay, "delay"))

    def unfinished_playlist(self, enabled: bool = True, sid: str | None = None) -> None:
        """Storage: playlists never get ``#EXT-X-ENDLIST``, even after the recording has exited."""
        self._set_storage("unfinished_playlist", sid, _check_bool("unfinished_playlist", enabled))

    def wrong_storage_credentials(self, enabled: bool = True, sid: str | None = None) -> None:
        """Storage: every upload is refused as with wrong ``accessKey``/``secretKey`` (AccessDenied, no
        request is sent); the simulator reports it as Agora does (NCS event 1, module 1, errorCode 32)."""
        self._set_storage("wrong_storage_credentials", sid, _check_bool("wrong_storage_credentials", enabled))

    def _set_storage(self, name: str, sid: str | None, value: Any) -> None:
        if sid is not None and (not isinstance(sid, str) or not sid):
            raise TypeError(f"{name}: sid must be a non-empty string")
        with self._lock:
            self._storage[name][_ALL if sid is None else sid] = value

    def storage_faults(self, sid: str) -> StorageFaults:
        """The storage faults that apply to recording ``sid`` now."""
        with self._lock:
            values = {name: entries.get(sid, entries.get(_ALL)) for name, entries in self._storage.items()}
        return StorageFaults(
            missing_segment=values["missing_segment"],
            late_upload=values["late_upload"] or 0.0,
            unfinished_playlist=bool(values["unfinished_playlist"]),
            wrong_storage_credentials=bool(values["wrong_storage_credentials"]),
        )

    # -- state -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop every fault (a recording already observed in abnormal exit stays exited)."""
        with self._lock:
            self._queue.clear()
            self._latency = 0.0
            self._abnormal.clear()
            self._transient.clear()
            self._toggles = dict.fromkeys(NOTIFICATION_TOGGLES, False)
            self._drops.clear()
            self._storage = {name: {} for name in STORAGE_FAULTS}
            self._backup_delay = self._default_backup_delay

    def state(self) -> dict[str, Any]:
        """JSON-able snapshot, answered by the control endpoint; times are simulated seconds from now."""
        with self._lock:
            now = self._clock()
            return {
                "queued": [fault.as_dict() for fault in self._queue],
                "latency": self._latency,
                "abnormal_exit": {sid: max(0.0, at - now) for sid, at in self._abnormal.items()},
                "transient_not_found": {sid: until - now for sid, until in self._transient.items() if until > now},
                "notifications": {**self._toggles, "drop": [rule.as_dict() for rule in self._drops]},
                "storage": {
                    **{name: dict(entries) for name, entries in self._storage.items()},
                    "backup_delay": self._backup_delay,
                },
            }

    def apply(self, spec: Mapping[str, Any]) -> None:
        """Apply a control-endpoint object: keys are method names, values their arguments.

        A value may be an object of keyword arguments, a bare count (counted faults and ``drop``) or
        ``true``/``false`` (``reset`` and the notification switches ``duplicate``,
        ``reorder_31_after_11``, ``bad_signature``, ``backuped``, ``redeliver``); ``latency`` takes a
        number. Storage faults take an object (with ``sid`` for one recording) or, for every recording,
        ``missing_segment`` an index, ``late_upload`` a number of seconds, ``unfinished_playlist`` and
        ``wrong_storage_credentials`` ``true``/``false``. ``reset`` runs first, the rest in the given order.
        Raises ``ValueError``/``TypeError`` at the first invalid entry; earlier entries stay applied.
        """
        if spec.get("reset"):
            self.reset()
        actions: dict[str, Callable[..., None]] = {
            "fail_next": self.fail_next,
            "throttle_next": self.throttle_next,
            "partial_next": self.partial_next,
            "non_json_next": self.non_json_next,
            "abnormal_exit": self.abnormal_exit,
            "transient_not_found": self.transient_not_found,
            "duplicate": self.duplicate,
            "reorder_31_after_11": self.reorder_31_after_11,
            "bad_signature": self.bad_signature,
            "backuped": self.backuped,
            "redeliver": self.redeliver,
            "drop": self.drop,
            "missing_segment": self.missing_segment,
            "late_upload": self.late_upload,
            "unfinished_playlist": self.unfinished_playlist,
            "wrong_storage_credentials": self.wrong_storage_credentials,
        }
        switches = (*NOTIFICATION_TOGGLES, "unfinished_playlist", "wrong_storage_credentials")
        for name, value in spec.items():
            if name == "reset":
                continue
            if name == "latency":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError("latency must be a number")
                self.latency = float(value)
            elif name in actions:
                if isinstance(value, Mapping):
                    actions[name](**value)
                elif (
                    (
                        isinstance(value, int)
                        and not isinstance(value, bool)
                        and (name.endswith("_next") or name in ("drop", "missing_segment", "late_upload"))
                    )
                    or (isinstance(value, float) and name == "late_upload")
                    or (isinstance(value, bool) and name in switches)
                ):
                    actions[name](value)
                else:
                    raise TypeError(f"{name} takes an object of arguments")
            else:
                raise ValueError(f"unknown fault {name!r}")
