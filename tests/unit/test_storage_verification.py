"""The rules that decide whether a finished recording's files are in the user's bucket, complete."""

from __future__ import annotations

from typing import Any, cast

import pytest

from airflow_provider_agora._storage.locations import StorageLocation
from airflow_provider_agora._storage.verification import (
    StorageCheck,
    StorageListing,
    StorageTrouble,
    Trouble,
    decide_on_storage,
    examine,
    playlists_to_read,
    storage_check,
)
from airflow_provider_agora._waiting import Outcome, WaitMemory
from airflow_provider_agora.exceptions import AgoraConfigurationError
from airflow_provider_agora.results import RecordingFile, RecordingResult

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
LOCATION = StorageLocation(vendor=11, region=0, bucket="recordings", file_name_prefix=("room1",), endpoint="s3.local")
CHECK = StorageCheck(location=LOCATION, storage_conn_id="recording_storage", grace_period=60.0)
PLAYLIST = f"room1/{SID}_room1.m3u8"
SEGMENTS = [f"{SID}_room1_2026120610000{n}000.ts" for n in range(3)]
FILES: list[RecordingFile] = [{"fileName": f"{SID}_room1.m3u8", "trackType": "audio_and_video", "uid": "0"}]


def playlist(names: list[str], *, ended: bool = True) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-TARGETDURATION:16"]
    for name in names:
        lines += ["#EXTINF:15.010000", name]
    return "\n".join(lines + (["#EXT-X-ENDLIST"] if ended else [])) + "\n"


def listing(texts: dict[str, str], *extra_keys: str, sizes: dict[str, int] | None = None) -> StorageListing:
    keys = {key: 100 for key in [*texts, *extra_keys]}
    return StorageListing({**keys, **(sizes or {})}, texts)


def settled(files: list[RecordingFile] = FILES) -> RecordingResult:
    return cast(
        RecordingResult,
        {
            "resource_id": "rid",
            "sid": SID,
            "recording_mode": "mix",
            "status": 8,
            "ended_by": "status",
            "files": files,
            "server_response": {},
        },
    )


def all_there() -> StorageListing:
    return listing({PLAYLIST: playlist(SEGMENTS)}, *(f"room1/{name}" for name in SEGMENTS))


def test_a_finished_playlist_with_every_segment_is_complete() -> None:
    examination = examine(LOCATION, FILES, all_there())
    assert examination.complete
    assert examination.playlists == {PLAYLIST: {"segments": 3, "duration_seconds": 45.03}}


def test_a_segment_the_playlist_lists_but_the_bucket_lacks_is_missing_by_name() -> None:
    seen = listing({PLAYLIST: playlist(SEGMENTS)}, f"room1/{SEGMENTS[0]}", f"room1/{SEGMENTS[2]}")
    assert examine(LOCATION, FILES, seen).missing == (f"room1/{SEGMENTS[1]}",)


def test_a_playlist_without_endlist_is_not_finished() -> None:
    seen = listing({PLAYLIST: playlist(SEGMENTS, ended=False)}, *(f"room1/{name}" for name in SEGMENTS))
    assert examine(LOCATION, FILES, seen).unfinished == (PLAYLIST,)


def test_a_listed_file_not_in_the_bucket_is_missing() -> None:
    assert examine(LOCATION, FILES, StorageListing({})).missing == (PLAYLIST,)


def test_an_empty_mp4_is_not_complete() -> None:
    files: list[RecordingFile] = [{"fileName": f"{SID}_room1_0.mp4"}]
    seen = StorageListing({f"room1/{SID}_room1_0.mp4": 0})
    assert examine(LOCATION, files, seen).empty == (f"room1/{SID}_room1_0.mp4",)


def test_a_name_that_already_carries_the_prefix_is_found_too() -> None:
    files: list[RecordingFile] = [{"fileName": f"room1/{SID}_room1.m3u8"}]
    assert examine(LOCATION, files, all_there()).complete


def test_a_merged_playlists_children_are_read_and_checked() -> None:
    merged = f"room1/{SID}_room1__uid_s_7__uid_e_av.m3u8"
    child = f"{SID}_room1__uid_s_7__uid_e_audio.m3u8"
    files: list[RecordingFile] = [{"fileName": merged.split("/", 1)[1]}]
    merged_text = f"#EXTM3U\n# Audio\n{child}\n"
    seen = listing({merged: merged_text}, f"room1/{child}")
    assert playlists_to_read(LOCATION, files, seen) == [f"room1/{child}"]
    seen = listing({merged: merged_text, f"room1/{child}": playlist(SEGMENTS[:1])})
    assert examine(LOCATION, files, seen).missing == (f"room1/{SEGMENTS[0]}",)


