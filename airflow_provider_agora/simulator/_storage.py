"""Recording files written to the recording's own S3-compatible storage, on the simulator's clock.

A recording whose ``clientRequest.storageConfig`` has ``vendor`` 11 (S3-compatible) and
``extensionParams.endpoint`` (``http://127.0.0.1:9000``, or a bare host, which means https) gets its
files uploaded to ``bucket`` with ``accessKey``/``secretKey``, named as Agora names them (the same
names ``query``/``stop``/31 report, ``fileNamePrefix`` joined by ``/`` in front):

* segments ``<sid>_<cname>_<utc>.ts`` (individual mode: ``<sid>_<cname>__uid_s_<uid>__uid_e_<type>_<utc>.ts``),
  a few 188-byte MPEG-TS packets (PAT, PMT, null packets), one every :data:`SLICE_INTERVAL` simulated
  seconds from the first slice on (the moments ``query`` counts slices at); ``<utc>`` is UTC
  ``yyyyMMddHHmmssSSS``, the first one equal to ``sliceStartTime``, each next one plus the previous EXTINF;
* the playlist ``<sid>_<cname>.m3u8`` (individual: one per uid and track), rewritten after each
  segment, as Agora's (``#EXTM3U``, ``#EXT-X-VERSION:3``, ``#EXT-X-MEDIA-SEQUENCE:0``,
  ``#EXT-X-ALLOW-CACHE:YES``, ``#EXT-X-TARGETDURATION``, ``#EXT-X-AGORA-TRACK-EVENT``, ``#EXTINF:<d>``
  without a comma, bare segment names), with ``#EXT-X-ENDLIST`` written when the recording ends
  normally (stop, idle exit, end time, expiry: when status 6 begins), never after an abnormal exit;
* ``<sid>_<cname>_0.mp4`` (composite and web modes with ``avFileType`` containing ``mp4``), a small
  ``ftyp`` + ``moov``/``mvhd`` + ``mdat`` file, written at the same normal end.

Which objects exist, with which content, is a function of the simulated time (and the faults):
one background thread (:class:`Uploader`) writes what is due and not yet written, in due order
(segments before the playlist that lists them), when the simulator's timeline changes, when the next
file falls due, and when a caller asks (:meth:`Uploader.wait_idle`): a test that moves the clock then
waits for ``storage_idle``/``wait_uploaded`` finds exactly the files due at that moment. A storage
that does not answer (down, 5xx) is retried every :data:`RETRY_INTERVAL` real seconds and never
blocks the API. A storage that refuses (HTTP 401/403, ``AccessDenied``, ``InvalidAccessKeyId``,
``SignatureDoesNotMatch``, ``NoSuchBucket``) or the ``wrong_storage_credentials`` fault stops the
recording's uploads and is reported as Agora reports a wrong storage configuration: NCS event 1
(``module`` 1 uploader, ``errorLevel`` 4, ``errorCode`` 32); ``query`` goes on answering.

Faults: ``backuped`` (latched when the recording starts) holds every file back until
``Faults.backup_delay`` simulated seconds after the normal end; ``late_upload`` writes each file that
many seconds after it is due; ``missing_segment`` never writes one segment the playlist lists;
``unfinished_playlist`` never writes ``#EXT-X-ENDLIST``. boto3 is imported only when a recording
actually uploads; access and secret keys are never logged nor shown in a repr.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_agora.simulator._faults import Faults, StorageFaults
from airflow_provider_agora.simulator._lifecycle import FIRST_SLICE_AT, SLICE_INTERVAL, Clock, Recording

if TYPE_CHECKING:
    from airflow_provider_agora.simulator._service import CloudRecordingService

log = logging.getLogger(__name__)

#: ``storageConfig.vendor`` of an S3-compatible storage (``extensionParams.endpoint``).
S3_COMPATIBLE_VENDOR = 11
#: Real seconds between attempts while the storage does not answer.
RETRY_INTERVAL = 0.2
#: NCS event 1 details of a refused upload: the uploader module's "third-party storage configuration" error.
UPLOADER_MODULE = 1
UPLOADER_ERROR_LEVEL = 4
STORAGE_CONFIG_ERROR_CODE = 32
STORAGE_CONFIG_ERROR_MSG = "upload to the third-party cloud storage refused: check bucket, accessKey and secretKey"
#: ``UploadRecord.outcome`` values.
UPLOAD_OUTCOMES = ("written", "failed", "refused")

_REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
    }
)
_TS_PACKET = 188
_MIN_REDACTED = 6


@dataclass(frozen=True)
class S3Target:
    """Where a recording uploads; the keys are compared and hashed but never shown."""

    endpoint_url: str
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    def redact(self, text: str) -> str:
        """``text`` with both keys blanked out (error messages may echo what was sent); keys shorter
        than :data:`_MIN_REDACTED` characters are placeholders, blanking them would garble the text."""
        for secret in (self.secret_key, self.access_key):
            if len(secret) >= _MIN_REDACTED:
                text = text.replace(secret, "***")
        return text


def storage_target(client_request: Any) -> S3Target | None:
    """The S3-compatible storage a start request names (vendor 11 with an endpoint), else ``None``."""
    config = client_request.get("storageConfig") if isinstance(client_request, dict) else None
    if not isinstance(config, dict) or config.get("vendor") != S3_COMPATIBLE_VENDOR:
        return None
    extension = config.get("extensionParams")
    endpoint = extension.get("endpoint") if isinstance(extension, dict) else None
    bucket, access_key, secret_key = config.get("bucket"), config.get("accessKey"), config.get("secretKey")
    if not isinstance(endpoint, str) or not endpoint.strip() or not isinstance(bucket, str) or not bucket:
        return None
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    return S3Target(
        endpoint,
        bucket,
        access_key if isinstance(access_key, str) else "",
        secret_key if isinstance(secret_key, str) else "",
    )


# -- file contents ---------------------------------------------------------------------------------


def _crc32_mpeg(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _psi_packet(pid: int, table: bytes) -> bytes:
    section = table + struct.pack(">I", _crc32_mpeg(table))
    header = bytes([0x47, 0x40 | (pid >> 8), pid & 0xFF, 0x10, 0x00])  # payload start, pointer field 0
    return (header + section).ljust(_TS_PACKET, b"\xff")


def _ts_segment() -> bytes:
    """A structurally valid MPEG-TS: PAT, PMT (one H.264 and one AAC stream) and two null packets."""
    pmt_pid, video_pid, audio_pid = 0x1000, 0x100, 0x101
    pat_body = struct.pack(">HBBBHH", 0x0001, 0xC1, 0x00, 0x00, 0x0001, 0xE000 | pmt_pid)
    pat = bytes([0x00]) + struct.pack(">H", 0xB000 | (len(pat_body) + 4)) + pat_body
    streams = struct.pack(">BHH", 0x1B, 0xE000 | video_pid, 0xF000) + struct.pack(
        ">BHH", 0x0F, 0xE000 | audio_pid, 0xF000
    )
    pmt_body = struct.pack(">HBBBHH", 0x0001, 0xC1, 0x00, 0x00, 0xE000 | video_pid, 0xF000) + streams
    pmt = bytes([0x02]) + struct.pack(">H", 0xB000 | (len(pmt_body) + 4)) + pmt_body
    null = bytes([0x47, 0x1F, 0xFF, 0x10]).ljust(_TS_PACKET, b"\xff")
    return _psi_packet(0x0000, pat) + _psi_packet(pmt_pid, pmt) + null + null


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _mp4_file(duration_ms: int) -> bytes:
    """A minimal ISO-BMFF file: ``ftyp``, ``moov`` with an ``mvhd`` of ``duration_ms``, and an ``mdat``."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    matrix = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
    mvhd = _box(
        b"mvhd",
        struct.pack(">IIIII", 0, 0, 0, 1000, duration_ms)
        + struct.pack(">IH", 0x00010000, 0x0100)
        + bytes(10)
        + matrix
        + bytes(24)
        + struct.pack(">I", 2),
    )
    return ftyp + _box(b"moov", mvhd) + _box(b"mdat", b"agora-simulator")


