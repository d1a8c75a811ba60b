"""A bounded closed-loop load of answer-checked requests, retried as the client retries.

Threads, each sending Probes through client.connection.Triton (the client's own code), over
HTTP and gRPC alternately. Bounded by a deadline and a request cap; loopback only. Retries
follow the client's Policy and its transient errors (client.connection.is_transient, which
covers restarts and crashed stubs); each record says whether the client would have lost it.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from bench.stats import percentile
from client.connection import Policy, Triton, describe, is_transient
from reliability.errors import ReliabilityError
from reliability.reference import Probe
from serve.server import TritonServer, is_loopback


@dataclass
class Record:
    start: float
    end: float
    ok: bool
    attempts: int
    # (when, what, whether the client as it is would retry it), one per failed attempt
    errors: list[tuple[float, str, bool]] = field(default_factory=list)

    @property
    def lost_as_is(self) -> bool:
        """Lost by the client's own retry rules (client.connection.is_transient)."""
        return not self.ok or any(not transient for _, _, transient in self.errors)


class Load:
    """`with Load(server, probes, concurrency, seconds) as load:` runs until the deadline,
    `max_requests`, or the end of the block, whichever comes first."""

    def __init__(
        self,
        server: TritonServer,
        probes: list[Probe],
        concurrency: int,
        seconds: float,
        *,
        policy: Policy | None = None,  # default: the client's
        max_requests: int = 50_000_000,
        protocols: tuple[str, ...] = ("http", "grpc"),
    ):
        if not is_loopback(server.client_host):
            raise ReliabilityError(f"{server.client_host}: the load only targets loopback")
        self.policy = policy = policy or Policy()
        self.targets = [Triton(server.http_url, "http", policy)] if "http" in protocols else []
        if "grpc" in protocols:
            self.targets.append(Triton(server.grpc_url, "grpc", policy))
        self.probes = probes
        self.concurrency = concurrency
        self.seconds = seconds
        self.max_requests = max_requests
        self.records: list[Record] = []
        self._count = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _one(self, triton: Triton, probe: Probe) -> Record:
        record = Record(time.monotonic(), 0.0, False, 0)
        for attempt in range(self.policy.retries + 1):
            record.attempts += 1
            try:
                probe.send(triton)
                record.ok = True
                break
            except Exception as e:  # counted, never raised: the load must go on
                what = f"{type(e).__name__}: {describe(e)}"
                transient = is_transient(e)
                record.errors.append((time.monotonic(), what, transient))
                if not transient or attempt == self.policy.retries:
                    break
            # Not cut short by stop: a request ends with its retries, as a client's would.
            time.sleep(self.policy.backoff * 2**attempt)
        record.end = time.monotonic()
        return record

    def _worker(self, index: int, deadline: float) -> None:
        triton = self.targets[index % len(self.targets)]
        while not self._stop.is_set() and time.monotonic() < deadline:
            n = next(self._count)
            if n >= self.max_requests:
                break
            record = self._one(triton, self.probes[n % len(self.probes)])
            self.records.append(record)
            if not record.ok:
                time.sleep(0.01)  # a server that refuses fast must not turn this into a spin

    def __enter__(self) -> Load:
        deadline = time.monotonic() + self.seconds
        self._threads = [
            threading.Thread(target=self._worker, args=(i, deadline), daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def wait(self) -> None:
        """Until the deadline or the request cap."""
        for thread in self._threads:
            thread.join()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        p = self.policy
        longest = (p.retries + 1) * p.timeout + p.window
        for thread in self._threads:
            thread.join(longest)
        for target in self.targets:
            target.close()


def summary(records: list[Record], since: float | None = None) -> dict:
    """Counts and latency of records, and when attempt-level errors last happened."""
    picked = [r for r in records if since is None or r.end >= since]
    latencies = sorted(1e3 * (r.end - r.start) for r in picked if r.ok)
    errors = [e for r in picked for e in r.errors]
    failed = [r for r in picked if not r.ok]
    return {
        "requests": len(picked),
        "failed": len(failed),
        "retried": sum(1 for r in picked if r.ok and r.attempts > 1),
        "lost_as_is": sum(1 for r in picked if r.lost_as_is),
        "attempt_errors": len(errors),
        "last_error_at": max((t for t, _, _ in errors), default=None),
        "first_failure": failed[0].errors[-1][1] if failed else None,
        "p50_ms": percentile(latencies, 50) if latencies else None,
        "p99_ms": percentile(latencies, 99) if latencies else None,
    }
