"""Every bad-input kind against one real server: a clear error (or the right answer for valid
images), and a healthy server right after."""

import json
import re
import subprocess
import sys

import pytest

from optimize.config import ExportConfig
from reliability.chaos import run_kind, unhealthy
from reliability.kinds import SERVER_KINDS, all_kinds
from reliability.reference import encode

REQUIRED = {
    "non-image bytes", "empty bytes", "truncated PNG", "truncated JPEG", "1x1 image",
    "decompression bomb", "CMYK JPEG", "16-bit PNG", "palette PNG", "alpha PNG",
    "EXIF-rotated JPEG", "wrong tensor dtype", "wrong rank", "wrong shape",
    "batch above max_batch_size", "NaN values", "Inf values", "unknown model", "unknown version",
    "oversized body (80 MB)", "malformed JSON", "model being unloaded",
}  # fmt: skip


KINDS = {k.name: k for k in all_kinds()}


def test_the_table_covers_the_required_kinds_and_every_cli():
    assert len(SERVER_KINDS) >= 20
    assert set(KINDS) >= REQUIRED
    clis = {name.split(":")[0] for name, k in KINDS.items() if k.group == "cli"}
    assert {"infer", "verify", "train", "optimize", "serve", "bench"} <= clis


@pytest.mark.slow
def test_a_deployment_built_from_a_run_takes_what_optimize_serves(deployment):
    # uint8 pixels by default: the kinds then send what the real deployment's clients send
    assert deployment.spec.dtype == ExportConfig().served_input == "uint8"
    config = (deployment.repo / deployment.classifier / "config.pbtxt").read_text()
    assert "TYPE_UINT8" in config


@pytest.mark.slow
@pytest.mark.parametrize("name", KINDS)
def test_kind_is_handled_and_the_server_stays_healthy(ctx, name):
    row = run_kind(ctx, KINDS[name], encode(ctx.image()))
    assert row["handled"], row["detail"]
    assert unhealthy(ctx, encode(ctx.image())) is None


@pytest.mark.slow
def test_chaos_cli_prints_a_table_and_the_summary_line(deployment, tmp_path):
    kinds = "empty bytes,NaN values,serve: bad flag"
    proc = subprocess.run(
        [sys.executable, "-m", "reliability", "chaos", "--repo", str(deployment.repo),
         "--out", str(tmp_path), "--only", kinds],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "chaos: 3 kinds, 3 handled, 0 failed", proc.stdout
    assert proc.returncode == 0
    for kind, group in (("empty bytes", "image"), ("NaN values", "tensor"),
                        ("serve: bad flag", "cli")):  # fmt: skip
        assert re.search(rf"^{kind}\s+{group}\s+error\s+handled", proc.stdout, re.M), kind
    rows = json.loads((tmp_path / "chaos.json").read_text())
    assert [(r["kind"], r["handled"]) for r in rows] == [(k, True) for k in kinds.split(",")]


@pytest.mark.slow
def test_chaos_cli_moves_the_copy_to_openvino_and_its_classifier_handles_bad_input(
    deployment, tmp_path
):
    kinds = "NaN values,wrong shape,batch above max_batch_size,model being unloaded,empty bytes"
    proc = subprocess.run(
        [sys.executable, "-m", "reliability", "chaos", "--repo", str(deployment.repo),
         "--engine", "openvino", "--out", str(tmp_path), "--only", kinds],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    assert f"against {deployment.ensemble} (openvino)" in lines[0], proc.stdout
    assert lines[-1] == "chaos: 5 kinds, 5 handled, 0 failed", proc.stdout + proc.stderr
    assert deployment.engine == "onnxruntime"  # the operator's copy is left as it was
