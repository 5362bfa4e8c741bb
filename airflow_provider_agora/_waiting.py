"""Deciding, from one answer of Agora's ``query``, whether a wait is done, goes on, or has failed.

Pure functions over plain data: the sensor (poke and reschedule) and the trigger (deferrable) call
the same ones, so the three modes cannot disagree. ``WaitMemory`` is what a wait carries from one
poll to the next; it round-trips through JSON so it can live in Airflow's task state store.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_agora._protocol import check_path_parameter, check_recording_mode
from airflow_provider_agora.exceptions import (
    AgoraApiError,
    AgoraConfigurationError,
    AgoraError,
    AgoraNotFoundError,
    AgoraRouteNotFoundError,
)
from airflow_provider_agora.results import (
    RecordingFile,
    RecordingResult,
    RecordingSnapshot,
    parse_recording,
    recording_result,
)

if TYPE_CHECKING:
    from airflow_provider_agora.notifications import Notification

# serverResponse.status, as Agora documents it (query reference).
STATUS_MEANINGS = {
    0: "not started",
    1: "initialization complete",
    2: "components starting",
    3: "some components ready",
    4: "all components ready",
    5: "in progress",
    6: "stop requested",
    7: "all components stopped",
    8: "exited",
    20: "exited abnormally",
}
LAST_LIFECYCLE_STATUS = 8
FATAL_ERROR_LEVEL = 5  # Agora: "may cause the recording to exit ... call query"
ON_NOT_FOUND_CHOICES = ("fail", "succeed")
_FILES_IN_MESSAGE = 20


class Outcome(enum.Enum):
    DONE = "done"
    WAIT = "wait"
    FAIL = "fail"


def describe_status(status: int | None) -> str:
    return f"{status} ({STATUS_MEANINGS.get(status, 'undocumented')})" if status is not None else "unknown"


def describe_files(files: Sequence[Mapping[str, Any]]) -> str:
    names = [str(item.get("fileName", item)) for item in files[:_FILES_IN_MESSAGE]]
    more = f" and {len(files) - _FILES_IN_MESSAGE} more" if len(files) > _FILES_IN_MESSAGE else ""
    return f"{len(files)} file(s)" + (f": {', '.join(names)}{more}" if names else "")


def _number_from_template(value: Any, kind: type[int] | type[float]) -> Any:
    """Jinja renders ``"{{ params.x }}"`` to a string: accept "8" or "90.5" where a number is expected."""
    if isinstance(value, str):
        try:
            number = kind(value.strip())
        except ValueError:
            return value
        return number
    return value


@dataclass(frozen=True)
class WaitSpec:
    """What a DAG author asked to wait for."""

    resource_id: str
    sid: str
    recording_mode: str
    target_status: int = LAST_LIFECYCLE_STATUS
    failure_statuses: tuple[int, ...] = (20,)
    not_found_grace_period: float = 90.0
    on_not_found: str = "fail"
    exit_files_grace_period: float = 30.0

    @classmethod
    def checked(cls, **values: Any) -> WaitSpec:
        """Build and validate at run time, after templates are rendered; one sentence per mistake."""
        sid = values.get("sid")
        sid_text = sid if isinstance(sid, str) else None
        for name in ("resource_id", "sid"):
            check_path_parameter(name, values.get(name), sid=sid_text)
        check_recording_mode(values.get("recording_mode"), sid=sid_text)
        target = _number_from_template(values.get("target_status", LAST_LIFECYCLE_STATUS), int)
        failures = values.get("failure_statuses", (20,))
        if isinstance(failures, int) or not all(
            isinstance(item, int) and not isinstance(item, bool) for item in failures
        ):
            raise AgoraConfigurationError(
                f"failure_statuses for recording sid={sid} must be a list of status numbers such as [20], "
                f"got {failures!r}."
            )
        failures = tuple(failures)
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= LAST_LIFECYCLE_STATUS:
            raise AgoraConfigurationError(
                f"target_status {target!r} for recording sid={sid} is not on Agora's 0-8 lifecycle: use for "
                f"example 5 (in progress) or 8 (exited)."
            )
        if target in failures:
            raise AgoraConfigurationError(
                f"target_status {target} for recording sid={sid} is also in failure_statuses {list(failures)}: "
                f"remove it from one of them."
            )
        grace = _number_from_template(values.get("not_found_grace_period", 90.0), float)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            raise AgoraConfigurationError(
                f"not_found_grace_period for recording sid={sid} must be a number of seconds >= 0, got {grace!r}."
            )
        exit_grace = _number_from_template(values.get("exit_files_grace_period", 30.0), float)
        if isinstance(exit_grace, bool) or not isinstance(exit_grace, (int, float)) or exit_grace < 0:
            raise AgoraConfigurationError(
                f"exit_files_grace_period for recording sid={sid} must be a number of seconds >= 0, got {exit_grace!r}."
            )
        on_not_found = values.get("on_not_found", "fail")
        if on_not_found not in ON_NOT_FOUND_CHOICES:
            raise AgoraConfigurationError(
                f"on_not_found {on_not_found!r} for recording sid={sid} is not valid: use 'fail' or 'succeed'."
            )
        return cls(
            resource_id=values["resource_id"],
            sid=values["sid"],
            recording_mode=values["recording_mode"],
            target_status=target,
            failure_statuses=failures,
            not_found_grace_period=float(grace),
            on_not_found=on_not_found,
            exit_files_grace_period=float(exit_grace),
        )

    def result(self, snapshot: RecordingSnapshot, ended_by: str | None) -> RecordingResult:
        return recording_result(self.resource_id, self.sid, self.recording_mode, snapshot, ended_by)

    @classmethod
    def from_attributes(cls, owner: object) -> WaitSpec:
        """Checked spec from an object holding these fields as attributes (the sensor, the trigger)."""
        return cls.checked(**{spec_field.name: getattr(owner, spec_field.name) for spec_field in fields(cls)})


@dataclass(frozen=True)
class WaitMemory:
    """What one poll leaves for the next: when 404s began, and the last answer that had a status."""

    not_found_since: float | None = None
    last_seen: RecordingResult | None = None
    exit_seen_at: float | None = None  # when a normal exit (11) was first seen without files (31)
    acted_on: tuple[str, ...] = ()  # noticeIds of fail-overs and fatal errors already acted on

    def to_json(self) -> dict[str, Any]:
        """JSON for the task state store and trigger kwargs; notification fields only once used."""
        data = asdict(self)
        if self.exit_seen_at is None:
            del data["exit_seen_at"]
        if self.acted_on:
            data["acted_on"] = list(self.acted_on)
        else:
            del data["acted_on"]
        return data

    @classmethod
    def from_json(cls, data: Any) -> WaitMemory:
        if not isinstance(data, dict):
            return cls()
        since = data.get("not_found_since")
        last_seen = data.get("last_seen")
        exit_seen_at = data.get("exit_seen_at")
        acted_on = data.get("acted_on")
        return cls(
            not_found_since=float(since) if isinstance(since, (int, float)) else None,
            last_seen=cast(RecordingResult, last_seen) if isinstance(last_seen, dict) else None,
            exit_seen_at=float(exit_seen_at) if isinstance(exit_seen_at, (int, float)) else None,
            acted_on=tuple(str(item) for item in acted_on) if isinstance(acted_on, list) else (),
        )


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    memory: WaitMemory
    message: str
    result: RecordingResult | None = None
    query_now: bool = False  # a notification asks for a query at once, not at the next interval


def decide_on_answer(spec: WaitSpec, memory: WaitMemory, body: Any) -> Decision:
    """A ``query`` answered with a body: compare its status with the target and the failure statuses."""
    snapshot = parse_recording(body, sid=spec.sid, require_status=True)
    status = snapshot.status
    seen = spec.result(snapshot, ended_by=None)
    memory = replace(memory, not_found_since=None, last_seen=seen)
    files = describe_files(snapshot.files)
    if status in spec.failure_statuses:
        return Decision(
            Outcome.FAIL,
            memory,
            f"Recording sid={spec.sid} reached failure status {describe_status(status)}. Last file list: {files}.",
            seen,
        )
    if status is not None and spec.target_status <= status <= LAST_LIFECYCLE_STATUS:
        return Decision(
            Outcome.DONE,
            memory,
            f"Recording sid={spec.sid} reached status {describe_status(status)} "
            f"(target {describe_status(spec.target_status)}); {files}.",
            spec.result(snapshot, ended_by="status"),
        )
    return Decision(
        Outcome.WAIT,
        memory,
        f"Recording sid={spec.sid} is at status {describe_status(status)}, waiting for "
        f"{describe_status(spec.target_status)}; {len(snapshot.files)} file(s) so far.",
    )


def decide_on_error(spec: WaitSpec, memory: WaitMemory, error: AgoraError, now: float) -> Decision:
    """A ``query`` failed. Returns the decision, or re-raises errors a wait has no rule for.

    Transient errors (already retried by the transport) never fail the wait: the next poll asks
    again, and only the wait's own deadline ends it.
    """
    if isinstance(error, AgoraNotFoundError):
        return decide_on_not_found(spec, memory, error, now)
    if isinstance(error, AgoraRouteNotFoundError):
        return Decision(Outcome.FAIL, memory, str(error), memory.last_seen)
    if error.retryable:
        return Decision(
            Outcome.WAIT,
            memory,
            f"Agora did not answer the query for recording sid={spec.sid} after retries ({error}); "
            f"asking again at the next poll.",
        )
    raise error


def decide_on_not_found(spec: WaitSpec, memory: WaitMemory, error: AgoraApiError, now: float) -> Decision:
    """Agora's service said 404 ``failed to find worker``.

    It means the session ended, never started, or is failing over to another server (which Agora
    says can take up to 90 s). Only a 404 that outlasts the grace period counts.
    """
    since = memory.not_found_since if memory.not_found_since is not None else now
    memory = replace(memory, not_found_since=since)
    elapsed = max(now - since, 0.0)
    if elapsed < spec.not_found_grace_period:
        return Decision(
            Outcome.WAIT,
            memory,
            f"Agora does not find recording sid={spec.sid} (HTTP 404, request id {error.request_id}) for "
            f"{elapsed:.0f} s; waiting up to not_found_grace_period={spec.not_found_grace_period:g} s, "
            f"because Agora's fail-over answers 404 for a while.",
        )
    last_seen = memory.last_seen
    if spec.on_not_found == "succeed" and last_seen is not None:
        result: RecordingResult = {**last_seen, "ended_by": "not_found"}
        return Decision(
            Outcome.DONE,
            memory,
            f"Recording sid={spec.sid} was seen at status {describe_status(last_seen.get('status'))} and has "
            f"been gone (HTTP 404) for {elapsed:.0f} s: it ended. Last file list: "
            f"{describe_files(last_seen.get('files') or [])}.",
            result,
        )
    seen_text = (
        f"It was last seen at status {describe_status(last_seen.get('status'))} with "
        f"{describe_files(last_seen.get('files') or [])}."
        if last_seen
        else "It was never seen running by this task."
    )
    hint = (
        " To treat a recording that disappears after running as finished, set on_not_found='succeed'."
        if spec.on_not_found == "fail"
        else ""
    )
    return Decision(
        Outcome.FAIL,
        memory,
        f"Recording sid={spec.sid} was not found by Agora (HTTP 404 'failed to find worker', request id "
        f"{error.request_id}) for {elapsed:.0f} s, past not_found_grace_period="
        f"{spec.not_found_grace_period:g} s: it has ended, never started, or resource_id/sid/recording_mode "
        f"are wrong. {seen_text}{hint}",
        last_seen,
    )


# -- notifications -------------------------------------------------------------------------------


def merge_files(*lists: Sequence[RecordingFile]) -> list[RecordingFile]:
    """Every file of every list, once per ``fileName``, in the order first seen; later details win."""
    merged: dict[str, RecordingFile] = {}
    for files in lists:
        for item in files:
            name = str(item.get("fileName"))
            merged[name] = cast(RecordingFile, {**merged.get(name, {}), **item})
    return list(merged.values())


def _settled_by(
    spec: WaitSpec, memory: WaitMemory, notification: Notification, *, status: int | None
) -> RecordingResult:
    last: RecordingResult | None = memory.last_seen
    files = merge_files(last["files"] if last else [], notification.files)
    return {
        "resource_id": spec.resource_id,
        "sid": spec.sid,
        "recording_mode": spec.recording_mode,
        "status": status if status is not None else (last["status"] if last else None),
        "ended_by": "notification",
        "files": files,
        "server_response": last["server_response"] if last else {},
        "notification": {"notice_id": notification.notice_id, "event_type": notification.event_type},
    }


def decide_on_notifications(
    spec: WaitSpec, memory: WaitMemory, notifications: Sequence[Notification], now: float
) -> Decision | None:
    """What a recording's stored notifications settle: the same outcomes as ``query`` answers.

    None when they say nothing new (poll Agora as usual). A WAIT decision carries what they
    changed in the memory (a fail-over restarts the 404 grace period; a fatal error asks for a
    query at once). Idempotent: the whole list is read again at every poll.
    """
    from airflow_provider_agora.notifications import ENDED, ERROR, EXITED, FAILOVER, WEB_FAILED

    failed = [n for n in notifications if (n.kind == EXITED and n.exit_status == 1) or n.kind == WEB_FAILED]
    if failed:
        first = failed[0]
        result = _settled_by(spec, memory, first, status=None)
        return Decision(
            Outcome.FAIL,
            memory,
            f"Recording sid={spec.sid} ended abnormally, as Agora's notification {first.notice_id} (event "
            f"{first.event_type}, {first.details.get('msgName', 'no msgName')}) says. Files known: "
            f"{describe_files(result['files'])}.",
            result,
        )
    # A web recording's 31 lists no files: its 71 does, so only the 71 ends a web wait.
    ended = [n for n in notifications if n.kind == ENDED and (spec.recording_mode != "web" or n.event_type == 71)]
    exited = [n for n in notifications if n.kind == EXITED and n.exit_status == 0]
    if ended:
        first = ended[0]
        result = _settled_by(spec, memory, first, status=LAST_LIFECYCLE_STATUS if exited else None)
        return Decision(
            Outcome.DONE,
            memory,
            f"Recording sid={spec.sid} ended and its files are uploaded, as Agora's notification "
            f"{first.notice_id} (event {first.event_type}) says; {describe_files(result['files'])}.",
            result,
        )
    if exited:
        seen_at = memory.exit_seen_at if memory.exit_seen_at is not None else now
        memory = replace(memory, exit_seen_at=seen_at)
        waited = max(now - seen_at, 0.0)
        if waited >= spec.exit_files_grace_period:
            result = _settled_by(spec, memory, exited[0], status=LAST_LIFECYCLE_STATUS)
            return Decision(
                Outcome.DONE,
                memory,
                f"Recording sid={spec.sid} exited normally (notification {exited[0].notice_id}), but no "
                f"'uploaded' notification (31) came within exit_files_grace_period="
                f"{spec.exit_files_grace_period:g} s: finishing with the files known so far, "
                f"{describe_files(result['files'])}.",
                result,
            )
    new = [n for n in notifications if n.kind in (FAILOVER, ERROR) and n.notice_id not in memory.acted_on]
    if not new and not exited:
        return None
    query_now = False
    for notification in new:
        memory = replace(memory, acted_on=(*memory.acted_on, notification.notice_id))
        if notification.kind == FAILOVER and memory.not_found_since is not None:
            memory = replace(memory, not_found_since=now)  # Agora just said the recording moved
        if notification.kind == ERROR and notification.error_level == FATAL_ERROR_LEVEL:
            query_now = True
    return Decision(
        Outcome.WAIT,
        memory,
        f"Recording sid={spec.sid}: Agora's notifications say "
        + ", ".join(f"event {n.event_type} ({n.details.get('msgName', '')})" for n in (*new, *exited))
        + "; waiting on.",
        query_now=query_now,
    )
