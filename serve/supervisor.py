"""Restart a tritonserver that died on its own; TritonServer runs one by default.

Seen here: Triton 2.51's Python backend aborts the whole server
(`boost::interprocess::lock_exception`) when a stub is killed while it holds the backend's IPC
lock. Nothing else would bring that server back. The supervisor starts it again on the same
ports and repository, with a growing pause between attempts, and gives up after
`max_restarts` within `window` seconds: a server that keeps dying needs a person, not a loop.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serve.errors import ServerError

if TYPE_CHECKING:
    from serve.server import TritonServer


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5  # within `window` seconds; the next death ends the server for good
    window: float = 600.0
    backoff: float = 0.5  # seconds before the first restart, doubled for each next one
    max_backoff: float = 30.0
    interval: float = 0.2  # how often the process is looked at


DEFAULT_RESTARTS = RestartPolicy()


@dataclass
class Restart:
    died: float  # time.monotonic() when the exit was seen
    code: int  # the exit code; negative: killed by that signal
    pid: int | None = None  # the new server's pid, once it is ready
    ready_seconds: float | None = None  # from `died` to ready again
    error: str | None = None  # why this attempt failed


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """A thread that watches `server.process` between start() and the server's stop()."""

    def __init__(self, server: TritonServer, policy: RestartPolicy = DEFAULT_RESTARTS):
        self.server = server
        self.policy = policy
        self.restarts: list[Restart] = []
        self.gave_up: ServerError | None = None
        self._done = threading.Event()  # set when the server is down for good
        self._thread: threading.Thread | None = None

    def start(self) -> Supervisor:
        self.gave_up = None
        self._done.clear()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def join(self) -> None:
        """After the server's stop was requested: the thread ends within one interval, or once
        a launch in flight sees its process terminated."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._done.set()

    def wait(self) -> None:
        """Block until the server is down for good: ServerError if the supervisor gave up."""
        self._done.wait()
        if self.gave_up is not None:
            raise self.gave_up

    def _say(self, text: str) -> None:
        print(f"serve: {self.server.label}supervisor: {text}", file=sys.stderr, flush=True)

    def _run(self) -> None:
        stopping = self.server.stopping
        try:
            while not stopping.wait(self.policy.interval):
                process = self.server.process
                if process is not None and process.poll() is not None:
                    self._recover(process.returncode)
                    if self.gave_up is not None:
                        return
        finally:
            self._done.set()

    def _recent(self, now: float) -> int:
        return sum(1 for r in self.restarts if now - r.died <= self.policy.window)

    def _recover(self, code: int) -> None:
        """Restart until a server is ready, the budget is spent, or stop is requested."""
        server, policy = self.server, self.policy
        died = time.monotonic()
        why = "; ".join(filter(None, [describe_exit(code), server.crash_cause()]))
        self._say(f"tritonserver (pid {server.process.pid}) died: {why}")
        server.keep_log()
        while not server.stopping.is_set():
            attempt = self._recent(died) + 1
            if attempt > policy.max_restarts:
                self.gave_up = ServerError(
                    f"tritonserver died ({why}); its {policy.max_restarts} restarts within "
                    f"{policy.window:.0f}s are spent: giving up"
                )
                self._say(str(self.gave_up))
                return
            pause = min(policy.backoff * 2 ** (attempt - 1), policy.max_backoff)
            self._say(
                f"restart {attempt} of {policy.max_restarts} in {pause:.1f}s "
                f"(the dead server's log: {server.log_file.name}.1)"
            )
            restart = Restart(died, code)
            self.restarts.append(restart)
            if server.stopping.wait(pause):
                return
            try:
                server.relaunch()
            except ServerError as e:
                restart.error = str(e).splitlines()[0].removesuffix(f"; {server.log_file}:")
                self._say(f"restart {attempt} failed: {restart.error}")
                continue
            restart.pid = server.process.pid
            restart.ready_seconds = time.monotonic() - died
            self._say(
                f"tritonserver is back (pid {restart.pid}), ready "
                f"{restart.ready_seconds:.1f}s after it died"
            )
            return
