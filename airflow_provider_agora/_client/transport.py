"""The part of a request to Agora that the sync and async hooks share: the account's base URL and
the fail-over between Agora's two domains, the headers, the request budget, and the meaning of
whatever came back (an answer, or a transport failure).

``AgoraHook`` moves the bytes with ``requests`` and ``AgoraAsyncHook`` with ``httpx``; both hand
the outcome to one ``Transport``, so the two paths cannot disagree: the same fault gives the same
exception, message, retry and fail-over decision on both.

Fail-over is safe only when the request cannot have reached Agora: connection refused, host name
not resolved, no connection within the timeout. A connection reset or a cut-short answer after the
request was sent may have reached Agora, so it is retried on the same domain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

from airflow_provider_agora import __version__
from airflow_provider_agora._client.budget import RequestBudget, spacer_for
from airflow_provider_agora._client.protocol import JSON_HEADERS, Endpoint, interpret_response
from airflow_provider_agora._settings import AgoraSettings
from airflow_provider_agora.exceptions import AgoraConnectError, AgoraTimeoutError, AgoraTransportError

log = logging.getLogger(__name__)

USER_AGENT = f"airflow-provider-agora/{__version__}"


@dataclass(frozen=True)
class TransportFault:
    """One kind of transport failure: the exception it becomes and the words that describe it."""

    error: type[AgoraTransportError]
    words: str  # may use {timeout}

    @property
    def fails_over(self) -> bool:
        """Only a failure to connect proves that Agora never saw the request."""
        return issubclass(self.error, AgoraConnectError)


REFUSED = TransportFault(AgoraConnectError, "the connection was refused")
NAME_NOT_RESOLVED = TransportFault(AgoraConnectError, "the host name could not be resolved")
CONNECT_TIMEOUT = TransportFault(AgoraConnectError, "no connection within {timeout:g} s")
CONNECT_FAILED = TransportFault(AgoraConnectError, "no connection could be made")
ANSWER_TIMEOUT = TransportFault(AgoraTimeoutError, "no complete answer within {timeout:g} s")
BROKEN = TransportFault(AgoraTransportError, "the connection broke before a complete answer arrived")

# The one table for requests and httpx alike, searched in order over the exception and its causes:
# the first name found decides. Names, not classes, so that neither library is imported to read
# the other's exceptions. The operating system's own errors come first, because both libraries
# wrap them in several layers.
_FAULTS: tuple[tuple[str, TransportFault], ...] = (
    ("socket.gaierror", NAME_NOT_RESOLVED),
    ("builtins.ConnectionRefusedError", REFUSED),
    ("requests.exceptions.ConnectTimeout", CONNECT_TIMEOUT),
    ("httpx.ConnectTimeout", CONNECT_TIMEOUT),
    ("requests.exceptions.SSLError", CONNECT_FAILED),
    ("urllib3.exceptions.NewConnectionError", CONNECT_FAILED),
    ("httpx.ConnectError", CONNECT_FAILED),
    ("requests.exceptions.Timeout", ANSWER_TIMEOUT),
    ("httpx.TimeoutException", ANSWER_TIMEOUT),
    ("requests.exceptions.ConnectionError", BROKEN),
    ("requests.exceptions.ChunkedEncodingError", BROKEN),
    ("requests.exceptions.ContentDecodingError", BROKEN),
    ("httpx.TransportError", BROKEN),
)
_MAX_CAUSES = 12


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The exception, then what it wraps: ``__cause__``, ``__context__`` and urllib3's ``reason``."""
    seen: set[int] = set()
    pending = [error]
    while pending and len(seen) < _MAX_CAUSES:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for inner in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(inner, BaseException):
                pending.append(inner)


def _names(error: BaseException) -> set[str]:
    return {f"{kind.__module__}.{kind.__qualname__}" for kind in type(error).__mro__}


def classify_transport_failure(error: BaseException) -> TransportFault | None:
    """What kind of transport failure ``error`` is, or None if it is not one."""
    names = set().union(*(_names(cause) for cause in _causes(error)))
    return next((fault for name, fault in _FAULTS if name in names), None)


def budget_for(settings: AgoraSettings) -> RequestBudget:
    """The account's budget: shared through Redis when the connection names one, else this process's.
    Either takes the request's ``Priority`` and nothing else, so the hooks need not know which."""
    if settings.redis is not None:
        from airflow_provider_agora._client.shared_budget import shared_budget_for

        return shared_budget_for(settings)
    return spacer_for(settings.customer_id, settings.max_requests_per_second)


class Answer(NamedTuple):
    body: dict[str, Any]  # Agora's JSON object, as sent
    request_id: str | None


class Transport:
    """One account's base URL (with fail-over), headers and request budget; what an answer or failure means."""

    def __init__(self, settings: AgoraSettings) -> None:
        self.settings = settings
        self.budget: RequestBudget = budget_for(settings)
        self._base_url_index = 0

    @property
    def base_url(self) -> str:
        return self.settings.base_urls[self._base_url_index]

    @property
    def headers(self) -> dict[str, str]:
        return {**JSON_HEADERS, "User-Agent": USER_AGENT, "Authorization": self.settings.authorization}

    def url(self, endpoint: Endpoint) -> str:
        return self.base_url + endpoint.path

    def raise_failure(
        self, error: BaseException, endpoint: Endpoint, *, url: str, sid: str | None, timeout: float
    ) -> NoReturn:
        """Raise the provider's exception for a transport failure, switching domains if that is
        safe; re-raise ``error`` as it is when it is no transport failure."""
        fault = classify_transport_failure(error)
        if fault is None:
            raise error
        host = url.split("/v1/")[0]
        about = f" for recording sid={sid}" if sid else ""
        words = fault.words.format(timeout=timeout)
        if fault.fails_over:
            self._fail_over()
            message = f"Could not connect to {host} for Agora {endpoint.operation}{about}: {words}."
        else:
            message = f"Agora {endpoint.operation}{about} got no answer from {host}: {words}."
        raise fault.error(message, url=url, operation=endpoint.operation) from error

    def answer(
        self, endpoint: Endpoint, status: int, headers: Mapping[str, str], content: bytes, *, sid: str | None
    ) -> Answer:
        """Agora's body for a success, or the exception that says what went wrong (raised)."""
        request_id = headers.get("X-Request-Id")
        log.debug("Agora %s %s -> HTTP %s (request id %s)", endpoint.method, endpoint.path, status, request_id)
        return Answer(interpret_response(endpoint.operation, status, headers, content, sid=sid), request_id)

    def _fail_over(self) -> None:
        """Agora's dual-domain practice: after a connection failure, use the other primary domain."""
        if len(self.settings.base_urls) > 1:
            previous = self.base_url
            self._base_url_index = (self._base_url_index + 1) % len(self.settings.base_urls)
            log.warning("Cannot reach %s; switching to %s.", previous, self.base_url)
