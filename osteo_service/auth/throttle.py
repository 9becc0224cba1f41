"""Sign-in attempts, limited per account name and per client address in a sliding window: an attempt over
either limit is refused before any password is checked (429), so a guesser gets a handful of tries per
window and the argon2 work stays bounded. In memory, per worker process: with N workers a name gets at
most N times its limit (docs/service.md)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

MAX_KEYS = 100_000  # a flood of made-up names cannot grow the table without bound


class Throttle:
    def __init__(self, per_user: int, per_address: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = {"user": per_user, "address": per_address}
        self.window_s, self.clock = window_s, clock
        self.seen: dict[tuple[str, str], deque[float]] = {}
        self.lock = threading.Lock()

    def admit(self, user: str, address: str) -> float | None:
        """None: the attempt is counted and may be checked; else the seconds until one would be admitted."""
        keys = [("user", user.strip().lower()), ("address", address)]
        with self.lock:
            now = self.clock()
            waits = [self._wait(key, now) for key in keys]
            if any(w is not None for w in waits):
                return max(w for w in waits if w is not None)
            if len(self.seen) >= MAX_KEYS:
                self._forget_old(now)
            for key in keys:
                self.seen.setdefault(key, deque()).append(now)
            return None

    def _wait(self, key: tuple[str, str], now: float) -> float | None:
        times = self.seen.get(key)
        if not times:
            return None
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if len(times) < self.limits[key[0]]:
            return None
        return self.window_s - (now - times[0])

    def forget_user(self, user: str) -> None:
        """A correct password clears the name's count (never the address's)."""
        with self.lock:
            self.seen.pop(("user", user.strip().lower()), None)

    def _forget_old(self, now: float) -> None:
        for key in [k for k, t in self.seen.items() if not t or now - t[-1] >= self.window_s]:
            del self.seen[key]
