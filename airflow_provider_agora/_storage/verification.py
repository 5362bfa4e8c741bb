"""Deciding whether a recording Agora calls finished has its files in the user's bucket, complete.

Pure functions over plain data, used by every sensor mode after Agora's side is settled: the I/O
(``reading``) lists the recording's prefix once per check (one request per page of keys) and reads
the playlists; these functions say which playlists to read, what is missing, and whether the wait
is done, waits for the files to land (at most ``storage_grace_period``), or fails.

"Complete" comes from the files themselves (reference: agora-storage.md, design note 4): every file
Agora listed exists; an HLS playlist ends with ``#EXT-X-ENDLIST``, and every segment or child
playlist it names exists; an MP4 is not empty.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from airflow_provider_agora._storage.arguments import DEFAULT_STORAGE_GRACE_PERIOD, StorageArguments
from airflow_provider_agora._storage.locations import StorageLocation, with_uris
from airflow_provider_agora._storage.playlists import Playlist, parse_playlist, resolve
from airflow_provider_agora._waiting import Decision, Outcome, WaitMemory, describe_files
from airflow_provider_agora.exceptions import AgoraConfigurationError
from airflow_provider_agora.results import PlaylistSummary, RecordingFile, RecordingResult

__all__ = [
    "DEFAULT_STORAGE_GRACE_PERIOD",
    "Examination",
    "StorageArguments",
    "StorageCheck",
    "StorageListing",
    "StorageTrouble",
    "Trouble",
    "decide_on_storage",
    "examine",
    "located",
    "playlists_to_read",
    "storage_check",
]

_NAMES_IN_MESSAGE = 10


@dataclass(frozen=True, kw_only=True)
class StorageCheck:
    """The storage side of a wait, checked: where the files are, read through which connection, and
    how long they may take to land."""

    location: StorageLocation
    storage_conn_id: str | None
    grace_period: float


def storage_check(
    *, storage: Any, verify_in_storage: Any, storage_conn_id: Any, storage_grace_period: Any, sid: str
) -> tuple[StorageLocation | None, StorageCheck | None]:
    """The sensor's storage arguments, after templates are rendered: the location (for the files'
    URIs) and, with ``verify_in_storage``, the check; one sentence per mistake."""
    if not isinstance(verify_in_storage, bool):
        raise AgoraConfigurationError(
            f"verify_in_storage for recording sid={sid} must be True or False, got {verify_in_storage!r}."
        )
    location = None if storage in (None, "", {}) else StorageLocation.from_argument(storage, sid=sid)
    if not verify_in_storage:
        return location, None
    if location is None:
        raise AgoraConfigurationError(
            f"verify_in_storage=True for recording sid={sid} needs storage=: the start operator's result "
            f"['storage'], the storageConfig, or a URI such as 's3://bucket/prefix'."
        )
    if location.scheme is None:
        raise AgoraConfigurationError(
            f"verify_in_storage=True for recording sid={sid}: Airflow has no reader for {location.vendor_name} "
            f"(vendor {location.vendor}); use an S3-compatible endpoint (vendor 11) or set verify_in_storage=False."
        )
    if storage_conn_id is not None and (not isinstance(storage_conn_id, str) or not storage_conn_id):
        raise AgoraConfigurationError(
            f"storage_conn_id for recording sid={sid} must be a connection id, got {storage_conn_id!r}."
        )
    grace = storage_grace_period
    if isinstance(grace, str) and grace.strip().replace(".", "", 1).isdigit():
        grace = float(grace.strip())  # a template renders numbers as strings
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
        raise AgoraConfigurationError(
            f"storage_grace_period for recording sid={sid} must be a number of seconds >= 0, got {grace!r}."
        )
    return location, StorageCheck(location=location, storage_conn_id=storage_conn_id, grace_period=float(grace))


@dataclass(frozen=True)
class StorageListing:
    """What the bucket holds under the recording's prefix: every key with its size, and the text of
    each playlist read so far."""

    sizes: Mapping[str, int]
    texts: Mapping[str, str] = field(default_factory=dict)


class Trouble(enum.Enum):
    """Storage errors, told apart because they call for different things."""

    PERMISSION = "permission"  # the connection may not list or read: fail at once, say what it lacks
    NOT_FOUND = "not_found"  # no such bucket or endpoint: fail at once
    TRANSIENT = "transient"  # unreachable or throttled: wait, never fail early


@dataclass(frozen=True)
class StorageTrouble:
    kind: Trouble
    message: str  # one sentence, naming the bucket and the connection, never a key or a secret


@dataclass(frozen=True)
class Examination:
    """What a listing says about a recording's files."""

    missing: tuple[str, ...]  # keys Agora or a playlist names that are not in the bucket
    unfinished: tuple[str, ...]  # playlists without #EXT-X-ENDLIST
    empty: tuple[str, ...]  # MP4 files of 0 bytes
    playlists: dict[str, PlaylistSummary]

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unfinished or self.empty)

    def describe(self) -> str:
        parts = []
        for words, keys in (
            ("missing", self.missing),
            ("without #EXT-X-ENDLIST", self.unfinished),
            ("empty", self.empty),
        ):
            if keys:
                more = f" and {len(keys) - _NAMES_IN_MESSAGE} more" if len(keys) > _NAMES_IN_MESSAGE else ""
                parts.append(f"{len(keys)} {words}: {', '.join(keys[:_NAMES_IN_MESSAGE])}{more}")
        return "; ".join(parts) or "every file is there"


def _is_playlist(key: str) -> bool:
    return key.lower().endswith(".m3u8")


