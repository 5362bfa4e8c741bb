"""Every error the provider raises, in one hierarchy.

``AgoraError`` is an ``AirflowException``, so Airflow's normal retry rules apply to anything the
sensor or operators do not handle themselves. ``retryable`` is the single rule that both the sync
and the async transport consult before trying a request again; ``configuration_errors_fail_the_task``
is the single place where a wrong parameter or connection becomes a failure without retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow_provider_agora._compat import AirflowException, AirflowFailException

__all__ = [
    "AgoraApiError",
    "AgoraAuthenticationError",
    "AgoraBadRequestError",
    "AgoraConfigurationError",
    "AgoraConnectError",
    "AgoraError",
    "AgoraNoRecordedDataError",
    "AgoraNotFoundError",
    "AgoraRateLimitError",
    "AgoraRequestNotCompletedError",
    "AgoraResponseError",
    "AgoraRouteNotFoundError",
    "AgoraServerError",
    "AgoraTimeoutError",
    "AgoraTransportError",
]


class AgoraError(AirflowException):
    """Base class of every error raised by this provider."""

    retryable: bool = False


class AgoraConfigurationError(AgoraError, ValueError):
    """A connection or task parameter is wrong; the message says which and how to fix it."""


@contextmanager
def configuration_errors_fail_the_task() -> Iterator[None]:
    """Turn an ``AgoraConfigurationError`` raised inside into ``AirflowFailException``, same message.

    Retrying cannot fix a wrong parameter or connection, so the task fails without using its
    retries. A context manager, and a decorator too (``@configuration_errors_fail_the_task()``).
    """
    try:
        yield
    except AgoraConfigurationError as error:
        raise AirflowFailException(str(error)) from error


class AgoraTransportError(AgoraError):
    """The request did not get an HTTP answer: connection refused or reset, DNS failure, timeout."""

    retryable = True

    def __init__(self, message: str, *, url: str, operation: str) -> None:
        super().__init__(message)
        self.url = url
        self.operation = operation


class AgoraConnectError(AgoraTransportError):
    """No connection could be made (refused, unreachable, DNS). Triggers fail-over to the other domain."""


class AgoraTimeoutError(AgoraTransportError):
    """A connection was made but no complete answer arrived within the timeout."""


class AgoraApiError(AgoraError):
    """Agora answered with an error.

    Carries what Agora said: the HTTP ``status``, the service-level ``code`` (as Agora sent it, a
    number or, through some proxies, a string) and ``reason`` or the
    gateway-level ``message``, the ``X-Request-Id`` to quote to Agora support, and the parsed body.
    """

    def __init__(
        self,
        summary: str,
        *,
        operation: str,
        status: int,
        code: int | str | None = None,
        reason: str | None = None,
        message: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(summary)
        self.operation = operation
        self.status = status
        self.code = code
        self.reason = reason
        self.message = message
        self.request_id = request_id
        self.body = body


class AgoraBadRequestError(AgoraApiError):
    """HTTP 400 and other 4xx: invalid parameters, resource expired, invalid operation, ..."""


class AgoraAuthenticationError(AgoraApiError):
    """HTTP 401: the Customer ID / Customer Secret were refused or missing."""


class AgoraRouteNotFoundError(AgoraApiError):
    """Gateway 404 ``no Route matched with those values``: wrong URL, method, App ID or mode.

    Not "the recording ended": retrying cannot help, the request itself is wrong.
    """


class AgoraNotFoundError(AgoraApiError):
    """Service 404 ``failed to find worker``: the session is gone, never started, or failing over.

    Agora's high-availability fail-over answers this for up to 90 seconds while a recording goes
    on, so callers decide with a grace period rather than at once.
    """


class AgoraRateLimitError(AgoraApiError):
    """HTTP 429 ``API rate limit exceeded``."""

    retryable = True

    def __init__(self, summary: str, *, retry_after: float | None = None, **details: Any) -> None:
        """``details``: those of ``AgoraApiError``."""
        super().__init__(summary, **details)
        #: Seconds from the ``Retry-After`` header (capped at 60), or None.
        self.retry_after = retry_after


class AgoraServerError(AgoraApiError):
    """HTTP 5xx: Agora's documented advice is to retry with back-off."""

    retryable = True


class AgoraRequestNotCompletedError(AgoraApiError):
    """HTTP 206 with code 65: the request reached Agora but timed out there; retry the same request."""

    retryable = True


class AgoraNoRecordedDataError(AgoraApiError):
    """HTTP 206 with code 435 on ``stop``: nobody published in the channel, so there are no files."""


class AgoraResponseError(AgoraError):
    """Agora's answer cannot be understood (not JSON, or missing ``serverResponse.status``)."""

    def __init__(self, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.body = body
