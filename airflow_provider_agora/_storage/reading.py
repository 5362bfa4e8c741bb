"""Reading the user's bucket for a verification: the only I/O of ``_storage``, on the worker.

One listing of the recording's prefix per check (the filesystem pages it: one request per 1,000
keys for S3, not one per segment), then the playlists ``verification.playlists_to_read`` names.
The filesystem is Airflow's own for the scheme (``ObjectStoragePath``'s ``attach``), bound to
``storage_conn_id`` (an ``aws`` connection with ``endpoint_url`` for S3-compatible storage), so
credentials come from Airflow's connection and never pass through this provider.

Runs on the worker in every mode: in deferrable mode the sensor checks storage after its trigger
fires and, while files are missing, defers on a timer between checks (the README says why).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from typing import Any

from airflow_provider_agora._storage.verification import (
    StorageCheck,
    StorageListing,
    StorageTrouble,
    Trouble,
    playlists_to_read,
)
from airflow_provider_agora.results import RecordingFile

__all__ = ["read_listing"]

MAX_PLAYLIST_BYTES = 16 * 1024 * 1024  # a 24-hour recording's playlist is well under 1 MiB
_PERMISSION_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "403"}
_NOT_FOUND_CODES = {"NoSuchBucket", "404"}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "500", "503"}
_TRANSIENT_NAMES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}


def _filesystem(check: StorageCheck) -> Any:
    from airflow_provider_agora._compat import attach_filesystem

    return attach_filesystem(str(check.location.scheme), check.storage_conn_id)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < 12:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _error_code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return None if code is None else str(code)
    return None


def classify(error: BaseException, check: StorageCheck, sid: str) -> StorageTrouble | None:
    """What a storage error means for the wait; None for an error that is no storage error (a bug: raised)."""
    connection = repr(check.storage_conn_id) if check.storage_conn_id else "the default credentials"
    bucket = check.location.bucket
    for cause in _causes(error):
        code = _error_code(cause)
        if isinstance(cause, PermissionError) or code in _PERMISSION_CODES:
            return StorageTrouble(
                Trouble.PERMISSION,
                f"Storage connection {connection} may not list or read bucket {bucket!r} for recording sid={sid}: "
                f"grant it list access to the bucket and read access to the recording's prefix "
                f"(s3:ListBucket, s3:GetObject), or fix its keys.",
            )
        if code in _NOT_FOUND_CODES or isinstance(cause, FileNotFoundError):
            return StorageTrouble(
                Trouble.NOT_FOUND,
                f"Bucket {bucket!r} of recording sid={sid} does not exist where storage connection {connection} "
                f"looks (its endpoint_url): check the recording's storage and the connection.",
            )
        if isinstance(cause, socket.gaierror):
            return StorageTrouble(
                Trouble.NOT_FOUND,
                f"The storage endpoint of connection {connection} cannot be resolved for recording sid={sid}: "
                f"check its endpoint_url.",
            )
    for cause in _causes(error):
        if (
            _error_code(cause) in _TRANSIENT_CODES
            or type(cause).__name__ in _TRANSIENT_NAMES
            or isinstance(cause, (OSError, TimeoutError))
        ):
            return StorageTrouble(
                Trouble.TRANSIENT,
                f"storage did not answer through connection {connection} ({type(cause).__name__}); asking again",
            )
    return None


def _read_text(filesystem: Any, path: str) -> str:
    content = filesystem.cat_file(path, start=0, end=MAX_PLAYLIST_BYTES + 1)
    if len(content) > MAX_PLAYLIST_BYTES:
        content = content[:MAX_PLAYLIST_BYTES]  # parse_playlist then reports the cut-off playlist as unfinished
    return bytes(content).decode("utf-8", errors="replace")


def read_listing(check: StorageCheck, files: Sequence[RecordingFile], sid: str) -> StorageListing | StorageTrouble:
    """Every key under the recording's prefix with its size, and the playlists' texts; or what went wrong."""
    location = check.location
    root = f"{location.bucket}/{location.to_dict()['prefix']}".rstrip("/")
    try:
        filesystem = _filesystem(check)
        filesystem.invalidate_cache()  # fsspec caches listings: a check must see what is there now
        found = filesystem.find(root, detail=True)
        strip = len(location.bucket) + 1
        sizes = {str(path)[strip:]: int((info or {}).get("size") or 0) for path, info in found.items()}
        if not sizes and not filesystem.exists(location.bucket):  # one request more, only while nothing is there
            raise FileNotFoundError(location.bucket)
        listing = StorageListing(sizes)
        while to_read := playlists_to_read(location, files, listing):
            texts = dict(listing.texts)
            for key in to_read:
                texts[key] = _read_text(filesystem, f"{location.bucket}/{key}")
            listing = StorageListing(sizes, texts)
    except Exception as error:
        trouble = classify(error, check, sid)
        if trouble is None:
            raise
        return trouble
    return listing
