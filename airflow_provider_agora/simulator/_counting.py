"""Counting requests the way Agora's rate limit does: in any sliding one-second window."""

from __future__ import annotations

from collections.abc import Iterable


def max_in_sliding_second(times: Iterable[float]) -> int:
    """The most requests that fall in any one-second window (measured at arrival).

    Shared by the tests and the benchmarks, so that both count exactly as the simulator limits.
    """
    ordered = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best