def _listed_keys(location: StorageLocation, files: Sequence[RecordingFile]) -> list[str]:
    return list(dict.fromkeys(location.key_of(str(item["fileName"])) for item in files if item.get("fileName")))


def _parsed(texts: Mapping[str, str], key: str) -> Playlist:
    return parse_playlist(texts[key], where=key)


def playlists_to_read(location: StorageLocation, files: Sequence[RecordingFile], listing: StorageListing) -> list[str]:
    """Playlists that exist and have not been read yet: those Agora listed, and the children that a
    merged playlist already read names. The reader calls this until it returns nothing."""
    wanted = [key for key in _listed_keys(location, files) if _is_playlist(key)]
    for key in list(listing.texts):
        if _is_playlist(key):
            wanted += [resolve(key, child) for child in _parsed(listing.texts, key).children]
    return [key for key in dict.fromkeys(wanted) if key in listing.sizes and key not in listing.texts]


def examine(location: StorageLocation, files: Sequence[RecordingFile], listing: StorageListing) -> Examination:
    """Every listed file present, every playlist finished with its segments and children present,
    every MP4 non-empty."""
    missing: list[str] = []
    unfinished: list[str] = []
    empty: list[str] = []
    summaries: dict[str, PlaylistSummary] = {}
    pending = _listed_keys(location, files)
    seen: set[str] = set()
    while pending:
        key = pending.pop(0)
        if key in seen:
            continue
        seen.add(key)
        if key not in listing.sizes:
            missing.append(key)
            continue
        if key.lower().endswith(".mp4") and listing.sizes[key] <= 0:
            empty.append(key)
        if not _is_playlist(key) or key not in listing.texts:
            continue
        playlist = _parsed(listing.texts, key)
        if not playlist.ended:
            unfinished.append(key)
        missing += [
            segment_key
            for segment_key in (resolve(key, segment.name) for segment in playlist.segments)
            if segment_key not in listing.sizes
        ]
        pending += [resolve(key, child) for child in playlist.children]
        if playlist.segments:
            summaries[key] = {"segments": playlist.segment_count, "duration_seconds": round(playlist.duration, 3)}
    return Examination(tuple(dict.fromkeys(missing)), tuple(unfinished), tuple(empty), summaries)


def located(result: RecordingResult, location: StorageLocation | None) -> RecordingResult:
    """``result`` with the storage description and each file's ``uri`` and ``key``, where known."""
    if location is None:
        return result
    files = cast("list[RecordingFile]", with_uris(cast("list[dict[str, Any]]", result["files"]), location))
    return {**result, "files": files, "storage": location.to_dict()}


def decide_on_storage(
    check: StorageCheck, memory: WaitMemory, settled: RecordingResult, seen: Examination | StorageTrouble, now: float
) -> Decision:
    """Agora's side is done (``settled``); ``seen`` is what the bucket showed. Done when complete;
    otherwise wait for the files to land, for at most ``storage_grace_period`` from the first check
    that found them incomplete (kept in the memory), then fail naming what is missing. Storage that
    does not answer is waited for without counting against that period: only the wait's timeout ends it."""
    sid = settled["sid"]
    where = f"{check.location.prefix_uri or check.location.bucket}"
    if not settled["files"]:
        return Decision(
            Outcome.DONE,
            replace(memory, settled=None, storage_pending_since=None),
            f"Recording sid={sid} ended without a file list this task saw (it was gone when first asked): "
            f"nothing to verify in {where}; the stop operator's result lists its files.",
            {**located(settled, check.location), "verified_in_storage": False},
        )
    if isinstance(seen, StorageTrouble) and seen.kind is not Trouble.TRANSIENT:
        return Decision(Outcome.FAIL, memory, seen.message, located(settled, check.location))
    if isinstance(seen, StorageTrouble):  # unreachable or throttled: no verdict, and no time counted
        return Decision(
            Outcome.WAIT,
            replace(memory, settled=settled),
            f"Recording sid={sid} is done at Agora; {seen.message} about {where}.",
        )
    since = memory.storage_pending_since if memory.storage_pending_since is not None else now
    if seen.complete:
        result: RecordingResult = {
            **located(settled, check.location),
            "playlists": seen.playlists,
            "verified_in_storage": True,
        }
        return Decision(
            Outcome.DONE,
            replace(memory, settled=None, storage_pending_since=None),
            f"Recording sid={sid}: {describe_files(settled['files'])}, all in {where} and complete"
            + (f" ({_playlists_text(seen.playlists)})." if seen.playlists else "."),
            result,
        )
    waited = max(now - since, 0.0)
    what = seen.describe()
    memory = replace(memory, settled=settled, storage_pending_since=since)
    if waited < check.grace_period:
        return Decision(
            Outcome.WAIT,
            memory,
            f"Recording sid={sid} is done at Agora, but its files are not all in {where} yet ({what}); "
            f"waited {waited:.0f} s of storage_grace_period={check.grace_period:g} s.",
        )
    return Decision(
        Outcome.FAIL,
        memory,
        f"Recording sid={sid} is done at Agora, but after storage_grace_period={check.grace_period:g} s its "
        f"files in {where} are still incomplete: {what}. Check Agora Console's upload errors for this sid, or "
        f"raise storage_grace_period if files forwarded from Agora's backup (event 32) take longer.",
        located(settled, check.location),
    )


def _playlists_text(playlists: Mapping[str, PlaylistSummary]) -> str:
    return ", ".join(
        f"{key.rsplit('/', 1)[-1]}: {summary['segments']} segment(s), {summary['duration_seconds']:g} s"
        for key, summary in list(playlists.items())[:_NAMES_IN_MESSAGE]
    )
