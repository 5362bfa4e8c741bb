"""Where a recording's files are: Agora's ``storageConfig`` as object keys, URIs, links and lineage names.

Agora defines no URIs; it writes ``"/".join(fileNamePrefix) + "/" + fileName`` into the user's
bucket. Airflow reads a bucket through ``ObjectStoragePath`` only for the schemes its providers
register (``s3``, ``gs``, ``abfs``), so a vendor without one gets no ``uri``. URIs are built from
scheme, bucket and key, never from ``str(ObjectStoragePath)``, which puts a bound ``conn_id@`` back.

The secrets of a ``storageConfig`` (``accessKey``, ``secretKey``, ``stsToken``) are never read
into a ``StorageLocation``: there is no field to keep them, so no ``repr`` or result can show them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_agora.exceptions import AgoraConfigurationError

__all__ = [
    "AWS_REGIONS",
    "VENDORS",
    "StorageLocation",
    "Vendor",
    "aws_region_id",
    "with_uris",
]


@dataclass(frozen=True)
class Vendor:
    """One of Agora's ``storageConfig.vendor`` codes, and what in Airflow reads its buckets (if anything)."""

    code: int
    name: str
    #: The URI scheme ``ObjectStoragePath`` reads this vendor's buckets with; None where no provider registers one.
    scheme: str | None = None
    #: The Airflow connection type that reads it, and the provider package that brings that reader.
    conn_type: str | None = None
    provider: str | None = None
    #: A console link template (``{bucket}``, ``{region}``, ``{prefix}``), where the cloud has a sourced one.
    console_url: str | None = None
    #: False for the codes Agora has dropped from its API reference (they may still work).
    current: bool = True


_S3_CONSOLE = "https://console.aws.amazon.com/s3/buckets/{bucket}?region={region}&prefix={prefix}"
_GCS_CONSOLE = "https://console.cloud.google.com/storage/browser/{bucket}/{prefix}"
_AMAZON = "apache-airflow-providers-amazon[s3fs]"

#: Agora's vendor codes (9 and 10 are undocumented). Vendors 0, 2, 3, 4, 7 and 8 have no reader in
#: Airflow; their clouds offer S3-compatible endpoints, so reading them like vendor 11 (an ``aws``
#: connection whose ``endpoint_url`` is that endpoint) should work, but that is an inference, unchecked.
VENDORS: Mapping[int, Vendor] = MappingProxyType(
    {
        0: Vendor(0, "Qiniu Cloud Kodo", current=False),
        1: Vendor(1, "Amazon S3", "s3", "aws", _AMAZON, _S3_CONSOLE),
        2: Vendor(2, "Alibaba Cloud OSS"),
        3: Vendor(3, "Tencent Cloud COS"),
        4: Vendor(4, "Kingsoft Cloud KS3", current=False),
        5: Vendor(
            5, "Microsoft Azure Blob Storage", "abfs", "azure_data_lake", "apache-airflow-providers-microsoft-azure"
        ),
        6: Vendor(
            6, "Google Cloud Storage", "gs", "google_cloud_platform", "apache-airflow-providers-google", _GCS_CONSOLE
        ),
        7: Vendor(7, "Huawei Cloud OBS"),
        8: Vendor(8, "Baidu AI Cloud BOS"),
        11: Vendor(11, "S3-compatible storage", "s3", "aws", _AMAZON),
    }
)

#: Agora's Amazon S3 ``region`` codes. 17 and 23 (GovCloud) are only in older docs; 26 was a count, not a region.
AWS_REGIONS: Mapping[int, str] = MappingProxyType(
    {
        0: "US_EAST_1",
        1: "US_EAST_2",
        2: "US_WEST_1",
        3: "US_WEST_2",
        4: "EU_WEST_1",
        5: "EU_WEST_2",
        6: "EU_WEST_3",
        7: "EU_CENTRAL_1",
        8: "AP_SOUTHEAST_1",
        9: "AP_SOUTHEAST_2",
        10: "AP_NORTHEAST_1",
        11: "AP_NORTHEAST_2",
        12: "SA_EAST_1",
        13: "CA_CENTRAL_1",
        14: "AP_SOUTH_1",
        15: "CN_NORTH_1",
        16: "CN_NORTHWEST_1",
        17: "US_GOV_WEST_1",
        18: "AF_SOUTH_1",
        19: "AP_EAST_1",
        20: "AP_NORTHEAST_3",
        21: "EU_NORTH_1",
        22: "ME_SOUTH_1",
        23: "US_GOV_EAST_1",
        24: "AP_SOUTHEAST_3",
        25: "EU_SOUTH_1",
    }
)

