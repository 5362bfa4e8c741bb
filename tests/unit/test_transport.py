"""One table of transport faults, driven through both hooks: the sync and async paths must agree.

Each fault is real, on loopback: a closed port, a host name that does not resolve, a listener
whose accept queue is full, a server that resets the connection after reading the request, one
that never answers, and one that cuts its answer short. For each, both hooks must raise the same
exception class with the same message, make the same retry decision, and make the same fail-over
decision: switch to Agora's other domain only when the request cannot have reached Agora.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass

import pytest

from airflow_provider_agora import _settings
from airflow_provider_agora.exceptions import (
    AgoraConnectError,
    AgoraTimeoutError,
    AgoraTransportError,
)
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook, RetryPolicy
from airflow_provider_agora.simulator import AgoraSimulator
from tests import agora_bodies as bodies
from tests.support import ScriptedAgora, connection_json, free_port

RID = "JyvK8nXHuV1BE64GDkAaBGEscvtHW7v8"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
TIMEOUT = 0.5
ONE_ATTEMPT = RetryPolicy(max_attempts=1)


class FaultyServer:
    """A loopback listener that reads each request, then misbehaves in one of three ways."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        held: list[socket.socket] = []
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                request += chunk
            if self.behaviour == "reset":  # RST right after the request arrived
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()
            elif self.behaviour == "truncate":  # promise 100 bytes, send 10, hang up
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"serverRe')
                connection.close()
            else:  # "silent": keep the connection open and never answer
                held.append(connection)
        for connection in held:
            connection.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()


@contextmanager
def refused() -> Iterator[str]:
    yield f"http://127.0.0.1:{free_port()}"


@contextmanager
def unresolvable() -> Iterator[str]:
    yield "https://agora-provider-test.invalid"


@contextmanager
def accept_queue_full() -> Iterator[str]:
    """SYNs to a listener whose accept queue is full are dropped: the connect itself times out."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def misbehaving(behaviour: str) -> Callable[[], AbstractContextManager[str]]:
    @contextmanager
    def server() -> Iterator[str]:
        faulty = FaultyServer(behaviour)
        try:
            yield faulty.url
        finally:
            faulty.close()

    return server


@dataclass(frozen=True)
class Fault:
    name: str
    where: Callable[[], AbstractContextManager[str]]
    error: type[AgoraTransportError]
    words: str
    fails_over: bool

    def message(self, url: str) -> str:
        if self.fails_over:
            return f"Could not connect to {url} for Agora query for recording sid={SID}: {self.words}."
        return f"Agora query for recording sid={SID} got no answer from {url}: {self.words}."


FAULTS = [
    Fault("refused", refused, AgoraConnectError, "the connection was refused", True),
    Fault("dns_failure", unresolvable, AgoraConnectError, "the host name could not be resolved", True),
    Fault("connect_timeout", accept_queue_full, AgoraConnectError, f"no connection within {TIMEOUT:g} s", True),
    Fault(
        "reset_after_send",
        misbehaving("reset"),
        AgoraTransportError,
        "the connection broke before a complete answer arrived",
        False,
    ),
    Fault("read_timeout", misbehaving("silent"), AgoraTimeoutError, f"no complete answer within {TIMEOUT:g} s", False),
    Fault(
        "truncated_body",
        misbehaving("truncate"),
        AgoraTransportError,
        "the connection broke before a complete answer arrived",
        False,
    ),
]


@dataclass
class Observed:
    error: BaseException
    second_call_reached_other_domain: bool


def through_sync_hook(good: ScriptedAgora) -> Observed:
    hook = AgoraHook(retry_policy=ONE_ATTEMPT)
    with pytest.raises(AgoraTransportError) as raised:
        hook.query(RID, SID, recording_mode="mix")
    before = len(good.requests)
    with suppress(AgoraTransportError):  # fails again unless it went to the other domain
        hook.query(RID, SID, recording_mode="mix")
    return Observed(raised.value, len(good.requests) > before)


def through_async_hook(good: ScriptedAgora) -> Observed:
    async def run() -> Observed:
        hook = AgoraAsyncHook(retry_policy=ONE_ATTEMPT)
        try:
            with pytest.raises(AgoraTransportError) as raised:
                await hook.query(RID, SID, recording_mode="mix")
            before = len(good.requests)
            with suppress(AgoraTransportError):
                await hook.query(RID, SID, recording_mode="mix")
            return Observed(raised.value, len(good.requests) > before)
        finally:
            await AgoraAsyncHook.close_shared_clients()

    return asyncio.run(run())


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.name for fault in FAULTS])
@pytest.mark.parametrize("path", [through_sync_hook, through_async_hook], ids=["sync", "async"])
def test_both_hooks_treat_a_transport_fault_alike(
    fault: Fault, path: Callable[[ScriptedAgora], Observed], scripted: ScriptedAgora, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted.script((200, bodies.QUERY_STRING))
    with fault.where() as faulty_url:
        # Agora's two primary domains: the faulty one first, a healthy one second.
        monkeypatch.setattr(_settings, "PRIMARY_BASE_URLS", (faulty_url, scripted.url))
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json("", timeout=TIMEOUT))
        observed = path(scripted)

    assert type(observed.error) is fault.error
    assert str(observed.error) == fault.message(faulty_url)
    assert observed.error.retryable is True
    assert observed.second_call_reached_other_domain is fault.fails_over


def test_every_wait_of_an_account_shares_one_async_client(agora_conn: AgoraSimulator) -> None:
    """A triggerer's waits share one keep-alive connection: no new client, TLS session or socket per wait."""
    recording = start_recording()

    async def run() -> None:
        try:
            for _ in range(5):  # five waits, each with its own hook, as five triggers have
                await AgoraAsyncHook(retry_policy=ONE_ATTEMPT).query(**recording)
        finally:
            await AgoraAsyncHook.close_shared_clients()

    asyncio.run(run())
    queries = [record for record in agora_conn.request_log if record.path.endswith("/query")]
    assert len(queries) == 5
    assert len({record.client_port for record in queries}) == 1


def test_a_replaced_shared_client_is_closed(agora_conn: AgoraSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    recording = start_recording()

    async def run() -> tuple[bool, bool, bool]:
        hook = AgoraAsyncHook(retry_policy=ONE_ATTEMPT)
        await hook.query(**recording)
        first = await hook._shared_client()
        # The connection changes (a new timeout): the next hook gets a new client, the old one closes.
        monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(agora_conn.url, timeout=12))
        replacement = AgoraAsyncHook(retry_policy=ONE_ATTEMPT)
        await replacement.query(**recording)
        second = await replacement._shared_client()
        await AgoraAsyncHook.close_shared_clients()
        return first.http.is_closed, second is first, second.http.is_closed

    first_closed, same, second_closed = asyncio.run(run())
    assert (first_closed, same, second_closed) == (True, False, True)


def start_recording() -> dict[str, str]:
    hook = AgoraHook(retry_policy=ONE_ATTEMPT)
    resource_id = hook.acquire("room1", 4242)["resourceId"]
    sid = hook.start(
        resource_id,
        "room1",
        4242,
        recording_mode="mix",
        client_request={"recordingFileConfig": {"avFileType": ["hls"]}},
    )["sid"]
    return {"resource_id": resource_id, "sid": sid, "recording_mode": "mix"}
