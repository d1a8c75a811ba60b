"""Run the bad-input kinds against one server; after each, check that it is still healthy."""

from __future__ import annotations

import time

import numpy as np
from tritonclient.utils import InferenceServerException

from reliability.kinds import Context, Kind, send_image
from reliability.reference import encode

COLUMNS = [
    ("kind", "kind"),
    ("group", "group"),
    ("expect", "expect"),
    ("verdict", "result"),
    ("seconds", "s"),
    ("detail", "detail"),
]


def unhealthy(ctx: Context, probe: bytes) -> str | None:
    """Why the server is not healthy, or None: alive, ready, and right on `probe`."""
    if ctx.server.process.poll() is not None:
        return f"tritonserver exited with code {ctx.server.process.returncode}"
    try:
        if not ctx.http.is_server_ready():
            return "server not ready"
        down = [m for m in ctx.deployment.models if not ctx.http.is_model_ready(m)]
        if down:
            return f"not ready: {', '.join(down)}"
        got = send_image(ctx, probe)
    except (InferenceServerException, OSError) as e:
        return f"{type(e).__name__}: {e}"
    want = ctx.reference.of_image(probe)
    if np.argmax(got) != np.argmax(want) or not np.abs(got - want).max() <= 1e-3:
        return "wrong answer on a valid image"
    return None


def run_kind(ctx: Context, kind: Kind, probe: bytes) -> dict:
    start = time.monotonic()
    try:
        handled, detail = kind.check(ctx)
    except Exception as e:  # a kind that breaks the harness is a failed kind, not a crash
        handled, detail = False, f"harness error: {type(e).__name__}: {e}"
    problem = unhealthy(ctx, probe)
    if problem:
        handled, detail = False, f"{detail}; SERVER UNHEALTHY AFTER: {problem}"
    return {
        "kind": kind.name,
        "group": kind.group,
        "expect": kind.expect,
        "handled": handled,
        "verdict": "handled" if handled else "FAILED",
        "seconds": round(time.monotonic() - start, 2),
        "detail": detail,
    }


def run(ctx: Context, kinds: list[Kind]) -> list[dict]:
    probe = encode(ctx.image())
    problem = unhealthy(ctx, probe)
    if problem:
        raise RuntimeError(f"the server is not healthy before any bad input: {problem}")
    rows = []
    for kind in kinds:
        rows.append(run_kind(ctx, kind, probe))
        print(f"  {kind.name}: {rows[-1]['verdict']}", flush=True)
    return rows


def summary_line(rows: list[dict]) -> str:
    handled = sum(1 for r in rows if r["handled"])
    return f"chaos: {len(rows)} kinds, {handled} handled, {len(rows) - handled} failed"
