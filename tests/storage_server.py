"""A real S3-compatible server for tests: moto's server in a subprocess on a free loopback port.

Independent of pytest (the tests wrap it in fixtures)::

    with running_s3_server() as s3:
        s3.create_bucket("recordings")
        ...  # point the code under test at s3.endpoint_url
        s3.client().list_objects_v2(Bucket="recordings")

``stop()`` and ``start()`` take the server down and bring it back on the same port (a new process:
moto keeps its state in memory, so objects are gone; the buckets made through ``create_bucket`` are
made again inside the new process before it listens, so no client ever sees them missing).
``refusing_credentials()`` turns on moto's IAM enforcement and returns an access key that S3 answers
``AccessDenied`` to; from then on ``client()`` uses a key with full S3 rights.
Needs ``moto[server]`` (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support import free_port

#: Keys of the client when moto does not check credentials (it accepts any then).
DUMMY_ACCESS_KEY = "test-access-key"
DUMMY_SECRET_KEY = "test-secret-key"
REGION = "us-east-1"
#: Real seconds to wait for the server to answer after it is started.
START_TIMEOUT = 30.0
#: Run in the server process: make the buckets named in argv[3:] in moto's S3 backend, then serve.
_BOOT = """
import sys
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import main
for name in sys.argv[3:]:
    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(name, "us-east-1")
main(["-H", sys.argv[1], "-p", sys.argv[2]])
"""


@dataclass(frozen=True)
class Credentials:
    """An access key pair (the secret is not shown in a repr)."""

    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, secret_key='***')"


class S3Server:
    """One moto server process; ``start`` waits until it answers HTTP."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._buckets: list[str] = []
        self._credentials = Credentials(DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY)
        self._users = 0

    def __repr__(self) -> str:
        return f"<S3Server {self.endpoint_url} running={self.running}>"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def credentials(self) -> Credentials:
        """The key pair ``client()`` uses (dummy until ``refusing_credentials`` turns checks on)."""
        return self._credentials

    # -- process ---------------------------------------------------------------------------------

    def start(self) -> S3Server:
        """Start the server on ``port`` (again, after ``stop``) and wait until it answers."""
        if self.running:
            return self
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        self._process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, self.host, str(self.port), *self._buckets],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._wait_answering()
        self._credentials = Credentials(DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY)
        return self

    def stop(self) -> None:
        """Stop the server (its port stays reserved for ``start``); safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with status {self._process.returncode} (moto[server] installed?)"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self._request("GET", "/moto-api/data.json")[0] == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server did not answer on {self.endpoint_url} within {START_TIMEOUT:g} s")
            time.sleep(0.05)  # polling interval while the process boots, not a guess at readiness

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    # -- S3 --------------------------------------------------------------------------------------

    def client(self, credentials: Credentials | None = None) -> Any:
        """A boto3 S3 client for this server (path-style addressing), with ``credentials`` or :attr:`credentials`."""
        import boto3
        from botocore.config import Config

        chosen = credentials or self._credentials
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=chosen.access_key,
            aws_secret_access_key=chosen.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (again after a restart); returns the name."""
        self.client().create_bucket(Bucket=name)
        if name not in self._buckets:
            self._buckets.append(name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``, sorted (all pages)."""
        found: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [item["Key"] for item in page.get("Contents", [])]
        return sorted(found)

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def reset(self) -> None:
        """Wipe every bucket and object (``POST /moto-api/reset``); buckets made before are forgotten."""
        self._request("POST", "/moto-api/reset")
        self._buckets.clear()

    # -- credentials that S3 refuses ----------------------------------------------------------------

    def refusing_credentials(self) -> Credentials:
        """Turn on moto's IAM checks and return a key whose user may do nothing in S3 (AccessDenied).

        Before the checks go on, a user with full S3 rights is made too: :meth:`client` uses it
        from then on. ``allow_any_credentials`` turns the checks off again.
        """
        iam = self._iam()
        self._users += 1
        admin = self._user(iam, f"s3-admin-{self._users}", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
        denied = self._user(
            iam, f"s3-denied-{self._users}", {"Effect": "Allow", "Action": "sqs:ListQueues", "Resource": "*"}
        )
        status, body = self._request("POST", "/moto-api/reset-auth", b"0")
        if status != 200:
            raise RuntimeError(f"moto reset-auth answered {status}: {body[:200]!r}")
        self._credentials = admin
        return denied

    def allow_any_credentials(self) -> None:
        """Turn moto's IAM checks off again: any key is accepted."""
        self._request("POST", "/moto-api/reset-auth", b"inf")
        self._credentials = Credentials(DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY)

    def _iam(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "iam",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self._credentials.access_key,
            aws_secret_access_key=self._credentials.secret_key,
            region_name=REGION,
        )

    @staticmethod
    def _user(iam: Any, name: str, statement: dict[str, str]) -> Credentials:
        iam.create_user(UserName=name)
        iam.put_user_policy(
            UserName=name,
            PolicyName=f"{name}-policy",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


@contextlib.contextmanager
def running_s3_server(host: str = "127.0.0.1", port: int | None = None) -> Iterator[S3Server]:
    """A started :class:`S3Server`, stopped on exit."""
    server = S3Server(host, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
