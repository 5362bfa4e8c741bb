"""``AgoraRecordingStorageLink``: the task's button to the recording's files in the vendor's console.

The start operator, the sensor and the stop operator push their result's ``storage`` as an XCom of
its own; the link turns it into the console URL of the bucket prefix, where the vendor has one
(Amazon S3, Google Cloud Storage; none for Azure or an S3-compatible endpoint, so no button there).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_agora._compat import BaseOperatorLink, xcom_value

__all__ = ["AgoraRecordingStorageLink"]


class AgoraRecordingStorageLink(BaseOperatorLink):
    """The recording's folder in the storage vendor's console."""

    name = "Recording files"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow_provider_agora._storage.locations import StorageLocation
        from airflow_provider_agora.exceptions import AgoraConfigurationError

        storage = xcom_value(ti_key, "storage")
        if not isinstance(storage, dict):
            return ""
        try:
            return StorageLocation.from_argument(storage).console_url() or ""
        except AgoraConfigurationError:
            return ""
