import json
import shutil
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contract import load_spec
from optimize.config import DataConfig, ExportConfig, OptimizeConfig, OptimizeError
from optimize.run import main, serve_input
from optimize.variants import Variant, gate
from serve.repository import read_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "optimize.yaml"
# Keeps the end-to-end run to seconds; every step still runs as with the defaults.
FAST = ["prune.finetune.epochs=1", "bench.rounds=1", "bench.seconds=0.02", "bench.warmup=1"]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def _corrupt_checkpoint(run):
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")


def _missing_checkpoint(run):
    (run / "checkpoint.pt").unlink()


def _corrupt_spec(run):
    (run / "model_spec.json").write_text("{ nope")


def _mismatched_spec(run):
    spec = json.loads((run / "model_spec.json").read_text())
    spec["labels"] = list(reversed(spec["labels"]))
    (run / "model_spec.json").write_text(json.dumps(spec))


def _other_arch(run):
    spec = json.loads((run / "model_spec.json").read_text())
    spec["arch"] = "resnet18"
    (run / "model_spec.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(
    "damage, overrides, message",
    [
        (_missing_checkpoint, [], "checkpoint not found"),
        (_corrupt_checkpoint, [], "cannot be read safely"),
        (_corrupt_spec, [], "not valid JSON"),
        (_mismatched_spec, [], "does not match the checkpoint"),
        (_other_arch, [], "does not match"),
        (None, ["quantize.targets=[cpu,gpu]"], "unknown target"),
        (None, ["prune.ratio=1.5"], "outside (0, 1)"),
        (None, ["prune.ratio=0"], "outside (0, 1)"),
        (None, ["prune.macs_reduction=1"], "outside (0, 1)"),
        (None, ["data.calibration_images=100"], "data.calibration_images 100 is below 500"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(
    run_copy, tmp_path, capsys, damage, overrides, message
):
    if damage:
        damage(run_copy)
    before = _tree(run_copy)
    repo = tmp_path / "repo"
    code = main(
        ["--run", str(run_copy), "--config", str(CONFIG), f"repository.path={repo}", *overrides]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert _tree(run_copy) == before and not repo.exists()


def test_the_calibration_minimum_is_lowered_only_on_purpose():
    tiny = DataConfig(calibration_images=64, min_calibration_images=64)
    assert OptimizeConfig(data=tiny).validate().data.calibration_images == 64
    with pytest.raises(OptimizeError, match="calibration_images 499 is below 500"):
        OptimizeConfig(data=DataConfig(calibration_images=499)).validate()


def test_served_input_is_uint8_or_float32(tiny_onnx, tiny_spec, tmp_path):
    assert OptimizeConfig().validate().export.served_input == "uint8"
    with pytest.raises(OptimizeError, match=r"served_input must be one of \['float32', 'uint8'\]"):
        OptimizeConfig(export=ExportConfig(served_input="float16")).validate()
    # float32: the variants are served as exported, untouched.
    path = Path(shutil.copy(tiny_onnx, tmp_path / "model_fp32.onnx"))
    variant = Variant("fp32", "cpu", "fp32", False, path)
    assert serve_input([variant], tiny_spec, tmp_path) == 0.0
    assert path.read_bytes() == tiny_onnx.read_bytes()
    assert serve_input([variant], replace(tiny_spec, dtype="uint8"), tmp_path) <= 1e-5
    assert path.read_bytes() != tiny_onnx.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_fp32.onnx"]  # no leftovers


def test_missing_run_folder(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nope"), "--config", str(CONFIG)]) == 2
    assert capsys.readouterr().err.startswith("error: run folder not found")


def test_gate_refuses_large_drops_and_keeps_one_tensorrt_model(tiny_spec):
    variants = [
        Variant("fp32", "cpu", "fp32", False, Path("a")),
        Variant("int8", "cpu", "int8", False, Path("b")),
        Variant("int8_trt", "tensorrt", "int8", False, Path("c")),
        Variant("pruned_int8", "cpu", "int8", True, Path("d")),
        Variant("pruned_int8_trt", "tensorrt", "int8", True, Path("e")),
    ]
    top1 = {
        "fp32": 0.90,
        "int8": 0.895,
        "int8_trt": 0.899,
        "pruned_int8": 0.88,
        "pruned_int8_trt": 0.8995,
    }
    results = {v.name: {e: {"top1": top1[v.name]} for e in v.engines} for v in variants}
    gate(variants, results, 1.0, tiny_spec)
    assert [results[n]["deployed"] for n in top1] == [True, True, False, False, True]
    assert "drop 2.00 points > 1.0" in results["pruned_int8"]["why"]
    assert "one per repository" in results["int8_trt"]["why"]
    assert results["pruned_int8_trt"]["triton_model"] == f"{tiny_spec.name}_trt"


@pytest.mark.slow
def test_end_to_end_on_the_tiny_run(run_copy, tmp_path, tiny_spec, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU host's path anywhere
    repo = tmp_path / "repo"
    (repo / "other_model").mkdir(parents=True)  # another run's: kept
    (repo / f"{tiny_spec.name}_stale").mkdir()  # this run's, no longer deployed: removed
    shutil.copy(run_copy / "model_spec.json", repo / f"{tiny_spec.name}_stale")
    args = ["--run", str(run_copy), "--config", str(CONFIG), f"repository.path={repo}", *FAST]
    assert main(args) == 0
    report = json.loads((run_copy / "optimize_report.json").read_text())
    assert (run_copy / "optimize_report.md").is_file()
    assert (run_copy / "optimize_report.png").stat().st_size > 0
    rows = {v["name"]: v for v in report["variants"]}
    assert list(rows) == ["fp32", "pruned", "int8", "int8_trt", "pruned_int8", "pruned_int8_trt"]

    # The accuracy gate as configured (1 point): each verdict follows from the measured top-1.
    max_drop = report["max_accuracy_drop"]
    assert max_drop == 1.0
    for name, v in rows.items():
        assert v["top1_drop"] == pytest.approx(100 * (rows["fp32"]["top1"] - v["top1"]), abs=0.02)
        if v["top1_drop"] > max_drop:
            assert not v["deployed"] and f"> {max_drop}" in v["why"], name
    assert [n for n, v in rows.items() if v["target"] == "cpu" and v["deployed"]] == [
        n for n, v in rows.items() if v["target"] == "cpu" and v["top1_drop"] <= max_drop
    ]
    trt = [n for n, v in rows.items() if v["target"] == "tensorrt" and v["deployed"]]
    assert len(trt) <= 1  # one TensorRT model per repository

    # What was measured is what was written, and the best CPU variant feeds the ensemble.
    n = tiny_spec.name
    deployed = {v["triton_model"] for v in rows.values() if v["deployed"]}
    models = {p.name for p in repo.iterdir()}
    assert models == deployed | {n, f"{n}_preprocess", "other_model"}  # n_stale is gone
    assert set(report["repository"]["models"]) == models - {"other_model"}
    for v in rows.values():
        if v["deployed"] and v["target"] == "cpu":
            assert (repo / v["triton_model"] / "1" / "model.onnx").stat().st_size == v["size_bytes"]
        assert v["throughput_bs8"] > 0 and v["latency_ms_bs1"] > 0
    best = report["best_cpu_variant"]
    assert best["deployed"] and best["target"] == "cpu"
    ensemble = read_config(repo / n / "config.pbtxt")
    assert ensemble.ensemble_scheduling.step[-1].model_name == best["triton_model"]
    for config in repo.glob("*/config.pbtxt"):
        text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())

    # Served models take uint8 pixels (export.served_input), as their specs and configs say.
    assert report["served_input"]["dtype"] == "uint8"
    assert report["served_input"]["max_abs_diff"] <= 1e-5
    assert (
        "uint8 pixels, normalised inside the model" in (run_copy / "optimize_report.md").read_text()
    )
    uint8 = model_config_pb2.TYPE_UINT8
    for name in deployed - {v["triton_model"] for v in rows.values() if v["target"] != "cpu"}:
        assert load_spec(repo / name).dtype == "uint8"
        assert read_config(repo / name / "config.pbtxt").input[0].data_type == uint8
        feed = onnx.load(str(repo / name / "1" / "model.onnx")).graph.input[0]
        assert feed.type.tensor_type.elem_type == onnx.TensorProto.UINT8, name
    assert read_config(repo / f"{n}_preprocess" / "config.pbtxt").output[0].data_type == uint8
    assert load_spec(run_copy).dtype == "float32"  # the trained network's own input

    # Pruning removed work; INT8 was calibrated; no GPU here, so no plan, said once.
    assert report["prune"]["macs_after"] < report["prune"]["macs_before"]
    assert rows["pruned"]["macs"] == report["prune"]["macs_after"] < rows["fp32"]["macs"]
    assert (run_copy / "optimize" / "pruned.pt").is_file()
    assert set(report["calibration"]) == {"int8", "int8_trt", "pruned_int8", "pruned_int8_trt"}
    assert report["tensorrt"] == (
        "skipped: no CUDA device" if trt else "no tensorrt-target variant is deployed"
    )
    if trt:
        assert not (repo / f"{n}_trt" / "1" / "model.plan").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    shutil.rmtree(repo)


@pytest.mark.slow
def test_ctrl_c_mid_run_keeps_the_previous_outputs(run_copy, tmp_path, monkeypatch, capsys):
    repo = tmp_path / "repo"
    (repo / "previous_model").mkdir(parents=True)
    (repo / "previous_model" / "config.pbtxt").write_text('name: "previous_model"\n')
    before_run, before_repo = _tree(run_copy), _tree(repo)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while timing the variants

    monkeypatch.setattr("optimize.run.benchmark", interrupt)
    args = ["--run", str(run_copy), "--config", str(CONFIG), f"repository.path={repo}", *FAST]
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _tree(run_copy) == before_run and _tree(repo) == before_repo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "tiny"]
