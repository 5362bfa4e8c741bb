"""Agora's API for the triggerer: one ``httpx.AsyncClient`` per Agora account for the whole process.

A triggerer runs thousands of waits on one event loop. They share one client per account
(keep-alive connections, no new TLS session per poll) and the account's request spacer, so all
waits together stay inside Agora's 10 requests per second and are served in turn. Everything
about requests and answers comes from the same functions the sync hook uses; only the bytes move
differently. ``httpx`` is a core dependency of every supported Airflow.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from airflow_provider_agora._api import JSON_HEADERS, Endpoint, interpret_response, session_endpoint
from airflow_provider_agora._rate_limit import spacer_for
from airflow_provider_agora._retry import RetryPolicy
from airflow_provider_agora._settings import AgoraSettings
from airflow_provider_agora.exceptions import AgoraConnectError, AgoraTimeoutError, AgoraTransportError

log = logging.getLogger(__name__)


class AsyncAgoraClient:
    """Sends ``query`` requests for every wait of one Agora account in this process."""

    def __init__(self, settings: AgoraSettings, retry_policy: RetryPolicy | None = None) -> None:
        import httpx

        from airflow_provider_agora.hooks.agora import USER_AGENT

        self.settings = settings
        self.retry_policy = retry_policy or RetryPolicy()
        self._spacer = spacer_for(settings.customer_id, settings.max_requests_per_second)
        self._base_url_index = 0
        self._http = httpx.AsyncClient(
            headers={**JSON_HEADERS, "User-Agent": USER_AGENT, "Authorization": settings.authorization},
            timeout=settings.timeout,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
        )

    @property
    def base_url(self) -> str:
        return self.settings.base_urls[self._base_url_index]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, resource_id: str, sid: str, recording_mode: str, app_id: str | None) -> dict[str, Any]:
        import tenacity

        chosen_app_id = app_id or self.settings.app_id or ""
        endpoint = session_endpoint("query", chosen_app_id, resource_id, sid, recording_mode)
        async for attempt in tenacity.AsyncRetrying(**self.retry_policy.tenacity_arguments(log)):
            with attempt:  # a retry does not queue again behind every other wait
                first = attempt.retry_state.attempt_number == 1
                return await self._send_once(endpoint, sid, queue=first)
        raise AssertionError("tenacity ends with a result or an exception")

    async def _send_once(self, endpoint: Endpoint, sid: str, *, queue: bool = True) -> dict[str, Any]:
        import httpx

        url = self.base_url + endpoint.path
        host = url.split("/v1/")[0]
        try:
            async with self._spacer.asending(queue=queue):
                response = await self._http.request(endpoint.method, url)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            self._fail_over()
            raise AgoraConnectError(
                f"Could not connect to {host} for Agora {endpoint.operation} for recording sid={sid}: "
                f"{type(error).__name__}.",
                url=url,
                operation=endpoint.operation,
            ) from error
        except httpx.TimeoutException as error:
            raise AgoraTimeoutError(
                f"Agora {endpoint.operation} for recording sid={sid} got no complete answer from {host} within "
                f"{self.settings.timeout:g} s: {type(error).__name__}.",
                url=url,
                operation=endpoint.operation,
            ) from error
        except httpx.TransportError as error:
            raise AgoraTransportError(
                f"The connection to {host} broke during Agora {endpoint.operation} for recording sid={sid}: "
                f"{type(error).__name__}.",
                url=url,
                operation=endpoint.operation,
            ) from error
        log.debug("Agora %s %s -> HTTP %s", endpoint.method, endpoint.path, response.status_code)
        return interpret_response(endpoint.operation, response.status_code, response.headers, response.content, sid=sid)

    def _fail_over(self) -> None:
        if len(self.settings.base_urls) > 1:
            previous = self.base_url
            self._base_url_index = (self._base_url_index + 1) % len(self.settings.base_urls)
            log.warning("Cannot reach %s; switching to %s.", previous, self.base_url)


# One client per account and API host, per event loop (an httpx client belongs to one loop).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, tuple[str, ...]], AsyncAgoraClient]]
_clients = weakref.WeakKeyDictionary()


def shared_client(settings: AgoraSettings) -> AsyncAgoraClient:
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    key = (settings.customer_id, settings.base_urls)
    client = per_loop.get(key)
    if client is None or client.settings != settings:
        client = per_loop[key] = AsyncAgoraClient(settings)
    return client
