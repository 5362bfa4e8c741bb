"""Where a recording's files are: vendor codes to object keys, URIs, console links and OpenLineage names."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from airflow_provider_agora._storage.locations import (
    AWS_REGIONS,
    VENDORS,
    StorageLocation,
    aws_region_id,
    with_uris,
)
from airflow_provider_agora.exceptions import AgoraConfigurationError

SID = "2967baa4c74980d1280bb185ae526094"
NAME = f"{SID}_room1__uid_s_259__uid_e_audio.m3u8"
SECRETS = {"accessKey": "AKIA-unit-access-Qx7", "secretKey": "unit-secret-Zr9w", "stsToken": "unit-sts-Lm3k"}

# Every vendor code Agora has documented, and the scheme Airflow reads it with (None: no reader).
SCHEMES = {0: None, 1: "s3", 2: None, 3: None, 4: None, 5: "abfs", 6: "gs", 7: None, 8: None, 11: "s3"}


def config(vendor: int = 1, **overrides: Any) -> dict[str, Any]:
    """A storageConfig as a DAG would send it to Agora, secrets included."""
    return {
        "vendor": vendor,
        "region": 0,
        "bucket": "recordings",
        "fileNamePrefix": ["agora", "room1"],
        **SECRETS,
        "stsExpiration": 1_800_000_000,
        **overrides,
    }


def located(vendor: int, prefix: tuple[str, ...] = ("agora", "room1"), **kwargs: Any) -> StorageLocation:
    return StorageLocation(vendor=vendor, region=0, bucket="recordings", file_name_prefix=prefix, **kwargs)


def refusal(call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the AgoraConfigurationError the call raises, checked to be one sentence."""
    with pytest.raises(AgoraConfigurationError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert message.endswith("."), message
    assert not re.search(r"[.;]\s+[A-Z]", message), f"more than one sentence: {message}"
    return message


def test_the_table_covers_every_documented_vendor_code() -> None:
    assert sorted(VENDORS) == sorted(SCHEMES)
    assert {code: vendor.scheme for code, vendor in VENDORS.items()} == SCHEMES


@pytest.mark.parametrize(
    ("vendor", "conn_type"), [(1, "aws"), (11, "aws"), (6, "google_cloud_platform"), (5, "azure_data_lake")]
)
def test_vendors_with_a_reader_name_the_connection_type_that_reads_them(vendor: int, conn_type: str) -> None:
    assert VENDORS[vendor].conn_type == conn_type
    assert VENDORS[vendor].provider


@pytest.mark.parametrize("vendor", sorted(SCHEMES))
def test_file_uri_for_every_vendor_with_a_prefix(vendor: int) -> None:
    location = located(vendor, endpoint="s3.example.com" if vendor == 11 else None)
    assert location.key_of(NAME) == f"agora/room1/{NAME}"
    scheme = SCHEMES[vendor]
    assert location.scheme == scheme
    assert location.uri_of(NAME) == (f"{scheme}://recordings/agora/room1/{NAME}" if scheme else None)
    assert location.prefix_uri == (f"{scheme}://recordings/agora/room1/" if scheme else None)


@pytest.mark.parametrize("vendor", sorted(SCHEMES))
def test_file_uri_for_every_vendor_without_a_prefix(vendor: int) -> None:
    location = located(vendor, prefix=())
    scheme = SCHEMES[vendor]
    assert location.key_of(NAME) == NAME
    assert location.uri_of(NAME) == (f"{scheme}://recordings/{NAME}" if scheme else None)
    assert location.prefix_uri == (f"{scheme}://recordings/" if scheme else None)


@pytest.mark.parametrize("vendor", sorted(SCHEMES))
def test_a_name_that_already_carries_the_prefix_is_not_prefixed_twice(vendor: int) -> None:
    location = located(vendor)
    scheme = SCHEMES[vendor]
    assert location.key_of(f"agora/room1/{NAME}") == f"agora/room1/{NAME}"
    assert location.uri_of(f"agora/room1/{NAME}") == (f"{scheme}://recordings/agora/room1/{NAME}" if scheme else None)


def test_a_name_that_only_starts_like_the_prefix_still_gets_it() -> None:
    assert located(1).key_of("agora/room10.m3u8") == "agora/room1/agora/room10.m3u8"


def test_vendor_11_reads_as_s3_and_keeps_its_endpoint() -> None:
    location = StorageLocation.from_storage_config(
        config(11, extensionParams={"endpoint": "storage.example.com", "sse": "kms"}), sid=SID
    )
    assert location.endpoint == "storage.example.com"
    assert location.uri_of(NAME) == f"s3://recordings/agora/room1/{NAME}"
    assert location.to_dict()["endpoint"] == "storage.example.com"


def test_an_endpoint_given_for_another_vendor_is_ignored_as_agora_does() -> None:
    location = StorageLocation.from_storage_config(config(1, extensionParams={"endpoint": "x.example.com"}))
    assert location.endpoint is None
    assert "endpoint" not in location.to_dict()


def test_a_storage_config_without_a_prefix_or_region() -> None:
    location = StorageLocation.from_storage_config({"vendor": 6, "bucket": "recordings"})
    assert (location.region, location.file_name_prefix) == (0, ())


# --- from_argument: the accepted forms ---------------------------------------------------------


def test_from_argument_reads_a_storage_config() -> None:
    assert StorageLocation.from_argument(config(2, region=3)) == StorageLocation(2, 3, "recordings", ("agora", "room1"))


@pytest.mark.parametrize("vendor", sorted(SCHEMES))
def test_from_argument_reads_back_what_to_dict_gives(vendor: int) -> None:
    location = located(vendor, endpoint="s3.example.com" if vendor == 11 else None)
    assert StorageLocation.from_argument(location.to_dict()) == location
    assert StorageLocation.from_argument(json.loads(json.dumps(location.to_dict()))) == location


def test_from_argument_reads_a_to_dict_style_dict_with_only_the_joined_prefix() -> None:
    location = StorageLocation.from_argument({"vendor": 1, "region": 0, "bucket": "recordings", "prefix": "a/b/"})
    assert location.file_name_prefix == ("a", "b")


@pytest.mark.parametrize(
    ("uri", "vendor", "bucket", "prefix"),
    [
        ("s3://recordings", 1, "recordings", ()),
        ("s3://recordings/", 1, "recordings", ()),
        ("s3://recordings/agora/room1/more", 1, "recordings", ("agora", "room1", "more")),
        ("gs://recordings/agora/", 6, "recordings", ("agora",)),
        ("abfs://container/agora/room1", 5, "container", ("agora", "room1")),
        ("  S3://recordings/agora  ", 1, "recordings", ("agora",)),
    ],
)
def test_from_argument_reads_a_uri(uri: str, vendor: int, bucket: str, prefix: tuple[str, ...]) -> None:
    assert StorageLocation.from_argument(uri) == StorageLocation(vendor, 0, bucket, prefix)


# --- from_argument and from_storage_config: bad input, one outcome each -----------------------


def test_an_unknown_vendor_code_is_refused_naming_the_recording() -> None:
    message = refusal(StorageLocation.from_storage_config, config(9), sid=SID)
    assert f"storageConfig.vendor of recording sid={SID}" in message
    assert "got 9" in message


def test_a_vendor_given_as_text_is_refused() -> None:
    assert "got '1'" in refusal(StorageLocation.from_storage_config, config("1"))  # type: ignore[arg-type]


def test_a_vendor_given_as_a_bool_is_refused() -> None:
    assert "got True" in refusal(StorageLocation.from_argument, config(True))


def test_a_missing_bucket_is_refused() -> None:
    cfg = config()
    del cfg["bucket"]
    assert "storageConfig.bucket" in refusal(StorageLocation.from_argument, cfg, sid=SID)


def test_an_empty_bucket_is_refused() -> None:
    assert "got ''" in refusal(StorageLocation.from_storage_config, config(bucket=""))


def test_a_negative_region_is_refused() -> None:
    assert "storageConfig.region" in refusal(StorageLocation.from_storage_config, config(region=-1))


def test_a_prefix_given_as_one_string_is_refused() -> None:
    message = refusal(StorageLocation.from_storage_config, config(fileNamePrefix="agora/room1"), sid=SID)
    assert f"storageConfig.fileNamePrefix of recording sid={SID} must be a list" in message


def test_a_prefix_entry_that_is_not_a_string_is_refused() -> None:
    assert "got 7" in refusal(StorageLocation.from_storage_config, config(fileNamePrefix=["agora", 7]))


def test_a_prefix_entry_with_a_slash_is_refused() -> None:
    assert "without '/'" in refusal(StorageLocation.from_storage_config, config(fileNamePrefix=["a/b"]))


def test_an_empty_vendor_11_endpoint_is_refused() -> None:
    message = refusal(StorageLocation.from_storage_config, config(11, extensionParams={"endpoint": ""}))
    assert "storageConfig.extensionParams.endpoint" in message


def test_an_endpoint_for_a_vendor_other_than_11_is_refused_in_a_to_dict_dict() -> None:
    value = {**located(1).to_dict(), "endpoint": "x.example.com"}
    assert "only used with vendor 11" in refusal(StorageLocation.from_argument, value)


def test_a_to_dict_dict_whose_two_prefixes_disagree_is_refused() -> None:
    value = {**located(1).to_dict(), "prefix": "other/"}
    assert "disagree" in refusal(StorageLocation.from_argument, value, sid=SID)


def test_an_unsupported_uri_scheme_is_refused() -> None:
    message = refusal(StorageLocation.from_argument, "oss://recordings/agora", sid=SID)
    assert f"sid={SID} has scheme 'oss'" in message


def test_a_bare_path_is_refused() -> None:
    assert "has no scheme" in refusal(StorageLocation.from_argument, "recordings/agora")


def test_a_uri_with_credentials_is_refused_without_showing_them() -> None:
    message = refusal(StorageLocation.from_argument, f"s3://{SECRETS['accessKey']}:{SECRETS['secretKey']}@b/x")
    assert "before '@'" in message
    assert SECRETS["accessKey"] not in message
    assert SECRETS["secretKey"] not in message


def test_a_uri_without_a_bucket_is_refused() -> None:
    assert "names no bucket" in refusal(StorageLocation.from_argument, "s3:///agora")


def test_a_uri_with_a_query_is_refused() -> None:
    assert "query" in refusal(StorageLocation.from_argument, "s3://recordings/agora?region=eu-west-1")


def test_an_argument_that_is_neither_text_nor_a_dict_is_refused() -> None:
    assert "got int" in refusal(StorageLocation.from_argument, 42, sid=SID)


def test_an_empty_file_name_is_refused() -> None:
    assert "non-empty string" in refusal(located(1).key_of, "")


# --- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", sorted(SCHEMES))
def test_secrets_are_never_kept_returned_or_shown(vendor: int) -> None:
    location = StorageLocation.from_argument(config(vendor, extensionParams={"endpoint": "e.example.com"}), sid=SID)
    shown = json.dumps(location.to_dict()) + repr(location) + str(location)
    shown += json.dumps(with_uris([{"fileName": NAME}], location))
    for key, secret in SECRETS.items():
        assert key not in shown
        assert secret not in shown
    assert {field.name for field in dataclasses.fields(location)} == {
        "vendor",
        "region",
        "bucket",
        "file_name_prefix",
        "endpoint",
    }


def test_to_dict_is_json_safe_and_complete() -> None:
    assert located(1).to_dict() == {
        "vendor": 1,
        "vendor_name": "Amazon S3",
        "region": 0,
        "bucket": "recordings",
        "file_name_prefix": ["agora", "room1"],
        "prefix": "agora/room1/",
        "uri": "s3://recordings/agora/room1/",
    }


def test_to_dict_leaves_uri_out_where_airflow_has_no_reader() -> None:
    assert located(3, prefix=()).to_dict() == {
        "vendor": 3,
        "vendor_name": "Tencent Cloud COS",
        "region": 0,
        "bucket": "recordings",
        "file_name_prefix": [],
        "prefix": "",
    }


def test_a_location_is_immutable() -> None:
    location = located(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        location.bucket = "other"  # type: ignore[misc]


# --- regions and console links -------------------------------------------------------------------


def test_every_amazon_region_code_maps_to_an_aws_region_id() -> None:
    ids = {code: aws_region_id(code) for code in AWS_REGIONS}
    assert ids[0] == "us-east-1"
    assert ids[7] == "eu-central-1"
    assert ids[16] == "cn-northwest-1"
    assert ids[25] == "eu-south-1"
    assert all(re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", value or "") for value in ids.values()), ids
    assert aws_region_id(26) is None


def test_s3_console_link_of_the_prefix() -> None:
    location = StorageLocation(1, 7, "recordings", ("agora", "room1"))
    assert (
        location.console_url()
        == "https://console.aws.amazon.com/s3/buckets/recordings?region=eu-central-1&prefix=agora/room1/"
    )


def test_s3_console_link_of_a_bucket_without_prefix() -> None:
    location = StorageLocation(1, 0, "recordings")
    assert location.console_url() == "https://console.aws.amazon.com/s3/buckets/recordings?region=us-east-1"


def test_s3_console_link_in_the_china_partition() -> None:
    location = StorageLocation(1, 15, "recordings", ("agora",))
    assert (
        location.console_url() == "https://console.amazonaws.cn/s3/buckets/recordings?region=cn-north-1&prefix=agora/"
    )


def test_no_s3_console_link_for_a_region_code_agora_does_not_list() -> None:
    assert StorageLocation(1, 99, "recordings").console_url() is None


def test_gcs_console_link() -> None:
    assert located(6).console_url() == "https://console.cloud.google.com/storage/browser/recordings/agora/room1/"
    assert located(6, prefix=()).console_url() == "https://console.cloud.google.com/storage/browser/recordings"


@pytest.mark.parametrize("vendor", [0, 2, 3, 4, 5, 7, 8, 11])
def test_no_console_link_where_none_is_sourced(vendor: int) -> None:
    assert located(vendor).console_url() is None


# --- OpenLineage ---------------------------------------------------------------------------------


def test_openlineage_name_of_an_s3_file_and_folder() -> None:
    location = located(1)
    assert location.openlineage_namespace_and_name(NAME) == ("s3://recordings", f"agora/room1/{NAME}")
    assert location.openlineage_namespace_and_name(None) == ("s3://recordings", "agora/room1")
    assert located(1, prefix=()).openlineage_namespace_and_name(None) == ("s3://recordings", "/")


def test_openlineage_name_of_a_vendor_11_file() -> None:
    location = located(11, endpoint="s3.example.com")
    assert location.openlineage_namespace_and_name(NAME) == ("s3://recordings", f"agora/room1/{NAME}")


def test_openlineage_name_of_a_gcs_file() -> None:
    assert located(6).openlineage_namespace_and_name(NAME) == ("gs://recordings", f"agora/room1/{NAME}")


def test_openlineage_name_of_an_azure_file_needs_the_account() -> None:
    location = located(5)
    assert location.openlineage_namespace_and_name(NAME) is None
    assert location.openlineage_namespace_and_name(NAME, account="acct") == (
        "abfss://recordings@acct.dfs.core.windows.net",
        f"agora/room1/{NAME}",
    )


@pytest.mark.parametrize("vendor", [0, 2, 3, 4, 7, 8])
def test_no_openlineage_name_without_a_reader(vendor: int) -> None:
    assert located(vendor).openlineage_namespace_and_name(NAME) is None


# --- with_uris ---------------------------------------------------------------------------------


def test_with_uris_adds_key_and_uri_and_keeps_everything_else() -> None:
    files = [
        {"fileName": NAME, "trackType": "audio", "uid": "259", "mixedAllUser": False, "isPlayable": True},
        {"fileName": f"agora/room1/{SID}_room1_0.mp4", "sliceStartTime": 1725958883736},
    ]
    result = with_uris(files, located(1))
    assert result == [
        {**files[0], "key": f"agora/room1/{NAME}", "uri": f"s3://recordings/agora/room1/{NAME}"},
        {**files[1], "key": f"agora/room1/{SID}_room1_0.mp4", "uri": f"s3://recordings/agora/room1/{SID}_room1_0.mp4"},
    ]
    assert "key" not in files[0]  # copies: the caller's dicts are untouched


def test_with_uris_gives_only_the_key_where_airflow_has_no_reader() -> None:
    assert with_uris([{"fileName": NAME}], located(2)) == [{"fileName": NAME, "key": f"agora/room1/{NAME}"}]


def test_with_uris_reads_web_recordings_lower_case_filename() -> None:
    result = with_uris([{"filename": "test_p1627613634_www.m3u8"}], located(6, prefix=()))
    assert result == [
        {
            "filename": "test_p1627613634_www.m3u8",
            "key": "test_p1627613634_www.m3u8",
            "uri": "gs://recordings/test_p1627613634_www.m3u8",
        }
    ]


def test_with_uris_copies_a_file_without_a_name_unchanged() -> None:
    assert with_uris([{"trackType": "audio"}], located(1)) == [{"trackType": "audio"}]


def test_with_uris_refuses_a_file_that_is_not_a_dict() -> None:
    assert "Recording file 0" in refusal(with_uris, [NAME], located(1))
