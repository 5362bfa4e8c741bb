"""Resetting what this process keeps between tasks, for the tests of DAGs that use the provider.

A worker or triggerer process keeps, for its lifetime: one request budget per Agora account
(in-process, and its share of the one in Redis), the receiver's connections and Redis clients and
its once-a-minute warnings, and, per event loop, one HTTP client per account and one notification
reader per account. A test that changes connections, Redis or the clock between two runs starts
from a clean process with these two functions; a deployment never needs them.
"""

from __future__ import annotations

__all__ = ["areset_process_state", "reset_process_state"]


def reset_process_state() -> None:
    """Forget the request budgets, closing their Redis connections, and the receiver's
    connections, stores and warnings, as a fresh process would start. Nothing is imported that
    this process has not used."""
    import sys

    from airflow_provider_agora._client.budget import forget_spacers

    forget_spacers()
    if "airflow_provider_agora._client.shared_budget" in sys.modules:
        from airflow_provider_agora._client.shared_budget import close_shared_budgets

        close_shared_budgets()
    if "airflow_provider_agora._ncs.receiver_connections" in sys.modules:
        from airflow_provider_agora._ncs.receiver_connections import forget_connections

        forget_connections()
    if "airflow_provider_agora._ncs.receiver" in sys.modules:
        from airflow_provider_agora._ncs.receiver import forget_complaints

        forget_complaints()


async def areset_process_state() -> None:
    """``reset_process_state``, after closing what the running event loop holds: the async hooks'
    shared HTTP clients and the notification readers (waits still following one hear nothing more)."""
    import sys

    if "airflow_provider_agora.hooks.agora" in sys.modules:
        from airflow_provider_agora.hooks.agora import AgoraAsyncHook

        await AgoraAsyncHook.close_shared_clients()
    if "airflow_provider_agora._ncs.reader" in sys.modules:
        from airflow_provider_agora._ncs.reader import close_readers

        await close_readers()
    reset_process_state()
