"""Redis as this provider uses it, shared by the request budget (``_client``) and the notifications
(``_ncs``): the settings read from an Airflow ``redis`` connection, redis-py's client options, the
key layout, and what "Redis is down" looks like. ``redis`` is imported only inside functions, and
only when a connection has ``redis_conn_id``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_agora.exceptions import AgoraConfigurationError

__all__ = [
    "REDIS_TIMEOUT_SECONDS",
    "RedisSettings",
    "async_client",
    "client_options",
    "key_prefix",
    "redis_down_errors",
    "redis_settings_of",
]

REDIS_TIMEOUT_SECONDS = 0.5  # each budget call; past it, this process falls back

# What Airflow's redis provider accepts for ``ssl_cert_reqs`` (redis-py's names), its default first.
SSL_CERT_REQS = ("required", "optional", "none")
DEFAULT_SSL_CERT_REQS = SSL_CERT_REQS[0]
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


@dataclass(frozen=True)
class RedisSettings:
    """Where the account's shared request budget lives: an Airflow connection of type ``redis``."""

    conn_id: str
    host: str
    port: int
    db: int
    ssl: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The TLS options of Airflow's redis provider, passed to redis-py only with ``ssl``.
    ssl_cert_reqs: str = DEFAULT_SSL_CERT_REQS
    ssl_ca_certs: str | None = None
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    #: None: redis-py's own default (True from redis-py 6, False before), as the redis provider leaves it.
    ssl_check_hostname: bool | None = None


def _redis_flag(conn_id: str, name: str, value: Any) -> bool | None:
    """A yes/no extra field of a Redis connection: JSON true/false, or a URI's "true"/"false"/"1"/"0"
    (also yes/no, on/off); None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise AgoraConfigurationError(
        f"Extra field {name!r} of Redis connection {conn_id!r} must be true or false, got {value!r}."
    )


def _redis_path(conn_id: str, name: str, value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise AgoraConfigurationError(
            f"Extra field {name!r} of Redis connection {conn_id!r} must be the path of a PEM file, got {value!r}."
        )
    return value


def redis_settings_of(conn_id: str, conn: Any) -> RedisSettings:
    """The settings of Redis connection ``conn_id``, read as Airflow's redis provider reads it: host,
    port, login, password ("none"/"false" mean none), extra ``db`` (here also the schema, a URI's
    path), and the extra fields ``ssl``, ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_keyfile``,
    ``ssl_certfile``, ``ssl_check_hostname``. The password is registered with the masker first."""
    from airflow_provider_agora._compat import mask_secret

    extra = conn.extra_dejson if conn.extra else {}
    password = None if str(conn.password).lower() in ("none", "false", "") else conn.password
    if password:
        mask_secret(password)
    try:
        db = int(extra.get("db") or conn.schema or 0)
    except (TypeError, ValueError):
        raise AgoraConfigurationError(
            f"Redis connection {conn_id!r} has db {extra.get('db')!r}: use a database number such as 0."
        ) from None
    cert_reqs = extra.get("ssl_cert_reqs")
    if cert_reqs in (None, ""):
        cert_reqs = DEFAULT_SSL_CERT_REQS
    elif not isinstance(cert_reqs, str) or cert_reqs.strip().lower() not in SSL_CERT_REQS:
        raise AgoraConfigurationError(
            f"Extra field 'ssl_cert_reqs' of Redis connection {conn_id!r} must be one of "
            f"{', '.join(SSL_CERT_REQS)}, got {cert_reqs!r}."
        )
    return RedisSettings(
        conn_id=conn_id,
        host=conn.host or "localhost",
        port=int(conn.port or 6379),
        db=db,
        ssl=bool(_redis_flag(conn_id, "ssl", extra.get("ssl"))),
        username=conn.login or None,
        password=password,
        ssl_cert_reqs=cert_reqs.strip().lower(),
        ssl_ca_certs=_redis_path(conn_id, "ssl_ca_certs", extra.get("ssl_ca_certs")),
        ssl_keyfile=_redis_path(conn_id, "ssl_keyfile", extra.get("ssl_keyfile")),
        ssl_certfile=_redis_path(conn_id, "ssl_certfile", extra.get("ssl_certfile")),
        ssl_check_hostname=_redis_flag(conn_id, "ssl_check_hostname", extra.get("ssl_check_hostname")),
    )


def key_prefix(customer_id: str) -> str:
    """Per account; a hash, so the Customer ID itself is not in Redis. The braces keep an account's
    keys in one Redis Cluster slot, as one script needs."""
    digest = hashlib.sha256(customer_id.encode()).hexdigest()[:16]
    return f"airflow-provider-agora:{{{digest}}}"


def client_options(redis: RedisSettings) -> dict[str, Any]:
    """redis-py's ``Redis(...)`` arguments for ``redis`` (sync or asyncio). The TLS options only
    with ``ssl``, as redis-py reads them only then; ``ssl_check_hostname`` only when the connection
    sets it, so redis-py's default applies otherwise, as with Airflow's redis provider."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: dict[str, Any] = {
        "host": redis.host,
        "port": redis.port,
        "db": redis.db,
        "username": redis.username,
        "password": redis.password,
        "ssl": redis.ssl,
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),  # one short try: the fallback is the retry
    }
    if redis.ssl:
        options.update(
            ssl_cert_reqs=redis.ssl_cert_reqs,
            ssl_ca_certs=redis.ssl_ca_certs,
            ssl_keyfile=redis.ssl_keyfile,
            ssl_certfile=redis.ssl_certfile,
        )
        if redis.ssl_check_hostname is not None:
            options["ssl_check_hostname"] = redis.ssl_check_hostname
    return options


@functools.cache
def redis_down_errors() -> tuple[type[BaseException], ...]:
    """What "Redis is down" looks like, the same for the sync and the async client: redis-py's own
    errors, and the operating system's that it leaves unwrapped (a reset or timed-out socket;
    asyncio's timeout, an ``OSError`` only from Python 3.11 on)."""
    import redis

    return (redis.RedisError, OSError, asyncio.TimeoutError)


def async_client(settings: RedisSettings, *, block_ms: int) -> Any:
    """An asyncio Redis client for blocking stream reads of up to ``block_ms``: decoded answers, one
    short try per command (the caller retries), an asyncio ``Retry`` for the asyncio client."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options = {
        **client_options(settings),
        "socket_timeout": block_ms / 1000 + 5,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
    }
    return redis.asyncio.Redis(**options)
