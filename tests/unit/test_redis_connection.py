"""The Redis connection (``redis_conn_id``) read as Airflow's redis provider reads it, TLS included.

Each test sets real ``AIRFLOW_CONN_*`` connections (a URI or JSON, as a deployment would), lets
``AgoraHook`` read them through Airflow, and checks the arguments redis-py is given
(``client_options``): for each TLS option, its value when set, its default when absent, and the one
sentence a bad value gets. The last tests open a real TLS connection to a ``redis-server``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from airflow_provider_agora._redis import RedisSettings, client_options
from airflow_provider_agora.exceptions import AgoraConfigurationError
from airflow_provider_agora.hooks.agora import AgoraHook
from tests.support import connection_json, free_port

REDIS_CONN_ID = "agora_tls_redis"
TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_keyfile", "ssl_certfile", "ssl_check_hostname")


def _read(monkeypatch: pytest.MonkeyPatch, redis_connection: str) -> RedisSettings:
    """The Redis settings ``AgoraHook`` reads from these two connections."""
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json("", redis_conn_id=REDIS_CONN_ID))
    monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}", redis_connection)
    redis = AgoraHook().settings.redis
    assert redis is not None
    return redis


def uri(query: dict[str, str] | None = None, *, password: str = "pw", path: str = "/0") -> str:
    """A Redis connection as a URI: its extra fields are strings, as in the query of any Airflow URI."""
    return f"redis://:{quote(password, safe='')}@redis.internal:6380{path}" + (f"?{urlencode(query)}" if query else "")


def as_json(**extra: Any) -> str:
    """A Redis connection as JSON: its extra fields keep their JSON types (true, numbers)."""
    return json.dumps({"conn_type": "redis", "host": "redis.internal", "port": 6380, "password": "pw", "extra": extra})


def options_of(monkeypatch: pytest.MonkeyPatch, redis_connection: str) -> dict[str, Any]:
    return client_options(_read(monkeypatch, redis_connection))


def refused(monkeypatch: pytest.MonkeyPatch, redis_connection: str) -> str:
    with pytest.raises(AgoraConfigurationError) as caught:
        _read(monkeypatch, redis_connection)
    return str(caught.value)


# -- what is read ------------------------------------------------------------------------------------


def test_host_port_password_and_db_are_read_from_a_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    options = options_of(monkeypatch, uri(password="p@ss:word", path="/3"))

    assert {key: options[key] for key in ("host", "port", "db", "username", "password", "ssl")} == {
        "host": "redis.internal",
        "port": 6380,
        "db": 3,
        "username": None,
        "password": "p@ss:word",
        "ssl": False,
    }


def test_extra_db_wins_over_the_uri_path_and_the_defaults_are_the_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert options_of(monkeypatch, uri({"db": "5"}, path="/3"))["db"] == 5
    bare = options_of(monkeypatch, json.dumps({"conn_type": "redis"}))
    assert (bare["host"], bare["port"], bare["db"], bare["password"], bare["ssl"]) == (
        "localhost",
        6379,
        0,
        None,
        False,
    )


@pytest.mark.parametrize("password", ["None", "false", ""])
def test_a_password_of_none_or_false_is_no_password_as_with_the_redis_provider(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    connection = json.dumps({"conn_type": "redis", "host": "redis.internal", "password": password})
    assert options_of(monkeypatch, connection)["password"] is None


def test_a_bad_db_names_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refused(monkeypatch, as_json(db="zero")) == (
        f"Redis connection {REDIS_CONN_ID!r} has db 'zero': use a database number such as 0."
    )


# -- ssl ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        (uri({"ssl": "true"}), True),
        (uri({"ssl": "1"}), True),
        (uri({"ssl": "True"}), True),
        (as_json(ssl=True), True),
        (uri({"ssl": "false"}), False),
        (uri({"ssl": "0"}), False),
        (as_json(ssl=False), False),
        (uri(), False),  # absent: plain TCP
    ],
)
def test_ssl(monkeypatch: pytest.MonkeyPatch, connection: str, expected: bool) -> None:
    assert options_of(monkeypatch, connection)["ssl"] is expected


def test_a_bad_ssl_names_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refused(monkeypatch, uri({"ssl": "maybe"})) == (
        f"Extra field 'ssl' of Redis connection {REDIS_CONN_ID!r} must be true or false, got 'maybe'."
    )


def test_without_ssl_no_tls_option_reaches_redis_py(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py reads them only with ``ssl``; a plain connection does not get them."""
    options = options_of(
        monkeypatch,
        as_json(
            ssl=False,
            ssl_cert_reqs="none",
            ssl_ca_certs="/ca.pem",
            ssl_keyfile="/k.pem",
            ssl_certfile="/c.pem",
            ssl_check_hostname=True,
        ),
    )

    assert options["ssl"] is False
    assert not set(TLS_OPTIONS) & set(options)


