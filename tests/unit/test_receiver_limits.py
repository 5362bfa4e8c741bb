"""The receiver's 1 MiB body cap, served for real: uvicorn on a loopback socket, httpx as Agora.

A real Agora "uploaded" notification can carry a long file list, so the cap must let a signed
body of exactly 1 MiB through and refuse one byte more, whether the body declares its length
(``Content-Length``) or arrives chunked (``Transfer-Encoding: chunked``, counted while streamed).
What is asserted is what an operator would check: the HTTP answer and what is in Redis.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

try:
    import uvicorn

    from airflow_provider_agora._ncs.receiver import create_app
except ImportError:  # Airflow 2 has neither FastAPI nor uvicorn
    pytest.skip(
        "the receiver is an Airflow 3 API-server plugin; Airflow 2 has no FastAPI apps", allow_module_level=True
    )

import httpx

from airflow_provider_agora._ncs.receiver_connections import forget_connections
from airflow_provider_agora.notifications import parse_notification, sign
from tests.unit.conftest import NCS_SECRET, Ncs

SID = "5c1e7a2b9d3f4e6a8b0c2d4e6f8a0b1c"
CNAME = "webinar_room_42"
ONE_MEBIBYTE = 1 << 20  # the documented cap, written out: a test reading MAX_BODY_BYTES would miss a change
CHUNK_BYTES = 64 << 10
STARTUP_SECONDS = 20.0  # a safety net for a server that does not start, never what a test waits for
TIMEOUT = 60.0


class ServedReceiver:
    """``create_app()`` served by uvicorn in a thread, on a loopback socket bound before it starts
    (port 0: no race for a free port between xdist workers; requests queue until uvicorn accepts)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(create_app(), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self) -> ServedReceiver:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.server.started:  # polling uvicorn's readiness flag, with a deadline
            self.thread.join(timeout=0.01)
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started serving the receiver")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start serving the receiver in {STARTUP_SECONDS:.0f} s")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=STARTUP_SECONDS)
        self.socket.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[ServedReceiver]:
    served = ServedReceiver().start()
    yield served
    served.stop()


@pytest.fixture
def agora(ncs: Ncs, receiver: ServedReceiver) -> Iterator[httpx.Client]:
    """Agora's side: a client of the served receiver, for ``agora_default`` signed with NCS_SECRET.

    The receiver caches connections process-wide for 30 s: cleared, so that this test's
    ``AIRFLOW_CONN_*`` (and its Redis) are the ones read."""
    ncs.connect(NCS_SECRET)
    forget_connections()
    with httpx.Client(base_url=receiver.url, trust_env=False, timeout=TIMEOUT) as client:
        yield client
    forget_connections()


def recording_file(n: int) -> dict[str, Any]:
    """One file of an individual recording with many users: each user's audio or video playlist."""
    uid, track = 100_000 + n // 2, ("audio", "video")[n % 2]
    return {
        "fileName": f"recordings/{CNAME}/{SID}_{CNAME}__uid_s_{uid}__uid_e_{track}.m3u8",
        "trackType": track,
        "uid": str(uid),
        "mixedAllUser": False,
        "isPlayable": True,
        "sliceStartTime": 1_700_000_000_000 + n,
    }


def uploaded_body(size: int) -> bytes:
    """A cloud-recording "uploaded" notification (eventType 31), sent now, of exactly ``size`` bytes:
    as many files as fit, the last file's name lengthened by the bytes left over."""
    now_ms = int(time.time() * 1000)

    def body(files: list[dict[str, Any]]) -> bytes:
        envelope = {
            "noticeId": uuid.uuid4().hex,
            "productId": 3,
            "eventType": 31,
            "notifyMs": now_ms,
            "payload": {
                "cname": CNAME,
                "uid": "527841",
                "sid": SID,
                "sequence": 7,
                "sendts": now_ms - 50,
                "serviceType": 0,
                "details": {"msgName": "uploaded", "status": 0, "fileList": files},
            },
        }
        return json.dumps(envelope).encode()

    one_file = len(json.dumps(recording_file(0))) + 2  # and its ", "
    files = [recording_file(n) for n in range((size - len(body([]))) // one_file)]
    left_over = size - len(body(files))
    files[-1]["fileName"] = files[-1]["fileName"].replace(".m3u8", "_" + "0" * (left_over - 1) + ".m3u8")
    raw = body(files)
    assert len(raw) == size
    return raw


def post(agora: httpx.Client, raw: bytes, *, chunked: bool = False) -> httpx.Response:
    """``raw`` signed with the connection's secret, as one body with its length or in 64 KiB chunks."""
    headers = {"Content-Type": "application/json", **sign(raw, NCS_SECRET)}
    if not chunked:
        return agora.post("/ncs/agora_default", content=raw, headers=headers)
    pieces = (raw[start : start + CHUNK_BYTES] for start in range(0, len(raw), CHUNK_BYTES))
    answer = agora.post("/ncs/agora_default", content=pieces, headers=headers)
    sent = answer.request.headers
    assert (sent.get("transfer-encoding"), sent.get("content-length")) == ("chunked", None)
    return answer


# -- a body that declares its length -----------------------------------------------------------


def test_a_signed_notification_of_exactly_one_mebibyte_is_stored(ncs: Ncs, agora: httpx.Client) -> None:
    raw = uploaded_body(ONE_MEBIBYTE)

    answer = post(agora, raw)

    assert (answer.status_code, answer.json()["status"]) == (200, "stored")
    assert ncs.store(NCS_SECRET).for_sid(SID) == [parse_notification(raw)]


def test_a_signed_notification_one_byte_over_one_mebibyte_is_refused_with_413(ncs: Ncs, agora: httpx.Client) -> None:
    answer = post(agora, uploaded_body(ONE_MEBIBYTE + 1))

    assert answer.status_code == 413
    assert ncs.client.keys("*") == []


# -- a chunked body, counted while it streams --------------------------------------------------


def test_a_chunked_signed_notification_of_exactly_one_mebibyte_is_stored(ncs: Ncs, agora: httpx.Client) -> None:
    raw = uploaded_body(ONE_MEBIBYTE)

    answer = post(agora, raw, chunked=True)

    assert (answer.status_code, answer.json()["status"]) == (200, "stored")
    assert ncs.store(NCS_SECRET).for_sid(SID) == [parse_notification(raw)]


def test_a_chunked_signed_notification_one_byte_over_one_mebibyte_is_refused_with_413(
    ncs: Ncs, agora: httpx.Client
) -> None:
    answer = post(agora, uploaded_body(ONE_MEBIBYTE + 1), chunked=True)

    assert answer.status_code == 413
    assert ncs.client.keys("*") == []
