"""Bring back a model whose Python backend stub died; TritonServer runs one by default.

Measured on Triton 2.51 (the nvidia-pytriton wheel): a killed stub is never restarted. The
model stays READY while every request to it fails after ~1 s with "Stub process ... is not
healthy", until the model is reloaded. A plain load of an unchanged model is a no-op, so the
watchdog reloads with the model's own config plus a changing parameter: Triton then starts a
new instance and swaps it in (~0.3 s), requests to the old one finish first.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import tritonclient.http as http

from serve import procs

if TYPE_CHECKING:
    from serve.server import TritonServer

NONCE = "reliability_reload"  # a config parameter no backend reads


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
        self._thread = threading.Thread(target=self._run, name="stub-watchdog", daemon=True)
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
        config.setdefault("parameters", {})[NONCE] = {"string_value": str(time.time_ns())}
        client.load_model(model, headers=self.server.admin_headers, config=json.dumps(config))

    def _run(self) -> None:
        client = http.InferenceServerClient(self.server.http_url, network_timeout=60)
        seen: dict[str, procs.Stub] = {}
        try:
            while not self._stop.wait(self.interval):
                try:
                    seen = self._check(client, seen)
                except Exception:  # server stopping or unreachable: look again next round
                    seen = {}
        finally:
            client.close()

    def _check(self, client, seen: dict[str, procs.Stub]) -> dict[str, procs.Stub]:
        """Reload the models whose stubs in `seen` are gone; return the stubs now alive."""
        process = self.server.process
        if process is None:
            return {}
        now = {s.instance: s for s in procs.stubs(process.pid)}
        lost = {s.model for name, s in seen.items() if name not in now}
        if not lost:
            return now
        # An unloaded model's stubs leave too: only a READY model lost one by a crash.
        for model in sorted(lost & self._ready()):
            self._restore(client, model)
        return {s.instance: s for s in procs.stubs(process.pid)}

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
        print(f"serve: watchdog: {model}'s Python stub died; {outcome}", file=sys.stderr)
