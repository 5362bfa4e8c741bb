"""Agora's HLS playlists: segments, child playlists, whether they ended, and the keys they name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_agora._storage import playlists
from airflow_provider_agora._storage.playlists import Playlist, Segment, parse_playlist, resolve
from airflow_provider_agora.exceptions import AgoraConfigurationError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "playlists"
REAL = "2967baa4c74980d1280bb185ae526094_K0wLZk45v__uid_s_259__uid_e_audio"
DOC = "sid713476478245_cnameagora__uid_s_123__uid_e_video"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def refusal(call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the AgoraConfigurationError the call raises, checked to be one sentence."""
    with pytest.raises(AgoraConfigurationError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert message.endswith("."), message
    assert not re.search(r"[.;]\s+[A-Z]", message), f"more than one sentence: {message}"
    return message


def test_the_real_agora_audio_playlist() -> None:
    playlist = parse_playlist(fixture("agora_real_audio.m3u8"))
    assert [segment.name for segment in playlist.segments] == [
        f"{REAL}_20240910090123736.ts",
        f"{REAL}_20240910090138746.ts",
        f"{REAL}_20240910090153766.ts",
        f"{REAL}_20240910090208786.ts",
    ]
    assert [segment.duration for segment in playlist.segments] == [15.01, 15.02, 15.02, 9.94]
    assert playlist.segment_count == 4
    assert round(playlist.duration, 3) == 54.99
    assert playlist.ended is True
    assert playlist.children == ()


def test_the_documented_video_playlist_with_discontinuities_and_rotations() -> None:
    playlist = parse_playlist(fixture("doc_video.m3u8"))
    assert [segment.name for segment in playlist.segments] == [
        f"{DOC}_20190920125142485.ts",
        f"{DOC}_20190920125149174.ts",
        f"{DOC}_20190920125206616.ts",
        f"{DOC}_20190920125239942.ts",
    ]
    assert playlist.segment_count == 4
    assert round(playlist.duration, 3) == 71.915
    assert playlist.ended is True


def test_a_playlist_agora_is_still_writing_has_not_ended() -> None:
    playlist = parse_playlist(fixture("unfinished_audio.m3u8"))
    assert playlist.segment_count == 2
    assert round(playlist.duration, 3) == 30.038
    assert playlist.ended is False


def test_extinf_with_the_comma_and_a_title() -> None:
    playlist = parse_playlist(fixture("correct_extinf.m3u8"))
    assert [segment.duration for segment in playlist.segments] == [15.0, 15.0, 4.25]
    assert playlist.segments[2].name.endswith("_20261206090030000.ts")
    assert round(playlist.duration, 3) == 34.25
    assert playlist.ended is True


def test_a_merged_standard_mode_playlist_names_its_children() -> None:
    playlist = parse_playlist(fixture("merged_av.m3u8"))
    prefix = "03f7acf17547cbd851d92ca515b6d069_MTTest__uid_s_3108485562__uid_e"
    assert playlist.children == (f"{prefix}_audio.m3u8", f"{prefix}_video.m3u8")
    assert playlist.segments == ()
    assert playlist.duration == 0
    assert playlist.ended is True


def test_a_child_after_a_marker_needs_no_m3u8_ending() -> None:
    playlist = parse_playlist("#EXTM3U\n# Audio\naudio-track\n#EXT-X-ENDLIST\n")
    assert playlist.children == ("audio-track",)


def test_a_master_playlists_variants_are_children() -> None:
    text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nlow/index\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhigh.m3u8?x=1\n"
    assert parse_playlist(text).children == ("low/index", "high.m3u8?x=1")


def test_crlf_a_bom_and_blank_lines_are_tolerated() -> None:
    text = fixture("agora_real_audio.m3u8")
    odd = "\ufeff" + text.replace("\n", "\r\n\r\n")
    assert parse_playlist(odd) == parse_playlist(text)


def test_whitespace_around_lines_is_tolerated() -> None:
    text = "#EXTM3U\n  #EXTINF:1.5  \n  a.ts  \n#EXT-X-ENDLIST  \n"
    assert parse_playlist(text) == Playlist(segments=(Segment("a.ts", 1.5),), ended=True)


def test_text_that_is_not_a_playlist_is_refused_naming_it() -> None:
    key = "agora/room1/sid_room1__uid_s_1__uid_e_av.mpd"
    message = refusal(parse_playlist, '<?xml version="1.0"?>\n<MPD></MPD>\n', where=key)
    assert f"playlist {key} does not start with #EXTM3U" in message


def test_empty_text_is_refused() -> None:
    assert "does not start with #EXTM3U" in refusal(parse_playlist, "")


def test_an_extinf_without_a_number_is_refused() -> None:
    message = refusal(parse_playlist, "#EXTM3U\n#EXTINF:abc\na.ts\n", where="k.m3u8")
    assert "playlist k.m3u8 has an #EXTINF without a valid duration on line 2" in message


def test_a_negative_extinf_is_refused() -> None:
    assert "without a valid duration" in refusal(parse_playlist, "#EXTM3U\n#EXTINF:-1\na.ts\n")


def test_a_segment_without_extinf_is_refused() -> None:
    message = refusal(parse_playlist, "#EXTM3U\na.ts\n", where="k.m3u8")
    assert "names 'a.ts' on line 2 without an #EXTINF" in message


def test_a_playlist_cut_off_inside_its_last_extinf_reads_as_unfinished() -> None:
    text = fixture("agora_real_audio.m3u8")
    cut = text[: text.index("#EXTINF:9.94") + len("#EXTINF:")]
    playlist = parse_playlist(cut)
    assert (playlist.segment_count, playlist.ended) == (3, False)


def test_a_playlist_beyond_the_line_bound_is_refused() -> None:
    text = "#EXTM3U\n" + "#EXT-X-DISCONTINUITY\n" * playlists.MAX_PLAYLIST_LINES
    message = refusal(parse_playlist, text, where="k.m3u8")
    assert f"has {playlists.MAX_PLAYLIST_LINES + 1} lines" in message


def test_a_playlist_beyond_the_segment_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(playlists, "MAX_PLAYLIST_SEGMENTS", 3)
    text = "#EXTM3U\n" + "".join(f"#EXTINF:1\n{index}.ts\n" for index in range(4))
    assert "more than 3 segments" in refusal(parse_playlist, text)


def test_the_bound_itself_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(playlists, "MAX_PLAYLIST_SEGMENTS", 3)
    text = "#EXTM3U\n" + "".join(f"#EXTINF:1\n{index}.ts\n" for index in range(3))
    assert parse_playlist(text).segment_count == 3


# --- resolve ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("playlist_key", "name", "key"),
    [
        ("agora/room1/sid_room1.m3u8", "sid_room1_20240910090123736.ts", "agora/room1/sid_room1_20240910090123736.ts"),
        ("sid_room1.m3u8", "sid_room1_20240910090123736.ts", "sid_room1_20240910090123736.ts"),
        ("agora/room1/av.m3u8", "./audio.m3u8", "agora/room1/audio.m3u8"),
        ("agora/room1/av.m3u8", "../room2/audio.m3u8", "agora/room2/audio.m3u8"),
        ("agora/room1/av.m3u8", "/other/audio.m3u8", "other/audio.m3u8"),
        ("agora/room1/av.m3u8", "seg.ts?token=1", "agora/room1/seg.ts"),
        ("agora/room1/av.m3u8", "https://recordings.s3.amazonaws.com/agora/x%20y.ts?X-Amz=1", "agora/x y.ts"),
    ],
)
def test_resolve(playlist_key: str, name: str, key: str) -> None:
    assert resolve(playlist_key, name) == key


def test_resolve_refuses_a_name_leaving_the_bucket() -> None:
    assert "no file inside the bucket" in refusal(resolve, "agora/av.m3u8", "../../x.ts")


def test_resolve_refuses_an_empty_name() -> None:
    assert "empty file name" in refusal(resolve, "agora/av.m3u8", "  ")


def test_resolve_refuses_an_empty_playlist_key() -> None:
    assert "playlist key" in refusal(resolve, "", "a.ts")


def test_every_segment_of_the_real_playlist_resolves_next_to_it() -> None:
    key = f"agora/K0wLZk45v/{REAL}.m3u8"
    playlist = parse_playlist(fixture("agora_real_audio.m3u8"), where=key)
    assert [resolve(key, s.name) for s in playlist.segments] == [f"agora/K0wLZk45v/{s.name}" for s in playlist.segments]
