"""The sensor's storage parameters and their defaults, declared once; no imports, so the sensor's
module stays cheap to import (the storage code loads only when a wait uses it)."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_STORAGE_GRACE_PERIOD", "StorageArguments"]

#: How long files may take to land after Agora says the recording is done. Agora documents no delay
#: for files forwarded from its backup (event 32), only that the backup keeps them for 10 days.
DEFAULT_STORAGE_GRACE_PERIOD = 600.0


class StorageArguments:
    """Defaults of the sensor's storage parameters (checked by ``verification.storage_check``)."""

    storage: Any = None  # the start result's "storage", a storageConfig, or a URI such as s3://bucket/prefix
    verify_in_storage: bool = False
    storage_conn_id: str | None = None  # None: the reader's default connection (aws_default for s3)
    storage_grace_period: float = DEFAULT_STORAGE_GRACE_PERIOD
    templated: tuple[str, ...] = ("storage", "storage_conn_id", "storage_grace_period")
