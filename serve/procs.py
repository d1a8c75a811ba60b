"""What /proc says about a tritonserver and its Python backend stubs (psutil is not installed)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

STUB_BINARY = "triton_python_backend_stub"


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str
    instance: str  # Triton's instance name, e.g. default_preprocess_0_0


def children(pid: int) -> list[int]:
    kids = []
    # Each thread lists the children it forked; tritonserver forks stubs from several threads.
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(p) for p in listing.read_text().split()]
        except OSError:
            continue
    return kids


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM `process` (started with start_new_session), SIGKILL its group after `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command name (state, ppid, ...), None if `pid` is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the command name may contain spaces


def alive(pid: int) -> bool:
    """Running, not a zombie: tritonserver leaves a killed stub unreaped."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def zombie_child(pid: int, parent: int) -> bool:
    """`pid` exited and `parent` has not reaped it: how a stub that died looks to Triton 2.51."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] == "Z" and fields[1] == str(parent)


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def stubs(server_pid: int) -> list[Stub]:
    """The live stubs of this server only: other servers' stubs on this machine are not ours."""
    found = []
    for pid in children(server_pid):
        if not alive(pid):
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        # argv: stub, <repo>/<model>/<version>/<file>, shm region, 2 sizes, parent pid,
        # library dir, ipc size, instance name, ...
        if Path(argv[0]).name == STUB_BINARY and len(argv) > 8:
            found.append(Stub(pid, Path(argv[1]).parent.parent.name, argv[8]))
    return found


def tree_rss(server_pid: int) -> dict[str, int]:
    """RSS in bytes of the server and of each stub instance, by name."""
    rss = {"tritonserver": rss_bytes(server_pid)}
    for stub in stubs(server_pid):
        rss[stub.instance] = rss_bytes(stub.pid)
    return rss
