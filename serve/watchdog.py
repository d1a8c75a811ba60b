"""Bring back a model whose Python backend stub died; TritonServer runs one by default.

Measured on Triton 2.51 (the nvidia-pytriton wheel): a killed stub is never restarted. The
model stays READY while every request to it fails after ~1 s with "Stub process ... is not
healthy", until the model is reloaded. A plain load of an unchanged model is a no-op, so the
watchdog reloads with the model's own config plus a changing parameter (RELOAD_MARKER): Triton
then starts a new instance and swaps it in (~0.3 s), requests to the old one finish first.

Dead, not retired: a stub also leaves when its instance goes away on purpose (an unload, or a
reload with fewer instances, as bench's config search does); Triton reaps that stub at once.
A stub that died on its own stays a zombie child of tritonserver, which never reaps it. Only
such a zombie, still one a moment later, counts as a crash.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import tritonclient.http as http

from serve import procs

if TYPE_CHECKING:
    from serve.server import TritonServer

# A config parameter no backend reads, set to the reload's time: what a reader of the served
# config sees, and why the reload is not a no-op. Named for this module: the watchdog put it there.
RELOAD_MARKER = "serve_watchdog_reloaded_at"
CONFIRM_S = 0.05  # a stub Triton stopped is reaped within this; a dead one stays a zombie


@dataclass
class Event:
    detected: float  # time.monotonic() when the dead stub was seen
    model: str
    reload_seconds: float
    error: str | None = None


class StubWatchdog:
    """A thread that polls the server's stubs every `interval` seconds, between start() and
    stop(). Needs the admin key: reloading is a model-control call."""

    def __init__(self, server: TritonServer, interval: float = 0.2):
        self.server = server
        self.interval = interval
        self.events: list[Event] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StubWatchdog:
        self._stop.clear()
        # The stubs as they are now, so that one dying before the first round is caught too.
        first = {s.pid: s for s in procs.stubs(self.server.process.pid)}
        self._thread = threading.Thread(
            target=self._run, args=(first,), name="stub-watchdog", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _ready(self) -> set[str]:
        return {m for m, (state, _) in self.server.model_states().items() if state == "READY"}

    def _reload(self, client: http.InferenceServerClient, model: str) -> None:
        config = client.get_model_config(model)
        stamp = datetime.now(UTC).isoformat(timespec="microseconds")
        config.setdefault("parameters", {})[RELOAD_MARKER] = {"string_value": stamp}
        client.load_model(model, headers=self.server.admin_headers, config=json.dumps(config))

    def _run(self, seen: dict[int, procs.Stub]) -> None:
        client = http.InferenceServerClient(self.server.http_url, network_timeout=60)
        try:
            while not self._stop.wait(self.interval):
                try:
                    seen = self._check(client, seen)
                except Exception:  # server stopping or unreachable: look again next round
                    seen = {}
        finally:
            client.close()

    def _check(self, client, seen: dict[int, procs.Stub]) -> dict[int, procs.Stub]:
        """Reload the models whose stubs in `seen` died; return the stubs now alive, by pid."""
        process = self.server.process
        if process is None:
            return {}
        now = {s.pid: s for s in procs.stubs(process.pid)}
        gone = [s for pid, s in seen.items() if pid not in now]
        if not gone:
            return now
        time.sleep(CONFIRM_S)
        dead = {s.model for s in gone if procs.zombie_child(s.pid, process.pid)}
        # An unloaded model's stubs leave too: only a READY model lost one by a crash.
        for model in sorted(dead & self._ready()) if dead else ():
            self._restore(client, model)
        return {s.pid: s for s in procs.stubs(process.pid)}

    def _restore(self, client: http.InferenceServerClient, model: str) -> None:
        detected = time.monotonic()
        error = None
        try:
            self._reload(client, model)
        except Exception as e:  # reported in events; the watchdog keeps watching
            error = str(e)
        event = Event(detected, model, time.monotonic() - detected, error)
        self.events.append(event)
        outcome = f"reloaded in {event.reload_seconds:.2f}s" if error is None else error
        print(
            f"serve: {self.server.label}watchdog: {model}'s Python stub died; {outcome}",
            file=sys.stderr,
            flush=True,
        )
