"""A recording's files where they are: ``ObjectStoragePath``s for a downstream task.

The sensor's and the stop operator's results (with ``storage``) give each file its ``uri`` in the
scheme Airflow reads for that vendor (``s3://bucket/key`` for Amazon S3 and S3-compatible storage);
these helpers bind them to the connection that reads the bucket, so a ``@task`` reads a file in one
line::

    @task
    def transcode(result: dict) -> None:
        from airflow_provider_agora.storage import recording_paths

        for path in recording_paths(result, "recording_storage"):
            data = path.read_bytes()

The XCom stays JSON: paths are made in the task that uses them. Importing this module costs
nothing; Airflow's object storage is imported on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_agora._storage.playlists import Playlist, Segment, parse_playlist

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

__all__ = ["Playlist", "Segment", "parse_playlist", "read_playlist", "recording_paths"]


def _object_storage_path(uri: str, conn_id: str | None) -> ObjectStoragePath:
    try:  # Airflow 3.0+
        from airflow.sdk import ObjectStoragePath
    except ImportError:
        from airflow.io.path import ObjectStoragePath  # type: ignore[no-redef]
    return ObjectStoragePath(uri, conn_id=conn_id)


def recording_paths(
    result: Mapping[str, Any], storage_conn_id: str | None = None, *, suffix: str | None = None
) -> list[ObjectStoragePath]:
    """An ``ObjectStoragePath`` per file of a sensor or stop result that has a ``uri``, bound to
    ``storage_conn_id`` (None: the reader's default connection); only names ending in ``suffix``
    (such as ``".m3u8"``) when given. A result without ``storage`` has no URIs: pass ``storage=``
    to the sensor or the stop operator."""
    files = result.get("files") or []
    uris = [str(item["uri"]) for item in files if isinstance(item, Mapping) and item.get("uri")]
    if files and not uris:
        sid = result.get("sid")
        raise ValueError(
            f"The result of recording sid={sid} has no file URIs: give the sensor or the stop operator "
            f"storage= (the start operator's result['storage'] or a URI such as 's3://bucket/prefix')."
        )
    return [
        _object_storage_path(uri, storage_conn_id)
        for uri in uris
        if suffix is None or uri.lower().endswith(suffix.lower())
    ]


def read_playlist(path: ObjectStoragePath) -> Playlist:
    """Read and parse an HLS playlist from storage (segments, total duration, whether it is finished)."""
    return parse_playlist(path.read_text(encoding="utf-8"), where=str(path.key))
