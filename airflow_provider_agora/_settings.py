"""Reading an ``agora`` connection into validated settings (no I/O; Airflow only to register secrets)."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_agora._connection_form import (
    DEFAULT_HOST,
    DEFAULT_MAX_REQUESTS_PER_SECOND,
    DEFAULT_TIMEOUT_SECONDS,
)
from airflow_provider_agora._redis import RedisSettings, redis_settings_of
from airflow_provider_agora.exceptions import AgoraConfigurationError

# Agora's two primary domains: the documented practice is to switch to the other one when a
# connection cannot be made. Only used when the connection keeps the default host.
PRIMARY_BASE_URLS = ("https://api.agora.io", "https://api.sd-rtn.com")


# Without Redis, or while it cannot be reached, each process keeps this share of the account's
# budget for itself: conservative, because nobody knows how many processes do the same.
DEFAULT_REDIS_FALLBACK_SHARE = 0.1

__all__ = ["AgoraSettings"]


@dataclass(frozen=True)
class AgoraSettings:
    """What an ``agora`` connection says, validated. ``customer_secret`` is left out of ``repr``."""

    conn_id: str
    customer_id: str
    customer_secret: str = field(repr=False)
    base_urls: tuple[str, ...]
    app_id: str | None
    max_requests_per_second: int
    timeout: float
    redis_conn_id: str | None = None
    redis_fallback_share: float = DEFAULT_REDIS_FALLBACK_SHARE
    redis: RedisSettings | None = None  # filled in by the hooks from ``redis_conn_id``
    #: Where this connection's verified notifications are kept (``notifications.namespace_of`` of
    #: ``ncs_secret``, then of ``ncs_previous_secret``); empty without ``ncs_secret``.
    notification_namespaces: tuple[str, ...] = ()

    @property
    def receives_notifications(self) -> bool:
        """``ncs_secret`` is set: Agora's notifications arrive in Redis."""
        return bool(self.notification_namespaces)

    @property
    def basic_token(self) -> str:
        return base64.b64encode(f"{self.customer_id}:{self.customer_secret}".encode()).decode("ascii")

    @property
    def authorization(self) -> str:
        return f"Basic {self.basic_token}"


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def base_urls_for(conn_id: str, host: str | None, port: int | None = None) -> tuple[str, ...]:
    """Normalise the connection's host into the base URLs to try, in order.

    A bare host name means https. Plain http is only accepted for loopback (a local simulator):
    anything else would send the Customer Secret in clear text.
    """
    raw = (host or "").strip().rstrip("/")
    if not raw:
        return PRIMARY_BASE_URLS
    if "://" not in raw:
        raw = f"https://{raw}"
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    hostname = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not hostname:
        raise AgoraConfigurationError(
            f"The host {host!r} of connection {conn_id!r} is not a valid API URL: use for example {DEFAULT_HOST!r}."
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise AgoraConfigurationError(
            f"The host of connection {conn_id!r} must be scheme, host name and optional port only "
            f"(for example {DEFAULT_HOST!r}), without path, query or credentials."
        )
    if scheme == "http" and not _is_loopback(hostname):
        raise AgoraConfigurationError(
            f"Connection {conn_id!r} points at plain http://{hostname}: Agora needs https, and http is only "
            f"allowed for a local server on loopback (127.0.0.1 or localhost)."
        )
    explicit_port = parts.port or port
    base = f"{scheme}://{parts.hostname}" + (f":{explicit_port}" if explicit_port else "")
    if base in PRIMARY_BASE_URLS:
        return (base, *(url for url in PRIMARY_BASE_URLS if url != base))
    return (base,)


def _positive_number(conn_id: str, name: str, value: Any, default: float, *, integer: bool) -> float:
    if value in (None, ""):
        return default
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number <= 0 or (integer and float(value) != number):
        kind = "whole number" if integer else "number"
        raise AgoraConfigurationError(
            f"Extra field {name!r} of connection {conn_id!r} must be a positive {kind}, got {value!r}."
        )
    return number


def settings_from_connection(
    conn_id: str,
    *,
    host: str | None,
    login: str | None,
    password: str | None,
    port: int | None,
    extra: dict[str, Any],
) -> AgoraSettings:
    if not login or not password:
        missing = "Customer ID (login)" if not login else "Customer Secret (password)"
        raise AgoraConfigurationError(
            f"Connection {conn_id!r} has no {missing}: set both from Agora Console > Developer Toolkit > RESTful API."
        )
    if ":" in login or any(ord(ch) < 32 for ch in login + password):
        raise AgoraConfigurationError(
            f"The Customer ID or Customer Secret of connection {conn_id!r} contains ':' or control "
            f"characters: copy them again from Agora Console."
        )
    # Airflow 2.0-2.2 stored custom fields with a prefix; accept both spellings.
    app_id = extra.get("app_id") or extra.get("extra__agora__app_id") or None
    if app_id is not None and not isinstance(app_id, str):
        raise AgoraConfigurationError(f"Extra field 'app_id' of connection {conn_id!r} must be a string.")
    rate = _positive_number(
        conn_id,
        "max_requests_per_second",
        extra.get("max_requests_per_second"),
        DEFAULT_MAX_REQUESTS_PER_SECOND,
        integer=True,
    )
    timeout = _positive_number(conn_id, "timeout", extra.get("timeout"), DEFAULT_TIMEOUT_SECONDS, integer=False)
    redis_conn_id = extra.get("redis_conn_id") or None
    if redis_conn_id is not None and not isinstance(redis_conn_id, str):
        raise AgoraConfigurationError(
            f"Extra field 'redis_conn_id' of connection {conn_id!r} must be the id of a connection of type redis."
        )
    share = _positive_number(
        conn_id, "redis_fallback_share", extra.get("redis_fallback_share"), DEFAULT_REDIS_FALLBACK_SHARE, integer=False
    )
    if share > 1:
        raise AgoraConfigurationError(
            f"Extra field 'redis_fallback_share' of connection {conn_id!r} is the share of the account's budget "
            f"one process may use while Redis is unreachable: a number above 0 and at most 1, got {share!r}."
        )
    return AgoraSettings(
        conn_id=conn_id,
        customer_id=login,
        customer_secret=password,
        base_urls=base_urls_for(conn_id, host, port),
        app_id=app_id,
        max_requests_per_second=int(rate),
        timeout=timeout,
        redis_conn_id=redis_conn_id,
        redis_fallback_share=share,
        notification_namespaces=_notification_namespaces(extra),
    )


def ncs_secrets(extra: dict[str, Any]) -> tuple[str, ...]:
    """The NCS secrets set in a connection's extra: ``ncs_secret``, then ``ncs_previous_secret``
    (still accepted while the secret is rotated). A connection receives notifications only when
    ``ncs_secret`` is set; both are secrets either way."""
    return tuple(str(extra[name]) for name in ("ncs_secret", "ncs_previous_secret") if extra.get(name))


def _notification_namespaces(extra: dict[str, Any]) -> tuple[str, ...]:
    from airflow_provider_agora.notifications import namespace_of

    if not extra.get("ncs_secret"):
        return ()
    return tuple(dict.fromkeys(namespace_of(secret) for secret in ncs_secrets(extra)))


def missing_connection(conn_id: str) -> AgoraConfigurationError:
    return AgoraConfigurationError(
        f"Connection {conn_id!r} does not exist: create an Agora Cloud Recording connection with that id "
        f"(Customer ID, Customer Secret, App ID), or pass agora_conn_id= the id of an existing one."
    )


def settings_of(conn_id: str, conn: Any) -> AgoraSettings:
    """Validated settings of an Airflow ``Connection``, every form of the secret registered with the
    masker before anything can log it. Used by both hooks."""
    from airflow_provider_agora._compat import mask_secret

    extra = conn.extra_dejson if conn.extra else {}
    settings = settings_from_connection(
        conn_id, host=conn.host, login=conn.login, password=conn.password, port=conn.port, extra=extra
    )
    mask_secret(settings.customer_secret)
    mask_secret(settings.basic_token)
    mask_secret(settings.authorization)
    for secret in ncs_secrets(extra):
        mask_secret(secret)
    return settings


def with_redis(settings: AgoraSettings, conn: Any) -> AgoraSettings:
    """``settings`` with the Redis connection its ``redis_conn_id`` names (``conn`` None: it does not exist)."""
    if conn is None:
        raise AgoraConfigurationError(
            f"Connection {settings.conn_id!r} names redis_conn_id {settings.redis_conn_id!r}, which does not exist: "
            f"create a connection of type redis with that id, or remove redis_conn_id to keep the budget per process."
        )
    return replace(settings, redis=redis_settings_of(str(settings.redis_conn_id), conn))