TS_SEGMENT = _ts_segment()


def utc_name(epoch_ms: int) -> str:
    """Agora's ``<utc>`` in file names: UTC ``yyyyMMddHHmmssSSS``."""
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y%m%d%H%M%S") + f"{epoch_ms % 1000:03d}"


# -- what a recording writes, as a function of time ------------------------------------------------


@dataclass(frozen=True)
class _Playlist:
    base: str  # file name without extension: the playlist is base.m3u8, segments base_<utc>.ts
    track_types: tuple[str, ...]  # TRACK_TYPE values of #EXT-X-AGORA-TRACK-EVENT


@dataclass(frozen=True)
class FilePlan:
    """A snapshot of one recording's timeline, enough to tell its files at any simulated time."""

    prefix: str  # "dir1/dir2/" from fileNamePrefix, or ""
    playlists: tuple[_Playlist, ...]
    mp4: str | None  # MP4 file name, when avFileType asks for one in this mode
    first_slice: float  # simulated time of the first segment
    slice_start_ms: int  # its epoch ms (the recording's sliceStartTime)
    cut_end: float | None  # simulated time from which no segment is cut (None: still recording)
    final_at: float | None  # simulated time of the normal end (ENDLIST, MP4); None: not (yet) known
    abnormal: bool  # the recording exited abnormally: no ENDLIST, no MP4

    @classmethod
    def of(cls, recording: Recording, clock: Clock, abnormal_at: float | None) -> FilePlan:
        """Read ``recording`` (with the service lock held); ``abnormal_at`` is the fault's time, if set."""
        base = f"{recording.sid}_{recording.resource.cname}"
        stream_types = recording.stream_types
        if recording.mode == "individual":
            playlists = tuple(
                _Playlist(f"{base}__uid_s_{item['uid']}__uid_e_{item['trackType']}", (item["trackType"].upper(),))
                for item in recording._file_items(0, with_mp4=False)
            )
        else:
            kinds = {0: ("AUDIO",), 1: ("VIDEO",)}.get(stream_types, ("AUDIO", "VIDEO"))
            playlists = (_Playlist(base, kinds if recording.mode == "mix" else ("AUDIO", "VIDEO")),)
        mp4 = f"{base}_0.mp4" if recording.mode in ("mix", "web") and "mp4" in recording.av_file_types else None
        if recording.snapshot_only:
            playlists, mp4 = (), None
        normal = recording._normal_exit_at()
        end = recording.expires_at if normal is None else min(normal, recording.expires_at)
        observed = recording.abnormal_at if recording.abnormal_at is not None else abnormal_at
        abnormal = observed is not None and observed < end
        cuts = [t for t in (normal, observed if abnormal else None) if t is not None]
        if recording.left_at is not None and recording.mode != "web":
            cuts.append(recording.left_at)
        if normal is None and not abnormal:
            final_at = None
        else:
            final_at = None if abnormal else end
            cuts.append(end)
        prefix = recording._name("")
        first_slice = recording.started_at + FIRST_SLICE_AT
        return cls(
            prefix=prefix,
            playlists=playlists,
            mp4=mp4,
            first_slice=first_slice,
            slice_start_ms=clock.epoch_ms(first_slice),
            cut_end=min(cuts) if cuts else None,
            final_at=final_at,
            abnormal=abnormal,
        )

    def segments_by(self, t: float) -> int:
        """Segments cut by ``t`` (the count ``query`` reports slices by)."""
        until = t if self.cut_end is None else min(t, self.cut_end)
        elapsed = until - self.first_slice
        return 0 if elapsed < 0 else 1 + int(elapsed // SLICE_INTERVAL)

    def _segment_ms(self, index: int) -> int:
        return self.slice_start_ms + round(index * SLICE_INTERVAL * 1000)

    def segment_name(self, playlist: _Playlist, index: int) -> str:
        return f"{playlist.base}_{utc_name(self._segment_ms(index))}.ts"

    def playlist_text(self, playlist: _Playlist, segments: int, endlist: bool) -> str:
        """The playlist as Agora writes it after ``segments`` segments."""
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            "#EXT-X-MEDIA-SEQUENCE:0",
            "#EXT-X-ALLOW-CACHE:YES",
            f"#EXT-X-TARGETDURATION:{math.ceil(SLICE_INTERVAL)}",
        ]
        start = utc_name(self.slice_start_ms)
        lines += [
            f"#EXT-X-AGORA-TRACK-EVENT:EVENT=START,TRACK_TYPE={kind},TIME={start}" for kind in playlist.track_types
        ]
        for index in range(segments):
            lines += [f"#EXTINF:{SLICE_INTERVAL:.6f}", self.segment_name(playlist, index)]
        if endlist:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def objects(self, t: float, faults: StorageFaults, backuped: bool, backup_delay: float) -> list[tuple[str, bytes]]:
        """``(key, content)`` of every object as it stands at simulated time ``t``, in upload order."""
        if backuped and not self.abnormal and (self.final_at is None or t < self.final_at + backup_delay):
            return []
        segments = self.segments_by(t)
        if segments == 0 or not self.playlists:
            return []
        final = self.final_at is not None and t >= self.final_at
        out: list[tuple[str, bytes]] = []
        for playlist in self.playlists:
            out += [
                (self.prefix + self.segment_name(playlist, index), TS_SEGMENT)
                for index in range(segments)
                if index != faults.missing_segment
            ]
        if final and self.mp4 is not None:
            out.append((self.prefix + self.mp4, _mp4_file(round(segments * SLICE_INTERVAL * 1000))))
        endlist = final and not faults.unfinished_playlist
        for playlist in self.playlists:
            text = self.playlist_text(playlist, segments, endlist)
            out.append((self.prefix + playlist.base + ".m3u8", text.encode("ascii")))
        return out

    def next_change(self, t: float, backuped: bool, backup_delay: float) -> float | None:
        """The first simulated time after ``t`` at which :meth:`objects` changes, if known now."""
        if not self.playlists:
            return None
        if backuped and not self.abnormal:
            if self.final_at is None:
                return None
            held_until = self.final_at + backup_delay
            return held_until if held_until > t else None
        candidates: list[float] = []
        segments = self.segments_by(t)
        upcoming = self.first_slice + segments * SLICE_INTERVAL
        if self.cut_end is None or upcoming <= self.cut_end:
            candidates.append(upcoming)
        if self.final_at is not None and self.final_at > t:
            candidates.append(self.final_at)
        return min(candidates) if candidates else None


