"""Recording lifecycle on a scaled clock, and the ``serverResponse`` shapes Agora returns.

Status and file lists are derived from timestamps whenever a request asks, so no background
thread runs and every answer is a pure function of the clock reading. The optional notification
sender (``_notify``) reads the same timeline through :meth:`Recording.notification_plan`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

#: Simulated seconds after ``start`` at which each status begins (Agora's ``serverResponse.status``).
#: 5 means "first slice uploaded"; a recording whose channel has nobody publishing stays at 4.
STARTUP_TIMELINE: tuple[tuple[float, int], ...] = (
    (0.0, 0),
    (0.5, 1),
    (1.0, 2),
    (1.5, 3),
    (2.0, 4),
    (3.0, 5),
)
#: Simulated seconds after the first slice at which the next one is cut.
SLICE_INTERVAL = 2.0
#: Tail after a stop or an idle exit: seconds after the exit begins, and status from then on.
EXIT_TIMELINE: tuple[tuple[float, int], ...] = ((0.0, 6), (1.0, 7), (2.0, 8))
#: Simulated seconds after the exit begins at which the worker is gone (query answers 404).
EXIT_DURATION = 3.0
#: Default ``hold`` of bulk-created recordings: simulated seconds they stay at a terminal status
#: (6, 7, then 8) after their end time, so that a slow poller still sees them before the 404.
DEFAULT_BULK_HOLD = 3600.0
ABNORMAL_STATUS = 20
#: Simulated seconds a recording shows status 20 before its worker is gone.
ABNORMAL_HOLD = 5.0
#: Simulated seconds an unused resourceId stays valid (Agora: 5 minutes, then code 433).
RESOURCE_TTL = 300.0
#: ``recordingConfig.maxIdleTime`` default, simulated seconds.
DEFAULT_MAX_IDLE_TIME = 30.0
#: ``clientRequest.resourceExpiredHour`` default; after it the session is gone.
DEFAULT_RESOURCE_EXPIRED_HOUR = 72
#: Users assumed in a channel when the start request does not list whom to subscribe to.
SIMULATED_USERS: tuple[str, ...] = ("1001", "1002")
ALL_STREAMS = "#allstream#"

FIRST_SLICE_AT = STARTUP_TIMELINE[-1][0]
#: Simulated seconds after ``start`` at which the recorder is ready (status 4): NCS event 40 then.
RECORDER_READY_AT = next(begins for begins, status in STARTUP_TIMELINE if status == 4)
_RUNNING_STATUSES = frozenset(status for _, status in STARTUP_TIMELINE)


class Clock:
    """Simulated seconds since creation; ``speed`` simulated seconds pass per wall second."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = float(speed)
        self._origin_monotonic = time.monotonic()
        self._origin_epoch = time.time()

    def now(self) -> float:
        """Current simulated time."""
        return (time.monotonic() - self._origin_monotonic) * self.speed

    def epoch_ms(self, simulated: float) -> int:
        """Wall-clock epoch milliseconds at which simulated time ``simulated`` happens(ed)."""
        return int((self._origin_epoch + simulated / self.speed) * 1000)

    def from_epoch(self, epoch: float) -> float:
        """Simulated time at wall-clock ``epoch`` seconds: schedules given as epoch times use it."""
        return (epoch - self._origin_epoch) * self.speed


def _step(timeline: tuple[tuple[float, int], ...], elapsed: float) -> int:
    status = timeline[0][1]
    for begins, value in timeline:
        if elapsed < begins:
            break
        status = value
    return status


def _uid_list(value: Any) -> list[str] | None:
    """A subscribe list naming users, or ``None`` when absent or ``#allstream#``."""
    if not isinstance(value, list) or not value or ALL_STREAMS in value:
        return None
    return [str(uid) for uid in value]


@dataclass(frozen=True)
class Resource:
    """An acquired resourceId; valid for :data:`RESOURCE_TTL` until a start consumes it."""

    app_id: str
    cname: str
    uid: str
    resource_id: str
    acquired_at: float
    expired_hour: int

    @property
    def instance(self) -> tuple[str, str, str]:
        """Agora identifies a recording instance by App ID, channel and recorder uid."""
        return (self.app_id, self.cname, self.uid)