# -- ssl_cert_reqs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        (uri({"ssl": "true", "ssl_cert_reqs": "none"}), "none"),
        (uri({"ssl": "true", "ssl_cert_reqs": "optional"}), "optional"),
        (as_json(ssl=True, ssl_cert_reqs="required"), "required"),
        (as_json(ssl=True, ssl_cert_reqs="NONE"), "none"),
        (as_json(ssl=True), "required"),  # absent: redis-py's and the provider's default
    ],
)
def test_ssl_cert_reqs(monkeypatch: pytest.MonkeyPatch, connection: str, expected: str) -> None:
    assert options_of(monkeypatch, connection)["ssl_cert_reqs"] == expected


def test_a_bad_ssl_cert_reqs_names_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refused(monkeypatch, as_json(ssl=True, ssl_cert_reqs="require")) == (
        f"Extra field 'ssl_cert_reqs' of Redis connection {REDIS_CONN_ID!r} must be one of "
        f"required, optional, none, got 'require'."
    )


# -- ssl_ca_certs, ssl_keyfile, ssl_certfile ---------------------------------------------------------


@pytest.mark.parametrize("name", ["ssl_ca_certs", "ssl_keyfile", "ssl_certfile"])
def test_tls_file_paths(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    path = f"/etc/redis-tls/{name}.pem"

    assert options_of(monkeypatch, uri({"ssl": "true", name: path}))[name] == path
    assert options_of(monkeypatch, as_json(ssl=True, **{name: path}))[name] == path
    assert options_of(monkeypatch, as_json(ssl=True))[name] is None  # absent: none, redis-py's default
    assert options_of(monkeypatch, as_json(ssl=True, **{name: ""}))[name] is None


@pytest.mark.parametrize("name", ["ssl_ca_certs", "ssl_keyfile", "ssl_certfile"])
def test_a_bad_tls_file_path_names_the_connection(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    assert refused(monkeypatch, as_json(ssl=True, **{name: 42})) == (
        f"Extra field {name!r} of Redis connection {REDIS_CONN_ID!r} must be the path of a PEM file, got 42."
    )


# -- ssl_check_hostname ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        (uri({"ssl": "true", "ssl_check_hostname": "true"}), True),
        (uri({"ssl": "true", "ssl_check_hostname": "false"}), False),
        (as_json(ssl=True, ssl_check_hostname=True), True),
        (as_json(ssl=True, ssl_check_hostname=False), False),
    ],
)
def test_ssl_check_hostname(monkeypatch: pytest.MonkeyPatch, connection: str, expected: bool) -> None:
    assert options_of(monkeypatch, connection)["ssl_check_hostname"] is expected


def test_an_absent_ssl_check_hostname_leaves_redis_pys_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the redis provider: not passed, so the installed redis-py decides (True from redis-py 6)."""
    assert "ssl_check_hostname" not in options_of(monkeypatch, as_json(ssl=True))


def test_a_bad_ssl_check_hostname_names_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refused(monkeypatch, uri({"ssl": "true", "ssl_check_hostname": "sometimes"})) == (
        f"Extra field 'ssl_check_hostname' of Redis connection {REDIS_CONN_ID!r} must be true or false, "
        f"got 'sometimes'."
    )


def test_redis_py_takes_every_tls_option_sync_and_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    """The options build both clients the provider uses (no connection is opened)."""
    import redis
    import redis.asyncio

    options = options_of(
        monkeypatch,
        as_json(
            ssl=True,
            ssl_cert_reqs="optional",
            ssl_ca_certs="/ca.pem",
            ssl_keyfile="/k.pem",
            ssl_certfile="/c.pem",
            ssl_check_hostname=False,
        ),
    )
    sync = redis.Redis(**options)
    assert sync.connection_pool.connection_class is redis.SSLConnection
    kwargs = sync.connection_pool.connection_kwargs
    assert {name: kwargs[name] for name in TLS_OPTIONS} == {name: options[name] for name in TLS_OPTIONS}
    sync.close()
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    asynchronous = redis.asyncio.Redis(**{**options, "retry": Retry(NoBackoff(), 0)})
    assert asynchronous.connection_pool.connection_class is redis.asyncio.SSLConnection
    assert asynchronous.connection_pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"


# -- a real TLS round trip ---------------------------------------------------------------------------


class TlsFiles:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __getattr__(self, name: str) -> str:
        return str(self.folder / f"{name}.pem")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[tuple[int, TlsFiles]]:
    """A ``redis-server`` that speaks only TLS and wants a client certificate, with a private CA
    whose server certificate names 127.0.0.1; its files are removed afterwards."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("redis-server or openssl is not installed (make test installs redis-server)")
    with tempfile.TemporaryDirectory(prefix="agora-tests-redis-tls-") as folder:
        yield from _tls_server(binary, TlsFiles(Path(folder)))


