"""Telling Airflow where a finished recording's files are: asset events and OpenLineage outputs.

``asset_event_extra`` and ``lineage_outputs`` are pure; ``announce`` writes the extra of the task's
declared outlets (``context["outlet_events"]``), so that the asset event Airflow records when the
task succeeds carries the recording: a DAG scheduled on that asset runs once per finished recording
and reads its files from ``triggering_asset_events``. An ``Asset`` outlet (the bucket prefix, such
as ``Asset("s3://bucket/recordings/")``) gets the extra as it is; an ``AssetAlias`` outlet gets one
event on the recording's own prefix asset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["announce", "asset_event_extra", "lineage_outputs"]

# What a downstream task needs of each file; the rest stays in the task's XCom.
_FILE_KEYS = ("fileName", "key", "uri", "trackType", "uid", "mixedAllUser", "isPlayable", "sliceStartTime")


def asset_event_extra(result: Mapping[str, Any]) -> dict[str, Any]:
    """The recording, as an asset event's JSON extra: its ids, where its files are, and the files."""
    extra: dict[str, Any] = {
        "sid": result.get("sid"),
        "resource_id": result.get("resource_id"),
        "recording_mode": result.get("recording_mode"),
        "ended_by": result.get("ended_by"),
        "files": [
            {key: item[key] for key in _FILE_KEYS if key in item}
            for item in result.get("files") or []
            if isinstance(item, Mapping)
        ],
    }
    for key in ("storage", "playlists", "verified_in_storage", "uploading_status"):
        if key in result:
            extra[key] = result[key]
    return extra


def announce(context: Mapping[str, Any], outlets: Iterable[Any], result: Mapping[str, Any] | None) -> int:
    """Put the recording into the asset events of the task's outlets; how many outlets got it."""
    events = context.get("outlet_events")
    if events is None or result is None:
        return 0
    extra = asset_event_extra(result)
    announced = 0
    for outlet in outlets or ():
        kind = type(outlet).__name__
        if kind in ("Asset", "Dataset"):
            events[outlet].extra.update(extra)
            announced += 1
        elif kind in ("AssetAlias", "DatasetAlias") and (result.get("storage") or {}).get("uri"):
            events[outlet].add(_asset(str(result["storage"]["uri"])), extra=extra)
            announced += 1
    return announced


def _asset(uri: str) -> Any:
    try:  # Airflow 3.0+
        from airflow.sdk import Asset
    except ImportError:
        from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]
    return Asset(uri)


def lineage_outputs(result: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """OpenLineage (namespace, name) of each file of a located result, as the spec names object
    storage (``s3://bucket`` and the key); the prefix alone when no file is known; none without storage."""
    if not result or not isinstance(result.get("storage"), Mapping):
        return []
    from airflow_provider_agora._storage.locations import StorageLocation

    location = StorageLocation.from_argument(dict(result["storage"]), sid=result.get("sid"))
    names = [
        location.openlineage_namespace_and_name(str(item["fileName"]))
        for item in result.get("files") or []
        if isinstance(item, Mapping) and item.get("fileName")
    ]
    if not names:
        names = [location.openlineage_namespace_and_name(None)]
    return list(dict.fromkeys(name for name in names if name is not None))


class AnnouncesRecording:
    """For the operators and the sensor: asset events on their outlets and OpenLineage outputs
    (``get_openlineage_facets_on_complete``, called by the openlineage provider when installed)."""

    outlets: Any
    _announced: Mapping[str, Any] | None = None

    def announce(self, context: Mapping[str, Any], result: Mapping[str, Any] | None) -> None:
        self._announced = result
        announce(context, self.outlets, result)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The recording's files (or its prefix) as output datasets; None without storage, so that
        the openlineage provider falls back to the task's declared outlets."""
        outputs = lineage_outputs(self._announced)
        if not outputs:
            return None
        try:
            from airflow.providers.openlineage.extractors import OperatorLineage
            from openlineage.client.event_v2 import Dataset
        except ImportError:  # the openlineage provider is not installed: nobody asks
            return None
        return OperatorLineage(outputs=[Dataset(namespace=namespace, name=name) for namespace, name in outputs])
