"""What the Kubernetes client spends: its API requests counted by verb and resource, and
the token bucket that bounds their rate (--kube-qps). Plain values: no `kubernetes` here.
"""

from __future__ import annotations

import threading
import time
from collections import Counter


class RequestCounts:
    """The API requests one client made, by verb and resource (thread-safe): every HTTP
    request counts once (a retry too, each page of a list, one watch however many events it
    brings, one exec however many probes its batch holds)."""

    VERBS = ("get", "list", "watch", "create", "replace", "delete", "exec")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, verb: str, resource: str) -> None:
        with self._lock:
            self._counts[(verb, resource)] += 1

    def counts(self) -> dict[tuple[str, str], int]:
        """(verb, resource plural) -> requests."""
        with self._lock:
            return dict(self._counts)

    def total(self, verb: str | None = None, resource: str | None = None) -> int:
        return sum(
            n
            for (v, r), n in self.counts().items()
            if (verb is None or v == verb) and (resource is None or r == resource)
        )

    def by_verb(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (verb, _), n in self.counts().items():
            out[verb] = out.get(verb, 0) + n
        return {v: out[v] for v in [*self.VERBS, *sorted(set(out) - set(self.VERBS))] if v in out}

    def summary(self) -> str:
        """One line: "57 API requests (list 20, watch 2, create 12, delete 12, exec 3)"."""
        verbs = ", ".join(f"{v} {n}" for v, n in self.by_verb().items())
        return f"{self.total()} API requests" + (f" ({verbs})" if verbs else "")


class RateLimit:
    """A token bucket: `qps` requests a second on average, `burst` at once (client-go's
    flowcontrol limiter). Every request the client makes takes a token first."""

    def __init__(self, qps: float, burst: int | None = None) -> None:
        if not qps > 0:
            raise ValueError(f"queries per second must be positive, got {qps:g}")
        self.qps = qps
        self.burst = burst if burst is not None else max(1, int(qps * 2))
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds requests spent waiting for a token, in all

    def take(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.qps if self._tokens < 0 else 0.0
            self.waited += wait
        if wait > 0:
            time.sleep(wait)