def _tls_server(binary: str, files: TlsFiles) -> Iterator[tuple[int, TlsFiles]]:
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA"),
        *("-keyout", files.ca_key, "-out", files.ca),
    )
    for name, san in (("server", "IP:127.0.0.1"), ("client", "DNS:client")):
        _openssl(
            *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}"),
            *("-keyout", getattr(files, f"{name}_key"), "-out", getattr(files, f"{name}_csr")),
        )
        _openssl(
            *("x509", "-req", "-in", getattr(files, f"{name}_csr"), "-CA", files.ca, "-CAkey", files.ca_key),
            *("-CAcreateserial", "-days", "2", "-copy_extensions", "copy", "-out", getattr(files, name)),
        )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--tls-cert-file", files.server, "--tls-key-file", files.server_key, "--tls-ca-cert-file", files.ca),
            *("--tls-auth-clients", "yes"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        import socket

        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.skip(f"this redis-server does not speak TLS: {process.stderr.read().decode()[-300:]!r}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # polling the server's readiness, with a deadline
        yield port, files
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_tls_connection_with_every_option_reaches_redis(
    monkeypatch: pytest.MonkeyPatch, tls_redis: tuple[int, TlsFiles]
) -> None:
    import redis

    port, files = tls_redis
    connection = json.dumps(
        {
            "conn_type": "redis",
            "host": "127.0.0.1",
            "port": port,
            "extra": {
                "ssl": True,
                "ssl_cert_reqs": "required",
                "ssl_ca_certs": files.ca,
                "ssl_keyfile": files.client_key,
                "ssl_certfile": files.client,
                "ssl_check_hostname": True,
            },
        }
    )
    client = redis.Redis(**client_options(_read(monkeypatch, connection)))
    try:
        assert client.ping() is True
    finally:
        client.close()


@pytest.mark.parametrize(
    ("left_out", "error"),
    # Without a client certificate the server's TLS 1.3 alert may arrive as that, or as a bare EOF.
    [("ssl_ca_certs", "CERTIFICATE_VERIFY_FAILED"), ("ssl_certfile", None)],
)
def test_a_tls_connection_without_its_ca_or_its_client_certificate_is_refused(
    monkeypatch: pytest.MonkeyPatch, tls_redis: tuple[int, TlsFiles], left_out: str, error: str | None
) -> None:
    """So the options above are what made it work: without the CA the server is not trusted, without
    the client certificate the server refuses the client."""
    import redis

    port, files = tls_redis
    extra = {"ssl": "true", "ssl_ca_certs": files.ca, "ssl_keyfile": files.client_key, "ssl_certfile": files.client}
    del extra[left_out]
    if left_out == "ssl_certfile":
        del extra["ssl_keyfile"]
    client = redis.Redis(**client_options(_read(monkeypatch, f"redis://127.0.0.1:{port}/0?{urlencode(extra)}")))
    try:
        with pytest.raises(redis.ConnectionError, match=error):
            client.ping()
    finally:
        client.close()


@pytest.mark.parametrize(("check_hostname", "answers"), [("true", False), ("false", True)])
def test_ssl_check_hostname_decides_whether_a_certificate_for_another_name_is_accepted(
    monkeypatch: pytest.MonkeyPatch, tls_redis: tuple[int, TlsFiles], check_hostname: str, answers: bool
) -> None:
    """The server's certificate names 127.0.0.1, and the connection says localhost."""
    import redis

    port, files = tls_redis
    extra = {
        "ssl": "true",
        "ssl_ca_certs": files.ca,
        "ssl_keyfile": files.client_key,
        "ssl_certfile": files.client,
        "ssl_check_hostname": check_hostname,
    }
    client = redis.Redis(**client_options(_read(monkeypatch, f"redis://localhost:{port}/0?{urlencode(extra)}")))
    try:
        if answers:
            assert client.ping() is True
        else:
            with pytest.raises(redis.ConnectionError, match="Hostname mismatch"):
                client.ping()
    finally:
        client.close()
