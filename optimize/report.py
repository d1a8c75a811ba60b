"""optimize_report.{json,md} and the accuracy-versus-throughput picture."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from contract.atomic import atomic_write_json, atomic_write_text, staged_file  # noqa: E402

COLUMNS = (
    ("variant", "name", "{}"),
    ("target", "target", "{}"),
    ("prec.", "precision", "{}"),
    ("pruned", "pruned", "{}"),
    ("size KB", "size_bytes", "{:,.0f}"),
    ("params", "params", "{:,}"),
    ("MMACs", "mmacs", "{:.2f}"),
    ("engine", "engine", "{}"),
    ("top-1 %", "top1", "{:.2%}"),
    ("macro-F1", "macro_f1", "{:.4f}"),
    ("top-1 change (pts)", "top1_drop", "{:+.2f}"),
    ("F1 change (pts)", "macro_f1_change", "{:+.2f}"),
    ("HTER %", "hter", "{:.2%}"),
    ("HTER change (pts)", "hter_change", "{:+.2f}"),
    ("bs1 ms", "latency_ms_bs1", "{:.3f}"),
    ("bs8 img/s", "throughput_bs8", "{:,.0f}"),
    ("x fp32 ORT", "speedup_bs8", "{:.2f}"),
    ("ORT top-1", "onnxruntime_top1", "{:.2%}"),
    ("OV top-1", "openvino_top1", "{:.2%}"),
    ("ORT bs1 ms", "onnxruntime_bs1", "{:.3f}"),
    ("OV bs1 ms", "openvino_bs1", "{:.3f}"),
    ("ORT bs8", "onnxruntime_bs8", "{:,.0f}"),
    ("OV bs8", "openvino_bs8", "{:,.0f}"),
    ("deployed", "deployed", "{}"),
)


SERVED_INPUTS = {
    "uint8": "uint8 pixels, normalised inside the model",
    "float32": "float32, normalised by the sender",
}


def _cell(v: dict, key: str, fmt: str) -> str:
    value = v.get(key)
    if key == "size_bytes":
        value = value / 1024
    if key == "top1_drop" and value is not None:
        value = 0.0 - value  # shown as the change in top-1, so a loss reads negative
    return "-" if value is None else fmt.format(value)


def markdown(report: dict) -> str:
    b = report["bench"]
    lines = [
        f"# Optimize report: {report['model']}",
        "",
        f"Test split: {report['test_images']} images, evaluated on every engine that may serve "
        "each variant. "
        f"Gate: top-1 drop <= {report['max_accuracy_drop']} points versus FP32.",
        f"Timing: in-process, each engine with {b['threads']} thread(s) and one stream, "
        f"{b['rounds']} interleaved rounds of {b['seconds']} s per variant, engine and batch "
        "size; medians. Each variant serves on the fastest engine whose own test top-1 passes "
        "the gate, fastest by the geometric mean of its batch-1 and batch-8 images/s (a served "
        "model sees single images at low load and batches under load; ORT: ONNX Runtime, OV: "
        "OpenVINO; the TensorRT graph runs on ORT only, as the proxy for its INT8 accuracy).",
        "",
        "| " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for v in report["variants"]:
        lines.append("| " + " | ".join(_cell(v, key, fmt) for _, key, fmt in COLUMNS) + " |")
    lines.append("")
    for v in report["variants"]:
        if not v["deployed"]:
            lines.append(f"- `{v['name']}` not deployed: {v['why']}")
        elif v.get("engine_note"):
            lines.append(f"- `{v['name']}` serves on {v['engine']}: {v['engine_note']}")
    best = report.get("best_cpu_variant")
    if best:
        lines.append(
            f"- Best deployed CPU variant: `{best['name']}` (Triton model `{best['triton_model']}`)"
            f": {best['speedup_bs8']:.2f}x the FP32 throughput at batch 8, "
            f"top-1 drop {best['top1_drop']:.2f} points."
        )
    lines += ["", "## Steps", ""]
    p = report.get("prune")
    if p:
        lines.append(
            f"- Pruning ({p['importance']}, {'global' if p['global_pruning'] else 'uniform'}, "
            f"{p['target']}, {len(p['steps'])} steps): MACs {p['macs_before']:,} -> "
            f"{p['macs_after']:,} (-{p['macs_reduction']:.1%}), params {p['params_before']:,} -> "
            f"{p['params_after']:,}; fine-tune {p['finetune'].get('epochs', 0)} epochs, "
            f"best val top-1 {p['finetune'].get('best_val_top1', '-')}. Saved as "
            f"`{p['saved_as']}` ({p['save_format']})."
        )
    for name, q in report["calibration"].items():
        tried = ", ".join(f"{m} {r['val_top1']:.4f}" for m, r in q["methods"].items())
        lines.append(f"- Calibration `{name}`: chose **{q['method']}** (val top-1: {tried}).")
    lines.append(
        f"- Export: ONNX opset {report['export']['opset']}, max |ORT - PyTorch| "
        + ", ".join(f"{k} {v:.1e}" for k, v in report["export"]["max_abs_diff"].items())
    )
    served = report["served_input"]
    lines.append(
        f"- Served input: {SERVED_INPUTS[served['dtype']]} (max |difference| of the outputs "
        f"against the float model: {served['max_abs_diff']:.1e})"
    )
    lines.append(f"- TensorRT: {report['tensorrt']}")
    lines.append(
        f"- Repository `{report['repository']['path']}`: "
        + ", ".join(report["repository"]["models"])
    )
    lines.append(
        "- Seconds per step: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items())
    )
    return "\n".join(lines + fallback_section(report) + precision_section(report)) + "\n"


def fallback_section(report: dict) -> list[str]:
    """Per variant that missed the budget: the groups sent back to FP32, step by step."""
    lines = []
    for name, q in report["calibration"].items():
        fb = q.get("fallback")
        if not fb:
            continue
        lines += [
            "",
            f"## Per-layer fallback: `{name}`",
            "",
            f"All-INT8 missed the budget on validation ({q['val_images']} images, FP32 "
            f"{q['fp32_val_top1']:.2%}); groups went back to FP32 most sensitive first (mean KL "
            f"from FP32 with only that group quantized, {fb['sensitivity_images']} images) "
            f"until the drop was <= {fb['budget_points']:.2f} points"
            + ("." if fb["met"] else ": **not reached even with every group in FP32**."),
            "",
            "| step | groups in FP32 | val top-1 | drop (pts) | bs8 img/s |",
            "|---|---|---|---|---|",
        ]
        for k, step in enumerate(fb["steps"]):
            kept = ", ".join(f"`{g}`" for g in step["fp32_groups"]) or "none (all INT8)"
            lines.append(f"| {k} | {kept} | {step['val_top1']:.2%} | {step['drop']:+.2f} | "
                         f"{step['throughput_bs8']:,.0f} |")  # fmt: skip
    return lines


def precision_section(report: dict) -> list[str]:
    """Every weight layer's precision in every INT8 variant (picture: optimize_layers.png)."""
    layers = report.get("layers") or {}
    if not layers:
        return []
    names = list(layers)
    lines = ["", "## Layer precision (INT8 variants)", "",
             "| layer | op | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]  # fmt: skip
    by_variant = [{row["layer"]: row["precision"] for row in layers[n]} for n in names]
    for row in layers[names[0]]:
        cells = [p.get(row["layer"], "-") for p in by_variant]
        cells = [f"**{c}**" if c == "fp32" else c for c in cells]
        lines.append(f"| `{row['layer']}` | {row['op']} | " + " | ".join(cells) + " |")
    return lines


def plot_layers(report: dict, path: Path) -> Path:
    """A strip per INT8 variant, one cell per weight layer: green INT8, orange FP32."""
    layers = report["layers"]
    names = list(layers)
    order = [row["layer"] for row in layers[names[0]]]
    grid = [[1.0 if {r["layer"]: r["precision"] for r in layers[n]}.get(layer) == "fp32" else 0.0
             for layer in order] for n in names]  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(6, 0.16 * len(order)), 0.5 * len(names) + 1.6))
    ax.imshow(grid, cmap=matplotlib.colors.ListedColormap(["tab:green", "tab:orange"]),
              vmin=0, vmax=1, aspect="auto")  # fmt: skip
    ax.set_yticks(range(len(names)), names, fontsize=8)
    step = max(1, len(order) // 40)
    ax.set_xticks(range(0, len(order), step), order[::step], rotation=90, fontsize=6)
    ax.set_title(f"{report['model']}: weight layers in INT8 (green) and FP32 (orange)", fontsize=9)
    with staged_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot(variants: list[dict], path: Path, title: str, max_drop: float) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    fp32 = next(v for v in variants if v["name"] == "fp32")
    ax.axhline(100 * fp32["top1"] - max_drop, color="grey", linestyle="--", linewidth=1)
    for v in variants:
        marker = "o" if v["target"] == "cpu" else "s"
        color = "tab:green" if v["deployed"] else "tab:red"
        ax.scatter(v["throughput_bs8"], 100 * v["top1"], marker=marker, color=color, s=50)
        ax.annotate(
            f"{v['name']} ({v['engine']})",
            (v["throughput_bs8"], 100 * v["top1"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("throughput at batch 8 on the variant's engine (images/s, log scale)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(
        f"{title}: green deployed, red not; square: TensorRT QDQ run on CPU; dashed: gate",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    with staged_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_reports(run_dir: Path, report: dict) -> list[Path]:
    return [
        atomic_write_json(run_dir / "optimize_report.json", report),
        atomic_write_text(run_dir / "optimize_report.md", markdown(report)),
        plot(
            report["variants"],
            run_dir / "optimize_report.png",
            report["model"],
            report["max_accuracy_drop"],
        ),
        *([plot_layers(report, run_dir / "optimize_layers.png")] if report.get("layers") else []),
    ]


def print_summary(report: dict, written: list[Path]) -> None:
    print(
        f"\n{'variant':<16} {'engine':<12} {'top-1':>7} {'drop':>6} {'bs1 ms':>8} "
        f"{'bs8 img/s':>10} {'x fp32':>7}"
    )
    for r in report["variants"]:
        deployed = "deployed" if r["deployed"] else f"not deployed: {r['why']}"
        print(
            f"{r['name']:<16} {r['engine']:<12} {r['top1']:>7.4f} {r['top1_drop']:>6.2f} "
            f"{r['latency_ms_bs1']:>8.3f} {r['throughput_bs8']:>10.0f} "
            f"{r['speedup_bs8']:>7.2f}  {deployed}"
        )
    best = report["best_cpu_variant"]
    if best:
        print(
            f"\nbest CPU variant: {best['name']} (Triton model {best['triton_model']}), "
            f"{best['speedup_bs8']:.2f}x the FP32 throughput at batch 8, "
            f"top-1 drop {best['top1_drop']:.2f} points"
        )
    print(f"wrote {', '.join(str(p) for p in written)}")
    print(f"artifacts in {report['artifacts']}/, total {report['seconds']['total']} s")
