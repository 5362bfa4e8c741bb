"""A finished recording announced to Airflow: the extra of its asset events, and its lineage outputs."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_agora._storage.announcing import announce, asset_event_extra, lineage_outputs
from airflow_provider_agora._storage.locations import StorageLocation
from airflow_provider_agora._storage.verification import located
from airflow_provider_agora.results import RecordingResult

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
LOCATION = StorageLocation(vendor=1, region=0, bucket="recordings", file_name_prefix=("room1",))


def result() -> RecordingResult:
    return located(
        {
            "resource_id": "rid",
            "sid": SID,
            "recording_mode": "mix",
            "status": 8,
            "ended_by": "status",
            "files": [{"fileName": f"{SID}_room1.m3u8", "trackType": "audio_and_video", "uid": "0"}],
            "server_response": {"status": 8, "fileListMode": "json"},
        },
        LOCATION,
    )


def test_the_asset_extra_names_the_recording_and_where_each_file_is() -> None:
    extra = asset_event_extra(result())
    assert extra["sid"] == SID
    assert extra["files"] == [
        {
            "fileName": f"{SID}_room1.m3u8",
            "key": f"room1/{SID}_room1.m3u8",
            "uri": f"s3://recordings/room1/{SID}_room1.m3u8",
            "trackType": "audio_and_video",
            "uid": "0",
        }
    ]
    assert extra["storage"]["uri"] == "s3://recordings/room1/"
    assert "server_response" not in extra  # Agora's whole answer stays in the task's XCom


def outlet_events() -> Any:
    context = pytest.importorskip("airflow.sdk.execution_time.context", reason="Airflow 3's outlet events")
    return context.OutletEventAccessors()


def test_every_declared_asset_outlet_gets_the_recording() -> None:
    events = outlet_events()
    from airflow.sdk import Asset

    outlet = Asset("s3://recordings/room1/")
    assert announce({"outlet_events": events}, [outlet], result()) == 1
    assert events[outlet].extra["sid"] == SID


def test_an_asset_alias_gets_one_event_on_the_recordings_prefix() -> None:
    events = outlet_events()
    from airflow.sdk import AssetAlias

    alias = AssetAlias("finished-recordings")
    announce({"outlet_events": events}, [alias], result())
    (event,) = events[alias].asset_alias_events
    assert (event.dest_asset_key.uri, event.extra["sid"]) == ("s3://recordings/room1", SID)  # Airflow drops the /


def test_lineage_names_each_file_by_openlineages_object_storage_convention() -> None:
    assert lineage_outputs(result()) == [("s3://recordings", f"room1/{SID}_room1.m3u8")]


def test_lineage_without_files_names_the_prefix_and_without_storage_nothing() -> None:
    started = {"sid": SID, "storage": LOCATION.to_dict()}
    assert lineage_outputs(started) == [("s3://recordings", "room1")]
    assert lineage_outputs({"sid": SID, "files": [{"fileName": "a.m3u8"}]}) == []


def test_uris_need_no_storage_library() -> None:
    """Without the s3 extra nothing storage-related is imported: the operators, the sensor and a
    result's URIs import no boto3, botocore, aiobotocore or s3fs."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "import airflow_provider_agora.operators.agora, airflow_provider_agora.sensors.agora\n"
        "from airflow_provider_agora._storage.locations import StorageLocation\n"
        "print(StorageLocation(vendor=1, region=0, bucket='b').uri_of('a.m3u8'))\n"
        "print(sorted(m for m in ('boto3', 'botocore', 's3fs', 'aiobotocore') if m in sys.modules))\n"
    )
    answer = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert answer.stdout.split() == ["s3://b/a.m3u8", "[]"]
