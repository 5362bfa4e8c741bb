"""Agora's HLS playlists read as text: which segments and child playlists they name, and whether they ended.

Agora rewrites a recording's ``.m3u8`` while it records and ends it with ``#EXT-X-ENDLIST``; it
writes ``#EXTINF:<seconds>`` without the comma unless ``correctEXTINF`` is set, and adds its own
``#EXT-X-AGORA-*`` tags, which carry nothing needed here and are skipped. A standard-mode merged
playlist (``…__uid_e_av.m3u8``) names per-track child playlists after ``# Audio`` / ``# Video``
comment lines. Names in a playlist are relative to the playlist's folder.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from airflow_provider_agora.exceptions import AgoraConfigurationError

__all__ = ["MAX_PLAYLIST_LINES", "MAX_PLAYLIST_SEGMENTS", "Playlist", "Segment", "parse_playlist", "resolve"]

#: Bounds on the work one playlist may cause: a 15-second-segment recording reaches 200,000
#: segments only after about a month, so anything beyond is not a recording's playlist.
MAX_PLAYLIST_LINES = 200_000
MAX_PLAYLIST_SEGMENTS = 200_000

_CHILD_MARKERS = ("# Audio", "# Video")  # what precedes a child playlist in Agora's merged playlist
_VARIANT_TAG = "#EXT-X-STREAM-INF"  # a standard master playlist's child follows this tag


@dataclass(frozen=True)
class Segment:
    """One media segment a playlist names, with its ``#EXTINF`` duration in seconds."""

    name: str
    duration: float


@dataclass(frozen=True)
class Playlist:
    """What one playlist says: its segments, the child playlists it names, and whether it is finished."""

    segments: tuple[Segment, ...] = ()
    children: tuple[str, ...] = ()
    #: ``#EXT-X-ENDLIST`` is present: Agora has written its last segment to this playlist.
    ended: bool = False

    @property
    def duration(self) -> float:
        """The total of the segments' ``#EXTINF`` durations, in seconds."""
        return math.fsum(segment.duration for segment in self.segments)

    @property
    def segment_count(self) -> int:
        """How many segments the playlist names."""
        return len(self.segments)


def _named(where: str | None) -> str:
    return f"playlist {where}" if where else "playlist"


def _duration(line: str, where: str | None, number: int) -> float:
    """``#EXTINF:15.010000`` or ``#EXTINF:15.0,title`` → 15.01 / 15.0."""
    value = line[len("#EXTINF:") :].split(",", 1)[0].strip()
    try:
        duration = float(value)
    except ValueError:
        duration = math.nan
    if not math.isfinite(duration) or duration < 0:
        raise AgoraConfigurationError(
            f"The {_named(where)} has an #EXTINF without a valid duration on line {number} ({value[:40]!r}); "
            "it is not a playlist Agora wrote, so check the file."
        )
    return duration


def parse_playlist(text: str, *, where: str | None = None) -> Playlist:
    """Read an Agora HLS playlist; ``where`` (the object key) names it in errors.

    Tolerates a BOM, CRLF, blank lines, ``#EXT-X-DISCONTINUITY`` and Agora's custom tags; refuses
    text that is not a playlist, and playlists beyond ``MAX_PLAYLIST_LINES`` lines.
    """
    if not isinstance(text, str):
        raise AgoraConfigurationError(f"The {_named(where)} must be text, got {type(text).__name__}.")
    text = text.removeprefix("\ufeff")
    if not text.lstrip().startswith("#EXTM3U"):
        raise AgoraConfigurationError(
            f"The {_named(where)} does not start with #EXTM3U, so it is not an HLS playlist; check that the key "
            "names the recording's .m3u8 file."
        )
    lines = text.splitlines()
    if len(lines) > MAX_PLAYLIST_LINES:
        raise AgoraConfigurationError(
            f"The {_named(where)} has {len(lines)} lines, more than the {MAX_PLAYLIST_LINES} a recording's "
            "playlist can have; check the file."
        )
    segments: list[Segment] = []
    children: list[str] = []
    ended = False
    pending: float | None = None  # the duration of the #EXTINF waiting for its segment's name
    child_next = False  # a "# Audio" / "# Video" marker or #EXT-X-STREAM-INF waits for its child's name
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("#EXTINF:"):
                if number == len(lines) and not text.endswith(("\n", "\r")):
                    break  # a playlist cut off inside its last #EXTINF (a read cut at a size bound)
                pending = _duration(line, where, number)
            elif line == "#EXT-X-ENDLIST":
                ended = True
            elif line.startswith(_CHILD_MARKERS) or line.startswith(_VARIANT_TAG):
                child_next = True
            continue
        if line.split("?", 1)[0].lower().endswith(".m3u8") or (child_next and pending is None):
            children.append(line)
        elif pending is not None:
            if len(segments) >= MAX_PLAYLIST_SEGMENTS:
                raise AgoraConfigurationError(
                    f"The {_named(where)} names more than {MAX_PLAYLIST_SEGMENTS} segments, more than a "
                    "recording's playlist can have; check the file."
                )
            segments.append(Segment(line, pending))
        else:
            raise AgoraConfigurationError(
                f"The {_named(where)} names {line[:80]!r} on line {number} without an #EXTINF before it; "
                "it is not a playlist Agora wrote, so check the file."
            )
        pending = None
        child_next = False
    return Playlist(segments=tuple(segments), children=tuple(children), ended=ended)


def resolve(playlist_key: str, name: str) -> str:
    """The object key of a segment or child playlist named in the playlist stored at ``playlist_key``.

    A relative name is relative to the playlist's folder (``./`` and ``../`` are followed); a name
    starting with ``/`` is a key from the bucket's root; an absolute URL contributes its path.
    """
    if not isinstance(playlist_key, str) or not playlist_key.strip("/"):
        raise AgoraConfigurationError(f"A playlist key must be a non-empty string, got {playlist_key!r}.")
    if not isinstance(name, str) or not name.strip():
        raise AgoraConfigurationError(f"The playlist {playlist_key} names an empty file name; check the file.")
    name = name.strip()
    if "://" in name:
        path = unquote(urlsplit(name).path)
        absolute = True
    else:
        path = name.split("?", 1)[0].split("#", 1)[0]
        absolute = path.startswith("/")
    relative = path.lstrip("/") if absolute else posixpath.join(posixpath.dirname(playlist_key.lstrip("/")), path)
    key = posixpath.normpath(relative) if relative else ""
    if key in ("", ".", "..") or key.startswith("../"):
        raise AgoraConfigurationError(
            f"The playlist {playlist_key} names {name[:80]!r}, which is no file inside the bucket; check the file."
        )
    return key
