"""Who else used the CPU during a measurement: /proc/stat minus our own process tree.

"Ours" is this process, its live descendants (tritonserver and its Python stubs, uvicorn,
perf_analyzer, the pytest-benchmark child) and the children it has already reaped (their
time is folded into our cutime/cstime). Everything else busy on the machine is "other".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from serve.procs import stat_fields, stubs

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic()
    busy: int  # machine-wide busy jiffies (all CPUs)
    ours: int  # jiffies of our process tree
    client: int  # jiffies of this process alone: the load generator's own cost


def _machine_busy() -> int:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def _proc_table() -> dict[int, list[str]]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (f := stat_fields(entry.name)) is not None:
            table[int(entry.name)] = f
    return table


def _jiffies(f: list[str], children_too: bool) -> int:
    # fields after ")": state ppid ... utime(11) stime(12) cutime(13) cstime(14)
    own = int(f[11]) + int(f[12])
    return own + int(f[13]) + int(f[14]) if children_too else own


def _tree_jiffies(table: dict[int, list[str]], root: int) -> int:
    """utime+stime+cutime+cstime of `root` and of every live descendant."""
    children: dict[int, list[int]] = {}
    for pid, f in table.items():
        children.setdefault(int(f[1]), []).append(pid)
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if pid in table:
            total += _jiffies(table[pid], children_too=True)
        stack.extend(children.get(pid, ()))
    return total


def sample(root: int | None = None) -> Sample:
    # One read of /proc serves both figures, so "client" is never newer than "ours".
    table = _proc_table()
    own = table.get(os.getpid())
    client = _jiffies(own, children_too=False) if own else 0
    return Sample(
        time.monotonic(), _machine_busy(), _tree_jiffies(table, root or os.getpid()), client
    )


def load_between(a: Sample, b: Sample) -> dict:
    """CPU use between two samples, in cores (1.0 = one core fully busy)."""
    seconds = max(b.t - a.t, 1e-6)
    busy = (b.busy - a.busy) / CLOCK_TICKS / seconds
    ours = (b.ours - a.ours) / CLOCK_TICKS / seconds
    # A child that exits unreaped between samples loses its time from "ours": clamp at 0.
    other = max(busy - ours, 0.0)
    return {
        "seconds": round(seconds, 3),
        "cores": CORES,
        "busy_cores": round(busy, 3),
        "our_cores": round(min(ours, busy), 3),
        "other_cores": round(other, 3),
        "client_cores": round((b.client - a.client) / CLOCK_TICKS / seconds, 3),
    }


# A VM's host can slow its vCPUs without a trace inside the VM: steal time and other
# processes' CPU both read ~0 while the same work takes up to 1.9x longer (docs/bench.md, "A
# second machine whose speed moves under the bench"). A fixed loop timed before each point
# makes that visible; ratios between points taken at different speeds are not trustworthy.
PROBE_LOOPS = 300_000
HOST_DRIFT = 1.25  # slowest / fastest probe of a run above which the report warns


def speed_probe() -> float:
    """Milliseconds this core takes for a fixed pure-Python loop (~20 ms on a free core)."""
    start = time.perf_counter()
    total = 0
    for i in range(PROBE_LOOPS):
        total += i * i
    return (time.perf_counter() - start) * 1e3


def is_busy(load: dict, busy_cores: float) -> bool:
    return load["other_cores"] > busy_cores


def cpu_by_model(server_pid: int) -> dict[str, int]:
    """Jiffies a tritonserver used itself ("tritonserver": HTTP/gRPC, scheduling, ensembles)
    and those of its Python backend stubs, summed by model: where a request's CPU went."""
    own = stat_fields(server_pid)
    out = {"tritonserver": _jiffies(own, children_too=False) if own else 0}
    for stub in stubs(server_pid):
        if (f := stat_fields(stub.pid)) is not None:
            out[stub.model] = out.get(stub.model, 0) + _jiffies(f, children_too=False)
    return out


def cores_between(a: dict[str, int], b: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU cores each entry of two cpu_by_model() readings used in between."""
    # a restarted stub starts from 0 again: clamp, rather than report negative use
    return {k: round(max(b[k] - a.get(k, 0), 0) / CLOCK_TICKS / max(seconds, 1e-6), 3) for k in b}
