"""Rate limits for what strangers can ask of a coordinator: token buckets by key.

Registration and leasing are limited per worker key, per declared owner and
per source network (/24 or /48), so that neither one key, nor many keys of one
operator, nor many keys from one network can flood the grid. The buckets live
in the process: a grid of several coordinator processes multiplies them by the
number of processes, which an operator sets the limits for.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from coopgrid.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """One bucket per key: ``burst`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, what: str, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.what = what
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one request of ``key``'s bucket, or raise RateLimited saying when to come back."""
        if self.rate <= 0 or not key:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._forget_full(now)
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1:
                wait = (1 - bucket.tokens) / self.rate
                raise RateLimited(
                    f"too many {self.what} (limit {_per(self.rate)}, bursts of {self.burst:g}); "
                    f"try again in {wait:.0f}s",
                    retry_after=max(1, round(wait)),
                )
            bucket.tokens -= 1

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (they hold no state worth keeping)."""
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:  # every key busy: forget the oldest half
            for key in sorted(self._buckets, key=lambda k: self._buckets[k].stamp)[: self.max_keys // 2]:
                del self._buckets[key]


def _per(rate: float) -> str:
    if rate >= 1:
        return f"{rate:g}/s"
    if rate * 60 >= 1:
        return f"{rate * 60:g}/min"
    return f"{rate * 3600:g}/hour"
