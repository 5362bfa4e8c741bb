"""One retry policy for every Agora request, sync or async.

What is retried is decided by ``AgoraError.retryable`` alone (429, 5xx, HTTP 206 with code 65,
connection errors and timeouts); 4xx other than 429 never are. Waits grow exponentially with
jitter and never undercut a ``Retry-After``. Tenacity is imported on first use only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_agora.exceptions import AgoraError, AgoraRateLimitError

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState, Retrying

__all__ = ["RetryPolicy"]


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, AgoraError) and error.retryable


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one logical request.

    Bounded both in attempts and in total time, so a poke never outlives its interval by much.
    """

    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0
    max_total_seconds: float = 120.0

    def retrying(self, log: logging.Logger) -> Retrying:
        """The retry loop of the sync hook."""
        import tenacity

        return tenacity.Retrying(**self._tenacity_arguments(log))

    def async_retrying(self, log: logging.Logger) -> AsyncRetrying:
        """The same loop for the async hook."""
        import tenacity

        return tenacity.AsyncRetrying(**self._tenacity_arguments(log))

    def _tenacity_arguments(self, log: logging.Logger) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying`` and ``tenacity.AsyncRetrying`` alike."""
        import tenacity

        # Exponential growth plus up to one initial delay of jitter, so that waiters spread out.
        backoff = tenacity.wait_exponential(multiplier=self.initial_delay, max=self.max_delay) + tenacity.wait_random(
            0, self.initial_delay
        )

        def wait(state: RetryCallState) -> float:
            delay = float(backoff(state))
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, AgoraRateLimitError) and error.retry_after is not None:
                delay = max(delay, error.retry_after)
            return delay

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "Attempt %d of %d failed: %s Retrying in %.1f s.",
                state.attempt_number,
                self.max_attempts,
                error,
                state.next_action.sleep if state.next_action else 0.0,
            )

        return {
            "stop": tenacity.stop_after_attempt(self.max_attempts) | tenacity.stop_after_delay(self.max_total_seconds),
            "wait": wait,
            "retry": tenacity.retry_if_exception(is_retryable),
            "before_sleep": before_sleep,
            "reraise": True,
        }