# The Amazon provider's console host per partition (``links/base_aws.py`` ``get_aws_domain``).
_AWS_CONSOLE_HOSTS = {"cn-": "console.amazonaws.cn", "us-gov-": "console.amazonaws-us-gov.com"}

# The URI schemes ``from_argument`` accepts, and the vendor each one means.
_SCHEME_VENDORS = {"s3": 1, "gs": 6, "abfs": 5}

# Keys that only the dict ``to_dict()`` produces, never Agora's camelCase ``storageConfig``.
_TO_DICT_KEYS = frozenset({"file_name_prefix", "vendor_name", "prefix", "endpoint", "uri"})

_ACCEPTED = (
    "Agora's storageConfig, the dict StorageLocation.to_dict() gives, "
    "or a URI s3://bucket/prefix, gs://bucket/prefix or abfs://container/prefix"
)


def aws_region_id(code: int) -> str | None:
    """The AWS region id (``us-east-1``) of Agora's Amazon S3 region code, or None if Agora lists no such code."""
    name = AWS_REGIONS.get(code)
    return name.lower().replace("_", "-") if name else None


def _of(sid: str | None) -> str:
    return f" of recording sid={sid}" if sid else ""


def _fail(message: str) -> AgoraConfigurationError:
    return AgoraConfigurationError(message)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_codes(vendor: Any, region: Any, *, sid: str | None, names: Mapping[str, str]) -> tuple[int, int]:
    if not _is_integer(vendor) or vendor not in VENDORS:
        codes = ", ".join(str(code) for code in VENDORS)
        raise _fail(
            f"The {names['vendor']}{_of(sid)} must be one of Agora's vendor codes ({codes}), "
            f"got {vendor!r}; set it to the code of the cloud the bucket is in."
        )
    if not _is_integer(region) or region < 0:
        raise _fail(
            f"The {names['region']}{_of(sid)} must be Agora's region code, a non-negative integer, "
            f"got {region!r}; set it to the bucket's region code (0 where the vendor has none)."
        )
    return vendor, region


def _checked_prefix(prefix: Any, *, sid: str | None, names: Mapping[str, str]) -> tuple[str, ...]:
    if prefix is None:
        return ()
    if isinstance(prefix, str) or not isinstance(prefix, Sequence):
        raise _fail(
            f"The {names['prefix']}{_of(sid)} must be a list of folder names, got {type(prefix).__name__}; "
            f'write it as Agora does, e.g. ["directory1", "directory2"].'
        )
    for part in prefix:
        if not isinstance(part, str) or not part or "/" in part:
            raise _fail(
                f"Each entry of the {names['prefix']}{_of(sid)} must be one non-empty folder name "
                f"without '/', got {part!r}; split the path into its folder names."
            )
    return tuple(prefix)


def _checked_endpoint(endpoint: Any, vendor: int, *, sid: str | None, names: Mapping[str, str]) -> str | None:
    if endpoint is None:
        return None
    if vendor != 11:
        raise _fail(
            f"The {names['endpoint']}{_of(sid)} is only used with vendor 11 (S3-compatible storage), "
            f"but the vendor is {vendor}; drop the endpoint or set vendor 11."
        )
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise _fail(
            f"The {names['endpoint']}{_of(sid)} must be the S3-compatible endpoint's host name, "
            f"got {endpoint!r}; set it to the domain Agora uploads to."
        )
    return endpoint


def _checked(
    vendor: Any, region: Any, bucket: Any, prefix: Any, endpoint: Any, *, sid: str | None, names: Mapping[str, str]
) -> tuple[int, int, str, tuple[str, ...], str | None]:
    """Validate the parts of a location; ``names`` spells each field as the caller's input does, for the message."""
    vendor, region = _checked_codes(vendor, region, sid=sid, names=names)
    if not isinstance(bucket, str) or not bucket.strip() or "/" in bucket:
        raise _fail(
            f"The {names['bucket']}{_of(sid)} must be a bucket name (a non-empty string without '/'), "
            f"got {bucket!r}; set it to the bucket the recording writes to."
        )
    return (
        vendor,
        region,
        bucket,
        _checked_prefix(prefix, sid=sid, names=names),
        _checked_endpoint(endpoint, vendor, sid=sid, names=names),
    )


_FIELD_NAMES = MappingProxyType(
    {
        "vendor": "storage vendor",
        "region": "storage region",
        "bucket": "storage bucket",
        "prefix": "storage file_name_prefix",
        "endpoint": "storage endpoint",
    }
)
_CONFIG_NAMES = MappingProxyType(
    {
        "vendor": "storageConfig.vendor",
        "region": "storageConfig.region",
        "bucket": "storageConfig.bucket",
        "prefix": "storageConfig.fileNamePrefix",
        "endpoint": "storageConfig.extensionParams.endpoint",
    }
)


