"""HTTP answers as plain values, so the API logic can be tested without sockets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Response:
    """One HTTP answer; the server adds Content-Length and X-Request-Id."""

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """Serialise compactly, like Agora's gateway does."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status=status, body=body, headers=headers)


def gateway_error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """Gateway (Kong) errors carry only ``message``; clients tell them from service errors by that."""
    return json_response(status, {"message": message}, headers)


def service_error(status: int, code: int, reason: str, **extra: Any) -> Response:
    """Service errors carry Agora's numeric ``code`` and a ``reason``."""
    return json_response(status, {**extra, "code": code, "reason": reason})


NO_ROUTE = gateway_error(404, "no Route matched with those values")
UNAUTHORIZED = gateway_error(401, "Unauthorized")
BAD_CREDENTIALS = gateway_error(401, "Invalid authentication credentials")
INVALID_APPID = gateway_error(400, "appid is invalid")


def rate_limited(retry_after: int | None) -> Response:
    """429 as Kong's rate-limiting plugin sends it; ``None`` leaves out ``Retry-After``."""
    headers = () if retry_after is None else (("Retry-After", str(retry_after)),)
    return gateway_error(429, "API rate limit exceeded", headers)