@dataclass
class Recording:
    """One started session (``sid``); mutable fields change only under the API's lock."""

    resource: Resource
    sid: str
    mode: str
    client_request: dict[str, Any] = field(repr=False)  # storageConfig holds the storage's secret key
    started_at: float
    audio_uids: list[str]
    video_uids: list[str]
    rtmp_urls: list[str]
    onhold: bool = False
    exit_at: float | None = None
    left_at: float | None = None
    abnormal_at: float | None = None
    layout: dict[str, Any] = field(default_factory=dict)
    #: Simulated seconds the 6→7→8 tail lasts before the worker is gone; only bulk-created
    #: recordings (``hold``) change it.
    exit_duration: float = EXIT_DURATION

    @classmethod
    def create(cls, resource: Resource, sid: str, mode: str, client_request: dict[str, Any], now: float) -> Recording:
        """Read from the start request what later answers depend on."""
        recording_config = client_request.get("recordingConfig")
        if not isinstance(recording_config, dict):
            recording_config = {}
        audio = _uid_list(recording_config.get("subscribeAudioUids"))
        video = _uid_list(recording_config.get("subscribeVideoUids"))
        rtmp_urls: list[str] = []
        onhold = False
        extension = client_request.get("extensionServiceConfig")
        services = extension.get("extensionServices") if isinstance(extension, dict) else None
        for service in services if isinstance(services, list) else []:
            if not isinstance(service, dict):
                continue
            params = service.get("serviceParam")
            params = params if isinstance(params, dict) else {}
            if service.get("serviceName") == "rtmp_publish_service":
                outputs = params.get("outputs")
                rtmp_urls = [
                    str(output.get("rtmpUrl", ""))
                    for output in (outputs if isinstance(outputs, list) else [])
                    if isinstance(output, dict)
                ]
            elif service.get("serviceName") == "web_recorder_service":
                onhold = bool(params.get("onhold", False))
        return cls(
            resource=resource,
            sid=sid,
            mode=mode,
            client_request=client_request,
            started_at=now,
            audio_uids=audio if audio is not None else list(SIMULATED_USERS),
            video_uids=video if video is not None else list(SIMULATED_USERS),
            rtmp_urls=rtmp_urls,
            onhold=onhold,
        )

    # -- configuration -------------------------------------------------------------------------

    def _config(self, key: str) -> dict[str, Any]:
        value = self.client_request.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def max_idle_time(self) -> float:
        """``recordingConfig.maxIdleTime`` in simulated seconds."""
        value = self._config("recordingConfig").get("maxIdleTime", DEFAULT_MAX_IDLE_TIME)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return DEFAULT_MAX_IDLE_TIME
        return float(value)

    @property
    def expires_at(self) -> float:
        """When ``resourceExpiredHour`` (counted from start) ends the session."""
        return self.started_at + self.resource.expired_hour * 3600.0

    @property
    def stream_types(self) -> int:
        """``recordingConfig.streamTypes``: 0 audio, 1 video, 2 both (default)."""
        value = self._config("recordingConfig").get("streamTypes", 2)
        return value if value in (0, 1, 2) else 2

    @property
    def av_file_types(self) -> list[str]:
        """``recordingFileConfig.avFileType``; Agora's default is HLS only."""
        value = self._config("recordingFileConfig").get("avFileType")
        return [str(v) for v in value] if isinstance(value, list) and value else ["hls"]

    @property
    def snapshot_only(self) -> bool:
        """Individual mode with screenshots and no recording files: no fileList is ever reported."""
        return (
            self.mode == "individual"
            and "snapshotConfig" in self.client_request
            and "recordingFileConfig" not in self.client_request
        )

    def _name(self, name: str) -> str:
        prefix = self._config("storageConfig").get("fileNamePrefix")
        if isinstance(prefix, list) and prefix:
            return "/".join(str(part) for part in prefix) + "/" + name
        return name

    # -- timeline ------------------------------------------------------------------------------

    def _normal_exit_at(self) -> float | None:
        """Start of the 6→7→8 tail: a stop, or the idle exit after everybody left."""
        candidates = [self.exit_at] if self.exit_at is not None else []
        if self.left_at is not None and self.mode != "web":
            candidates.append(self.left_at + self.max_idle_time)
        return min(candidates) if candidates else None

    def _publishing_ended_at(self) -> float | None:
        """When slices stop being cut."""
        candidates = [t for t in (self._normal_exit_at(), self.abnormal_at) if t is not None]
        if self.left_at is not None and self.mode != "web":
            candidates.append(self.left_at)
        return min(candidates) if candidates else None

    def status(self, now: float) -> int | None:
        """``serverResponse.status`` at ``now``, or ``None`` once the worker is gone."""
        if now >= self.expires_at:
            return None
        normal = self._normal_exit_at()
        abnormal = self.abnormal_at
        if abnormal is not None and now >= abnormal and (normal is None or abnormal < normal):
            return ABNORMAL_STATUS if now < abnormal + ABNORMAL_HOLD else None
        if normal is not None and now >= normal:
            elapsed = now - normal
            return _step(EXIT_TIMELINE, elapsed) if elapsed < self.exit_duration else None
        status = _step(STARTUP_TIMELINE, now - self.started_at)
        if status == 5 and self.slice_count(now) == 0:
            return 4
        return status

    def is_exiting(self, now: float) -> bool:
        """Whether the worker is on its way out (6, 7, 8 or 20): a stop now is code 49."""
        status = self.status(now)
        return status is not None and status not in _RUNNING_STATUSES

    def slice_count(self, now: float) -> int:
        """Slices uploaded by ``now``: the first at status 5, then one per :data:`SLICE_INTERVAL`."""
        ended = self._publishing_ended_at()
        until = now if ended is None else min(now, ended)
        elapsed = until - (self.started_at + FIRST_SLICE_AT)
        return 0 if elapsed < 0 else 1 + int(elapsed // SLICE_INTERVAL)

    # -- answers -------------------------------------------------------------------------------

    def _track_type(self) -> str:
        return {0: "audio", 1: "video"}.get(self.stream_types, "audio_and_video")

    def _file_items(self, slice_start: int, with_mp4: bool) -> list[dict[str, Any]]:
        """``fileList`` items (``fileListMode`` json) for individual and mix modes."""
        base = f"{self.sid}_{self.resource.cname}"
        if self.mode == "mix":
            names = [f"{base}.m3u8"] + ([f"{base}_0.mp4"] if with_mp4 else [])
            return [
                {
                    "fileName": self._name(name),
                    "trackType": self._track_type(),
                    "uid": "0",
                    "mixedAllUser": True,
                    "isPlayable": True,
                    "sliceStartTime": slice_start,
                }
                for name in names
            ]
        tracks: list[tuple[str, str]] = []
        users = list(dict.fromkeys(self.audio_uids + self.video_uids))
        for uid in users:
            if self.stream_types in (0, 2) and uid in self.audio_uids:
                tracks.append((uid, "audio"))
            if self.stream_types in (1, 2) and uid in self.video_uids:
                tracks.append((uid, "video"))
        return [
            {
                "fileName": self._name(f"{base}__uid_s_{uid}__uid_e_{track}.m3u8"),
                "trackType": track,
                "uid": uid,
                "mixedAllUser": False,
                "isPlayable": True,
                "sliceStartTime": slice_start,
            }
            for uid, track in tracks
        ]

    def _web_service(self, state: str, slice_start: int, has_files: bool, with_mp4: bool) -> dict[str, Any]:
        base = f"{self.sid}_{self.resource.cname}"
        names = [f"{base}.m3u8"] + ([f"{base}_0.mp4"] if with_mp4 else []) if has_files else []
        return {
            "payload": {
                "fileList": [{"filename": self._name(name), "sliceStartTime": slice_start} for name in names],
                "onhold": self.onhold,
                "state": state,
            },
            "serviceName": "web_recorder_service",
        }

    def final_file_list(self, at: float, slice_start_ms: int) -> list[dict[str, Any]]:
        """``fileList`` of NCS event 31 (always JSON items): what ``stop`` reports, MP4 files included.

        For web recordings, the ``filename`` items of event 71 (the web recorder service's list at ``stop``).
        """
        has_files = self.slice_count(at) > 0
        slice_start = slice_start_ms if has_files else 0
        with_mp4 = "mp4" in self.av_file_types
        if self.mode == "web":
            return list(self._web_service("exit", slice_start, has_files, with_mp4)["payload"]["fileList"])
        if not has_files or self.snapshot_only:
            return []
        return self._file_items(slice_start, with_mp4=with_mp4 and self.mode == "mix")

    def notification_plan(self, abnormal_at: float | None) -> list[tuple[float, int]]:
        """NCS events of this session as its state stands now: ``(simulated time, eventType)`` in order.

        ``abnormal_at`` is the abnormal-exit fault's time if one is set (observed or not). Events
        after a state change (stop, idle exit, fault) follow from the new state; those already due
        stay as they were. A normal end at E (stop, idle exit, bulk end time, or
        ``resourceExpiredHour``) gives 71 (web) and 30 at E, 31 when status 7 begins and 11 when
        status 8 begins (Agora's workflow: 40 ... stop, 30, 31, 11); 30 and 31 only when files
        were recorded. An abnormal exit at A gives 1 and 11 (``exitStatus`` 1) at A.
        """
        normal = self._normal_exit_at()
        end = self.expires_at if normal is None else min(normal, self.expires_at)
        abnormal = abnormal_at if abnormal_at is not None and abnormal_at < end else None
        if abnormal is not None:
            end = abnormal
        plan: list[tuple[float, int]] = []
        ready = self.started_at + RECORDER_READY_AT
        if ready < end:
            plan.append((ready, 40))
            if self.mode == "web":
                plan.append((ready, 70))
        if abnormal is not None:
            return [*plan, (abnormal, 1), (abnormal, 11)]
        if self.mode == "web":
            plan.append((end, 71))
        if self.slice_count(end) > 0 and not self.snapshot_only:
            plan.append((end, 30))
            plan.append((end + min(EXIT_TIMELINE[1][0], self.exit_duration), 31))
        plan.append((end + min(EXIT_TIMELINE[2][0], self.exit_duration), 11))
        return plan

    def query_response(self, now: float, status: int, slice_start_ms: int) -> dict[str, Any]:
        """``serverResponse`` of ``query`` (reference §3.2 / §9 examples 1-3)."""
        has_files = self.slice_count(now) > 0
        slice_start = slice_start_ms if has_files else 0
        if self.mode == "web":
            if status not in _RUNNING_STATUSES:
                state, rtmp_status = "exit", "disconnected"
            else:
                state = "inProgress" if status == 5 else "init"
                rtmp_status = "onhold" if self.onhold else "publishing" if status >= 4 else "connecting"
            services = [self._web_service(state, slice_start, has_files, with_mp4=False)]
            if self.rtmp_urls:
                outputs = [{"rtmpUrl": url, "status": rtmp_status} for url in self.rtmp_urls]
                services.append({"payload": {"outputs": outputs}, "serviceName": "rtmp_publish_service"})
            return {"status": status, "extensionServiceState": services}
        if self.snapshot_only:
            return {"status": status, "sliceStartTime": slice_start}
        if self.mode == "mix" and "mp4" not in self.av_file_types:
            m3u8 = self._name(f"{self.sid}_{self.resource.cname}.m3u8") if has_files else ""
            return {"status": status, "fileList": m3u8, "fileListMode": "string", "sliceStartTime": slice_start}
        items = self._file_items(slice_start, with_mp4=False) if has_files else []
        return {"fileListMode": "json", "fileList": items, "status": status, "sliceStartTime": slice_start}

    def stop_response(self, now: float, slice_start_ms: int, uploading_status: str) -> dict[str, Any]:
        """``serverResponse`` of ``stop`` (reference §4 / §9 examples 4-5), final file list included."""
        slice_start = slice_start_ms if self.slice_count(now) > 0 else 0
        with_mp4 = "mp4" in self.av_file_types
        if self.mode == "web":
            return {
                "extensionServiceState": [
                    {"payload": {"uploadingStatus": uploading_status}, "serviceName": "upload_service"},
                    self._web_service("exit", slice_start, True, with_mp4),
                ]
            }
        if self.snapshot_only:
            return {"uploadingStatus": uploading_status}
        if self.mode == "mix" and not with_mp4:
            m3u8 = self._name(f"{self.sid}_{self.resource.cname}.m3u8")
            return {"fileListMode": "string", "fileList": m3u8, "uploadingStatus": uploading_status}
        return {
            "fileListMode": "json",
            "fileList": self._file_items(slice_start, with_mp4=with_mp4 and self.mode == "mix"),
            "uploadingStatus": uploading_status,
        }