@dataclass(frozen=True)
class StorageLocation:
    """The bucket and folder a recording's files are written to; never holds the storage credentials."""

    vendor: int
    region: int
    bucket: str
    file_name_prefix: tuple[str, ...] = ()
    #: Vendor 11's ``extensionParams.endpoint`` (a bare host in Agora's docs); None for every other vendor.
    endpoint: str | None = None

    def __post_init__(self) -> None:
        """Refuse a location built by hand with parts Agora would not accept."""
        _checked(
            self.vendor,
            self.region,
            self.bucket,
            self.file_name_prefix,
            self.endpoint,
            sid=None,
            names=_FIELD_NAMES,
        )

    # --- building one -----------------------------------------------------------------------------

    @classmethod
    def from_storage_config(cls, config: Mapping[str, Any], *, sid: str | None = None) -> StorageLocation:
        """Read Agora's ``storageConfig`` dict, ignoring (and never keeping) the keys and tokens in it."""
        if not isinstance(config, Mapping):
            raise _fail(
                f"The storageConfig{_of(sid)} must be a dict as sent to Agora, got {type(config).__name__}; "
                "pass the recording's storageConfig."
            )
        vendor = config.get("vendor")
        extension = config.get("extensionParams")
        endpoint = extension.get("endpoint") if isinstance(extension, Mapping) and vendor == 11 else None
        checked = _checked(
            vendor,
            config.get("region", 0),
            config.get("bucket"),
            config.get("fileNamePrefix"),
            endpoint,
            sid=sid,
            names=_CONFIG_NAMES,
        )
        return cls(*checked)

    @classmethod
    def from_argument(cls, value: Mapping[str, Any] | str, *, sid: str | None = None) -> StorageLocation:
        """Read a task argument: a ``storageConfig``-like dict, a ``to_dict()`` dict, or a bucket/prefix URI."""
        if isinstance(value, str):
            return cls._from_uri(value, sid=sid)
        if not isinstance(value, Mapping):
            raise _fail(f"The storage location{_of(sid)} must be {_ACCEPTED}, got {type(value).__name__}.")
        if "fileNamePrefix" in value or "extensionParams" in value or not _TO_DICT_KEYS.intersection(value):
            return cls.from_storage_config(value, sid=sid)
        prefix = value.get("file_name_prefix")
        joined = value.get("prefix")
        if isinstance(joined, str):
            parts = tuple(part for part in joined.split("/") if part)
            if prefix is None:
                prefix = parts
            elif isinstance(prefix, Sequence) and not isinstance(prefix, str) and tuple(prefix) != parts:
                raise _fail(
                    f"The storage location{_of(sid)} gives file_name_prefix {list(prefix)!r} and prefix {joined!r}, "
                    "which disagree; give only one of them."
                )
        checked = _checked(
            value.get("vendor"),
            value.get("region", 0),
            value.get("bucket"),
            prefix,
            value.get("endpoint"),
            sid=sid,
            names=_FIELD_NAMES,
        )
        return cls(*checked)

    @classmethod
    def _from_uri(cls, text: str, *, sid: str | None) -> StorageLocation:
        """``s3://bucket/a/b`` → vendor 1, bucket, prefix ("a", "b"); a URI carries no region, so it is 0."""
        parts = urlsplit(text.strip())
        scheme = parts.scheme.lower()
        if "://" not in text or scheme not in _SCHEME_VENDORS:
            shown = f"scheme {scheme!r}" if "://" in text else "no scheme"
            raise _fail(f"The storage location{_of(sid)} has {shown}; give {_ACCEPTED}.")
        if "@" in parts.netloc:  # never echo it: the part before '@' may be a credential
            raise _fail(
                f"The storage URI{_of(sid)} names a user, account or connection before '@'; give only "
                f"{scheme}://bucket/prefix and set the connection separately."
            )
        if parts.query or parts.fragment:
            raise _fail(f"The storage URI{_of(sid)} has a query or fragment; give only {scheme}://bucket/prefix.")
        if not parts.netloc:
            raise _fail(f"The storage URI{_of(sid)} names no bucket; give {scheme}://bucket/prefix.")
        prefix = tuple(part for part in parts.path.split("/") if part)
        return cls(*_checked(_SCHEME_VENDORS[scheme], 0, parts.netloc, prefix, None, sid=sid, names=_FIELD_NAMES))

    # --- what it says -----------------------------------------------------------------------------

    @property
    def vendor_info(self) -> Vendor:
        """This location's row of the vendor table."""
        return VENDORS[self.vendor]

    @property
    def vendor_name(self) -> str:
        """The cloud's name, for messages (``"Amazon S3"``)."""
        return self.vendor_info.name

    @property
    def scheme(self) -> str | None:
        """The ``ObjectStoragePath`` scheme that reads this bucket, or None where Airflow has no reader."""
        return self.vendor_info.scheme

    @property
    def prefix(self) -> str:
        """The folder part of every key, with its trailing ``/`` (``""`` without ``fileNamePrefix``)."""
        return "/".join(self.file_name_prefix) + "/" if self.file_name_prefix else ""

    @property
    def aws_region(self) -> str | None:
        """The AWS region id of an Amazon S3 (vendor 1) bucket, or None."""
        return aws_region_id(self.region) if self.vendor == 1 else None

    def key_of(self, file_name: str) -> str:
        """The object key of a file Agora names, whether or not Agora already put the prefix in front."""
        if not isinstance(file_name, str) or not file_name.strip("/"):
            raise _fail(f"A recording file name must be a non-empty string, got {file_name!r}.")
        name = file_name.lstrip("/")
        if not self.prefix or name.startswith(self.prefix):
            return name
        return self.prefix + name

    def uri_of(self, file_name: str) -> str | None:
        """The URI ``ObjectStoragePath`` reads the file with, or None where Airflow has no reader."""
        key = self.key_of(file_name)
        return f"{self.scheme}://{self.bucket}/{key}" if self.scheme else None

    @property
    def prefix_uri(self) -> str | None:
        """The URI of the recording's folder (``s3://bucket/a/b/``), or None where Airflow has no reader."""
        return f"{self.scheme}://{self.bucket}/{self.prefix}" if self.scheme else None

    def console_url(self) -> str | None:
        """A link to the folder in the cloud's console, where the cloud has one and the region is known."""
        template = self.vendor_info.console_url
        if template is None:
            return None
        region = ""
        if self.vendor == 1:
            region = self.aws_region or ""
            if not region:
                return None
            host = next((h for start, h in _AWS_CONSOLE_HOSTS.items() if region.startswith(start)), None)
            if host:
                template = template.replace("console.aws.amazon.com", host)
        if not self.prefix:  # the bucket's root: no empty prefix parameter or trailing slash
            template = template.replace("&prefix={prefix}", "").replace("/{prefix}", "")
        return template.format(bucket=quote(self.bucket, safe=""), region=region, prefix=quote(self.prefix, safe="/"))

    def openlineage_namespace_and_name(
        self, file_name: str | None = None, *, account: str | None = None
    ) -> tuple[str, str] | None:
        """The OpenLineage dataset naming of a file (or, without one, of the folder), per the naming spec.

        S3 and GCS: ``("s3://bucket", key)``. Azure needs the storage account, which only the Azure
        connection knows: ``("abfss://container@account.dfs.core.windows.net", key)`` when ``account``
        is given, None otherwise. None where Airflow has no reader.
        """
        if self.scheme is None:
            return None
        name = self.key_of(file_name) if file_name is not None else (self.prefix.rstrip("/") or "/")
        if self.scheme == "abfs":
            if not account:
                return None
            return f"abfss://{self.bucket}@{account}.dfs.core.windows.net", name
        return f"{self.scheme}://{self.bucket}", name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary for XCom and asset extras; ``from_argument`` reads it back. No secrets."""
        result: dict[str, Any] = {
            "vendor": self.vendor,
            "vendor_name": self.vendor_name,
            "region": self.region,
            "bucket": self.bucket,
            "file_name_prefix": list(self.file_name_prefix),
            "prefix": self.prefix,
        }
        if self.endpoint is not None:
            result["endpoint"] = self.endpoint
        if self.prefix_uri is not None:
            result["uri"] = self.prefix_uri
        return result


def with_uris(files: list[dict[str, Any]], location: StorageLocation) -> list[dict[str, Any]]:
    """Copies of Agora's file dicts, each with its object ``key`` and, where Airflow can read it, its ``uri``.

    Every other key stays as Agora sent it; a dict without a file name is copied unchanged.
    """
    result = []
    for index, item in enumerate(files):
        if not isinstance(item, Mapping):
            raise _fail(f"Recording file {index} must be a dict as Agora sends it, got {type(item).__name__}.")
        copy = dict(item)
        name = item.get("fileName", item.get("filename"))
        if isinstance(name, str) and name.strip("/"):
            copy["key"] = location.key_of(name)
            uri = location.uri_of(name)
            if uri is not None:
                copy["uri"] = uri
        result.append(copy)
    return result