def test_complete_files_finish_the_wait_with_their_uris_and_playlists() -> None:
    decision = decide_on_storage(CHECK, WaitMemory(), settled(), examine(LOCATION, FILES, all_there()), 1000.0)
    assert decision.outcome is Outcome.DONE
    assert decision.result is not None
    assert decision.result["verified_in_storage"] is True
    assert decision.result["files"][0]["uri"] == f"s3://recordings/{PLAYLIST}"
    assert decision.result["playlists"] == {PLAYLIST: {"segments": 3, "duration_seconds": 45.03}}
    assert decision.result["storage"]["bucket"] == "recordings"
    assert decision.memory.settled is None


def test_a_wait_that_saw_no_file_list_has_nothing_to_verify_and_says_so() -> None:
    decision = decide_on_storage(CHECK, WaitMemory(), settled(files=[]), examine(LOCATION, [], StorageListing({})), 1.0)
    assert decision.outcome is Outcome.DONE
    assert decision.result is not None and decision.result["verified_in_storage"] is False
    assert "nothing to verify" in decision.message


def test_missing_files_wait_within_the_grace_period_and_the_memory_keeps_agoras_answer() -> None:
    missing = examine(LOCATION, FILES, StorageListing({}))
    decision = decide_on_storage(CHECK, WaitMemory(), settled(), missing, 1000.0)
    assert decision.outcome is Outcome.WAIT
    assert (decision.memory.settled, decision.memory.storage_pending_since) == (settled(), 1000.0)
    assert WaitMemory.from_json(decision.memory.to_json()) == decision.memory  # survives reschedules


def test_missing_files_fail_after_the_grace_period_naming_them() -> None:
    seen = listing({PLAYLIST: playlist(SEGMENTS)}, f"room1/{SEGMENTS[0]}", f"room1/{SEGMENTS[2]}")
    memory = WaitMemory(settled=settled(), storage_pending_since=1000.0)
    decision = decide_on_storage(CHECK, memory, settled(), examine(LOCATION, FILES, seen), 1060.0)
    assert decision.outcome is Outcome.FAIL
    assert f"1 missing: room1/{SEGMENTS[1]}" in decision.message
    assert f"sid={SID}" in decision.message


@pytest.mark.parametrize("kind", [Trouble.PERMISSION, Trouble.NOT_FOUND])
def test_no_permission_or_no_bucket_fails_at_once(kind: Trouble) -> None:
    decision = decide_on_storage(CHECK, WaitMemory(), settled(), StorageTrouble(kind, "what is wrong"), 1000.0)
    assert (decision.outcome, decision.message) == (Outcome.FAIL, "what is wrong")


def test_unreachable_storage_never_fails_the_wait_even_past_the_grace_period() -> None:
    memory = WaitMemory(settled=settled(), storage_pending_since=0.0)
    down = StorageTrouble(Trouble.TRANSIENT, "storage did not answer")
    assert decide_on_storage(CHECK, memory, settled(), down, 10_000.0).outcome is Outcome.WAIT


def arguments(**given: Any) -> dict[str, Any]:
    return {
        "storage": "s3://recordings/room1",
        "verify_in_storage": True,
        "storage_conn_id": "recording_storage",
        "storage_grace_period": 60,
        "sid": SID,
        **given,
    }


def test_verifying_needs_to_know_where_the_files_are() -> None:
    with pytest.raises(AgoraConfigurationError, match=f"verify_in_storage=True for recording sid={SID} needs storage="):
        storage_check(**arguments(storage=None))


def test_a_vendor_without_a_reader_cannot_be_verified() -> None:
    storage = {"vendor": 2, "region": 0, "bucket": "oss-bucket"}
    with pytest.raises(AgoraConfigurationError, match="Airflow has no reader for"):
        storage_check(**arguments(storage=storage))


def test_a_templated_grace_period_is_read_as_seconds() -> None:
    _, check = storage_check(**arguments(storage_grace_period="90"))
    assert check is not None and check.grace_period == 90.0


def test_without_verification_the_location_still_gives_uris() -> None:
    location, check = storage_check(**arguments(verify_in_storage=False))
    assert check is None and location is not None
    assert location.uri_of(f"{SID}_room1.m3u8") == f"s3://recordings/{PLAYLIST}"