# -- the uploader ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadRecord:
    """One upload attempt: ``outcome`` is ``written``, ``failed`` (no answer or 5xx: retried) or
    ``refused`` (the storage said no: the recording's uploads stop). ``simulated_time`` is the pass's
    clock reading, ``time`` the wall clock (``time.time()``) of the attempt."""

    sid: str
    bucket: str
    key: str
    size: int
    outcome: str
    error: str | None
    simulated_time: float
    time: float


@dataclass
class _State:
    """The uploader's view of one recording (guarded by the uploader's condition)."""

    target: S3Target
    backuped: bool
    backup_delay: float
    written: dict[str, str] = field(default_factory=dict)  # key -> sha256 of what was written last
    pending: bool = False  # the last pass could not write everything (retried)
    stopped: str | None = None  # why uploads stopped for good (refused, no S3 client)
    next_due: float | None = None  # simulated time of the next change, late_upload included


class _Refused(Exception):
    """The storage said no (or the ``wrong_storage_credentials`` fault did)."""


class _Unavailable(Exception):
    """No answer, or one that may change on a retry (5xx)."""


class Uploader:
    """One daemon thread that writes the recordings' files to their S3-compatible storage.

    ``touch`` is the service's change callback (called with the service lock held: it only queues);
    ``on_refused(sid, at)`` is called when a recording's uploads are refused (the notifier reports it).
    """

    def __init__(self, clock: Clock, faults: Faults, service: CloudRecordingService) -> None:
        self._clock = clock
        self._faults = faults
        self._service = service
        self._cond = threading.Condition()
        self._new: dict[str, tuple[bool, float]] = {}  # sid -> (backuped, backup delay) latched at first sight
        self._seen: set[str] = set()
        self._states: dict[str, _State] = {}
        self._dirty = False
        self._requested = 0  # bumped by every wait: a pass that starts later sees everything due then
        self._completed = 0  # ``_requested`` as it was when the last finished pass started
        self._token: object | None = None
        self._thread: threading.Thread | None = None
        self._clients: dict[S3Target, Any] = {}  # worker thread only
        self._log_lock = threading.Lock()
        self._log: list[UploadRecord] = []
        self.on_refused: Callable[[str, float], None] | None = None

    def __repr__(self) -> str:
        return f"<Uploader recordings={len(self._states)}>"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._token is not None:
                return
            token = self._token = object()
        self._thread = threading.Thread(target=self._run, args=(token,), name="agora-simulator-storage", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._token = None
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    # -- inputs ----------------------------------------------------------------------------------

    def touch(self, sids: Sequence[str]) -> None:
        """The timeline of ``sids`` changed; a new sid latches the ``backuped`` switch now (its start)."""
        backuped = self._faults.notification_flag("backuped")
        delay = self._faults.backup_delay
        with self._cond:
            for sid in sids:
                if sid not in self._seen:
                    self._seen.add(sid)
                    self._new[sid] = (backuped, delay)
            self._dirty = True
            self._cond.notify_all()

    def poke(self) -> None:
        """Look at every recording again now (faults changed, or a caller waits)."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    # -- observation -----------------------------------------------------------------------------

    def records(self, sid: str | None = None) -> list[UploadRecord]:
        with self._log_lock:
            return [record for record in self._log if sid is None or record.sid == sid]

    def clear(self) -> None:
        with self._log_lock:
            self._log.clear()

    def wait_idle(self, timeout: float, sid: str | None = None) -> bool:
        """Wait until every file due at the clock reading of this call is written (or refused for good),
        for ``sid`` or every recording; ``False`` if that is not so within ``timeout`` real seconds.

        That is: a pass over the recordings that started after this call (so it saw the clock, the
        faults and the recordings as they were at the call, or later) has finished with nothing left
        to retry."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._requested += 1
            wanted = self._requested
            self._dirty = True
            self._cond.notify_all()
            while not self._idle(wanted, sid):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._token is None:
                    return False
                self._cond.wait(remaining)
            return True

    def _idle(self, wanted: int, sid: str | None) -> bool:
        """Whether a pass that started after request ``wanted`` has finished, leaving nothing to retry
        (for ``sid``, or for every recording). Condition held."""
        if self._completed < wanted:
            return False
        if sid is None:
            states = list(self._states.values())
        else:
            state = self._states.get(sid)
            states = [] if state is None else [state]
        return all(s.stopped is not None or not s.pending for s in states)

    # -- worker ----------------------------------------------------------------------------------

    def _run(self, token: object) -> None:
        while True:
            with self._cond:
                while True:
                    if self._token is not token:
                        return
                    if self._dirty:
                        break
                    wait = self._wait_seconds()
                    if wait is not None and wait <= 0:
                        break
                    if not self._cond.wait(wait) and wait is not None:
                        break  # the next file (or retry) is due
                self._dirty = False
                new, self._new = self._new, {}
                generation = self._requested
            try:
                self._pass(new)
            except Exception:  # a bug here must not stop every later upload
                log.exception("storage pass failed")
            with self._cond:
                self._completed = max(self._completed, generation)
                self._cond.notify_all()

    def _wait_seconds(self) -> float | None:
        """Real seconds until the next due file or retry (``None``: nothing scheduled). Condition held."""
        now = self._clock.now()
        waits: list[float] = []
        for state in self._states.values():
            if state.stopped is not None:
                continue
            if state.pending:
                waits.append(RETRY_INTERVAL)
            if state.next_due is not None:
                waits.append(max(0.0, (state.next_due - now) / self._clock.speed))
        return min(waits) if waits else None

    def _pass(self, new: dict[str, tuple[bool, float]]) -> None:
        for sid, (backuped, delay) in new.items():
            with self._service.locked_recording(sid) as recording:
                target = None if recording is None else storage_target(recording.client_request)
            if target is not None:
                with self._cond:
                    self._states[sid] = _State(target, backuped, delay)
        with self._cond:
            sids = [sid for sid, state in self._states.items() if state.stopped is None]
        for sid in sids:
            self._sync(sid)

    def _sync(self, sid: str) -> None:
        with self._cond:
            state = self._states[sid]
        now = self._clock.now()
        with self._service.locked_recording(sid) as recording:
            if recording is None:
                return
            plan = FilePlan.of(recording, self._clock, self._faults.abnormal_at(sid))
        faults = self._faults.storage_faults(sid)
        effective = now - faults.late_upload
        wanted = plan.objects(effective, faults, state.backuped, state.backup_delay)
        todo = [
            (key, body, hashlib.sha256(body).hexdigest())
            for key, body in wanted
            if state.written.get(key) != hashlib.sha256(body).hexdigest()
        ]
        change = plan.next_change(effective, state.backuped, state.backup_delay)
        pending = False
        stopped: str | None = None
        for key, body, digest in todo:
            try:
                if faults.wrong_storage_credentials:
                    raise _Refused("AccessDenied: Access Denied (wrong_storage_credentials fault)")
                self._put(state.target, key, body)
            except _Refused as exc:
                stopped = state.target.redact(str(exc))
                self._record(sid, state.target, key, body, "refused", stopped, now)
                log.warning(
                    "storage refused %s in bucket %s at %s for recording %s: %s",
                    key,
                    state.target.bucket,
                    state.target.endpoint_url,
                    sid,
                    stopped,
                )
                break
            except _Unavailable as exc:
                error = state.target.redact(str(exc))
                self._record(sid, state.target, key, body, "failed", error, now)
                log.info("storage at %s did not take %s (retrying): %s", state.target.endpoint_url, key, error)
                pending = True
                break
            except ImportError:
                stopped = "boto3 is not installed: pip install boto3 (or airflow-provider-agora[test])"
                self._record(sid, state.target, key, body, "failed", stopped, now)
                log.error("cannot upload the files of recording %s: %s", sid, stopped)
                break
            state.written[key] = digest
            self._record(sid, state.target, key, body, "written", None, now)
        refused = stopped is not None and not stopped.startswith("boto3")
        with self._cond:
            state.pending = pending
            state.stopped = stopped
            state.next_due = None if change is None else change + faults.late_upload
        if refused and self.on_refused is not None:
            self.on_refused(sid, now)

    def _record(
        self, sid: str, target: S3Target, key: str, body: bytes, outcome: str, error: str | None, at: float
    ) -> None:
        record = UploadRecord(sid, target.bucket, key, len(body), outcome, error, at, time.time())
        with self._log_lock:
            self._log.append(record)

    # -- S3 --------------------------------------------------------------------------------------

    def _client(self, target: S3Target) -> Any:
        client = self._clients.get(target)
        if client is None:
            import boto3  # only when a recording actually uploads
            from botocore.config import Config

            client = boto3.session.Session().client(
                "s3",
                endpoint_url=target.endpoint_url,
                aws_access_key_id=target.access_key,
                aws_secret_access_key=target.secret_key,
                region_name="us-east-1",
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"total_max_attempts": 1},
                    connect_timeout=2,
                    read_timeout=10,
                ),
            )
            self._clients[target] = client
        return client

    def _put(self, target: S3Target, key: str, body: bytes) -> None:
        client = self._client(target)
        from botocore.exceptions import BotoCoreError, ClientError

        try:  # no Content-Type: Agora tells S3 users to set it themselves
            client.put_object(Bucket=target.bucket, Key=key, Body=body)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = f"{code or status}: {error.get('Message', '')}".rstrip(": ")
            if code in _REFUSED_CODES or status in (401, 403):
                raise _Refused(message) from None
            raise _Unavailable(message) from None
        except BotoCoreError as exc:
            raise _Unavailable(f"{type(exc).__name__}: {exc}") from None
