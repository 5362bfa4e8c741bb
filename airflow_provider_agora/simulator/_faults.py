"""Deterministic fault injection.

Counted faults form one FIFO queue consumed by authenticated API requests in arrival order, so a
test can say "the next two requests fail" and count requests exactly. Time-based faults are in
simulated seconds so they scale with the simulator's ``speed``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
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


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    return count


class Faults:
    """Faults to inject into the simulated API; every method is thread-safe.

    ``clock`` returns simulated seconds; the simulator passes its scaled clock.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: list[_CountedFault] = []
        self._latency = 0.0
        self._abnormal: dict[str, float] = {}
        self._transient: dict[str, float] = {}

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

    def transient_not_found(self, sid: str, duration: float) -> None:
        """For ``duration`` simulated seconds ``sid`` answers 404 while recording goes on (HA fail-over)."""
        with self._lock:
            self._transient[sid] = self._clock() + max(0.0, float(duration))

    def abnormal_at(self, sid: str) -> float | None:
        """Simulated time at which ``sid`` exits abnormally, if that fault is set."""
        with self._lock:
            return self._abnormal.get(sid)

    def is_transiently_missing(self, sid: str) -> bool:
        """Whether ``sid`` is inside a transient-404 window now."""
        with self._lock:
            until = self._transient.get(sid)
            return until is not None and self._clock() < until

    # -- state -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop every fault (a recording already observed in abnormal exit stays exited)."""
        with self._lock:
            self._queue.clear()
            self._latency = 0.0
            self._abnormal.clear()
            self._transient.clear()

    def state(self) -> dict[str, Any]:
        """JSON-able snapshot, answered by the control endpoint; times are simulated seconds from now."""
        with self._lock:
            now = self._clock()
            return {
                "queued": [fault.as_dict() for fault in self._queue],
                "latency": self._latency,
                "abnormal_exit": {sid: max(0.0, at - now) for sid, at in self._abnormal.items()},
                "transient_not_found": {sid: until - now for sid, until in self._transient.items() if until > now},
            }

    def apply(self, spec: Mapping[str, Any]) -> None:
        """Apply a control-endpoint object: keys are method names, values their arguments.

        A value may be an object of keyword arguments, a bare count (counted faults) or ``true``
        (``reset``); ``latency`` takes a number. ``reset`` runs first, the rest in the given order.
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
        }
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
                elif isinstance(value, int) and not isinstance(value, bool) and name.endswith("_next"):
                    actions[name](value)
                else:
                    raise TypeError(f"{name} takes an object of arguments")
            else:
                raise ValueError(f"unknown fault {name!r}")
