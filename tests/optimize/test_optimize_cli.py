import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from optimize.run import main
from optimize.variants import Variant, gate

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
    results = {name: {"top1": t} for name, t in top1.items()}
    gate(variants, results, 1.0, tiny_spec)
    assert [results[n]["deployed"] for n in top1] == [True, True, False, False, True]
    assert "drop 2.00 points > 1.0" in results["pruned_int8"]["why"]
    assert "one per repository" in results["int8_trt"]["why"]
    assert results["pruned_int8_trt"]["triton_model"] == f"{tiny_spec.name}_trt"


@pytest.mark.slow
def test_end_to_end_on_the_tiny_run(run_copy, tmp_path, tiny_spec):
    repo = tmp_path / "repo"
    (repo / "other_model").mkdir(parents=True)  # another run's: kept
    (repo / f"{tiny_spec.name}_stale").mkdir()  # this run's, no longer deployed: removed
    shutil.copy(run_copy / "model_spec.json", repo / f"{tiny_spec.name}_stale")
    args = [
        "--run",
        str(run_copy),
        "--config",
        str(CONFIG),
        f"repository.path={repo}",
        "max_accuracy_drop=100",
        *FAST,
    ]
    assert main(args) == 0
    report = json.loads((run_copy / "optimize_report.json").read_text())
    assert (run_copy / "optimize_report.md").is_file()
    assert (run_copy / "optimize_report.png").stat().st_size > 0
    names = [v["name"] for v in report["variants"]]
    assert names == ["fp32", "pruned", "int8", "int8_trt", "pruned_int8", "pruned_int8_trt"]
    for v in report["variants"]:
        for key in (
            "target",
            "precision",
            "pruned",
            "top1",
            "top1_drop",
            "deployed",
            "latency_ms_bs1",
            "throughput_bs8",
            "size_bytes",
            "params",
            "macs",
        ):
            assert key in v, key
        assert v["throughput_bs8"] > 0 and v["latency_ms_bs1"] > 0
    assert report["prune"]["macs_after"] < report["prune"]["macs_before"]
    assert (run_copy / "optimize" / "pruned.pt").is_file()
    assert set(report["calibration"]) == {"int8", "int8_trt", "pruned_int8", "pruned_int8_trt"}
    assert report["best_cpu_variant"]["target"] == "cpu"
    assert report["tensorrt"].startswith(("skipped", "plan built"))
    n = tiny_spec.name
    models = {p.name for p in repo.iterdir()}
    assert {f"{n}_fp32", f"{n}_int8", f"{n}_pruned", f"{n}_pruned_int8", f"{n}_trt"} <= models
    assert "other_model" in models and f"{n}_stale" not in models
    for config in repo.glob("*/config.pbtxt"):
        text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
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
