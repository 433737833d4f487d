"""Keeping live plots cheap: time and byte-rate throttles, a decimating series buffer (O(1) amortized per point)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


class Throttle:
    """``ready()`` is True at most once per ``interval`` seconds of ``clock``."""

    def __init__(self, interval: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self._last = -float("inf")

    def ready(self) -> bool:
        now = self.clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True


class Decimator:
    """A growing series kept as at most ``max_points`` samples at a power-of-two stride, plus its last point.

    When the kept samples overflow, every other one is dropped and the stride doubles, so each
    point costs O(1) amortized and ``arrays()`` costs O(max_points), whatever the history length.
    """

    def __init__(self, max_points: int = 1000) -> None:
        self.max_points = max_points
        self.stride = 1
        self.seen = 0
        self.version = 0  # bumps on every change, so views resend only what changed
        self._xs: list[float] = []
        self._ys: list[float] = []
        self._last: tuple[float, float] | None = None

    def add(self, x: float, y: float | None) -> None:
        if y is None:
            return
        if self.seen % self.stride == 0:
            self._xs.append(x)
            self._ys.append(y)
            if len(self._xs) > self.max_points:
                del self._xs[1::2], self._ys[1::2]
                self.stride *= 2
        self.seen += 1
        self._last = (x, y)
        self.version += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of the kept samples and the latest point (compact arrays, sent as binary buffers)."""
        xs, ys = self._xs, self._ys
        if self._last is not None and (not xs or xs[-1] != self._last[0]):
            xs, ys = xs + [self._last[0]], ys + [self._last[1]]
        return np.asarray(xs, dtype=np.int32), np.asarray(ys, dtype=np.float32)


class RateLimit:
    """``ready()`` at most every ``interval`` s, no more often than keeps ``sent(bytes)`` under ``rate`` B/s, and
    (with ``share``) no more often than keeps the time the sends took under that share of the wall time."""

    def __init__(self, interval: float, rate: float, clock: Callable[[], float] = time.monotonic,
                 share: float | None = None) -> None:
        self.interval, self.rate, self.clock, self.share = interval, rate, clock, share
        self.next = -float("inf")

    def ready(self) -> bool:
        return self.clock() >= self.next

    def sent(self, n_bytes: int, seconds: float = 0.0) -> None:
        """Record a send of ``n_bytes`` that took ``seconds`` to make, now: the next one waits
        ``max(interval, n_bytes / rate, seconds / share)``."""
        now = self.clock()
        self.next = now + max(self.interval, n_bytes / self.rate, seconds / self.share if self.share else 0.0)
