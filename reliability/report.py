"""Plain-text tables for the terminal and JSON files for the record."""

from __future__ import annotations

import json
from pathlib import Path

from contract.atomic import atomic_write_text


def table(rows: list[dict], columns: list[tuple[str, str]], width: int = 80) -> str:
    """`columns` are (key, title); cells are cut to `width` characters."""
    cells = [[title for _, title in columns]]
    for row in rows:
        cells.append([_cell(row.get(key), width) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value, width: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def write_json(path: Path, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def plot_soak(path: Path, samples: list[dict], windows: list[dict], warmup_s: float) -> Path:
    """RSS by process over time above p99 latency and throughput per window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    t = [s["t"] for s in samples]
    top.plot(t, [s["total_mb"] for s in samples], color="black", lw=2, label="sum")
    for name in samples[-1]["mb"]:
        top.plot(t, [s["mb"].get(name, float("nan")) for s in samples], lw=1, label=name)
    top.axvline(warmup_s, color="grey", ls="--", lw=1, label="end of warm-up")
    top.set_ylabel("RSS (MB)")
    top.set_title("tritonserver + Python stubs: resident memory")
    top.legend(fontsize=7, loc="center right")
    mid = [w["t"] for w in windows]
    bottom.plot(mid, [w["p99_ms"] for w in windows], color="tab:red", label="p99 latency")
    bottom.set_ylabel("p99 latency (ms)", color="tab:red")
    bottom.set_xlabel("seconds")
    rate = bottom.twinx()
    rate.plot(mid, [w["rps"] for w in windows], color="tab:blue", lw=1, label="requests/s")
    rate.set_ylabel("requests/s", color="tab:blue")
    errors = [w for w in windows if w["failed"]]
    if errors:
        bottom.scatter([w["t"] for w in errors], [w["p99_ms"] for w in errors], color="k",
                       marker="x", label="failed requests")  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
