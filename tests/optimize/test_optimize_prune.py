import pytest
import torch

from optimize import prune as pruning
from optimize.config import PruneConfig
from train.checkpoint import CheckpointError, read_checkpoint
from train.data import Split, load_split


def _outputs(model, spec):
    torch.manual_seed(0)
    x = torch.randn(3, spec.channels, spec.height, spec.width)
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_pruning_lowers_macs_and_keeps_the_head(tiny_model, tiny_spec, tiny_arrays, importance):
    arrays = tiny_arrays["train"]
    grads = [(torch.from_numpy(arrays.x[:32]), torch.from_numpy(arrays.y[:32]))]
    head_before = tiny_model.get_classifier().out_features
    record = pruning.prune_model(
        tiny_model,
        tiny_spec,
        PruneConfig(ratio=0.5, iterative_steps=2, importance=importance),
        grads,
    )
    assert record["macs_after"] < 0.5 * record["macs_before"]
    assert record["params_after"] < record["params_before"]
    assert tiny_model.get_classifier().out_features == head_before == tiny_spec.num_classes
    assert _outputs(tiny_model, tiny_spec).shape == (3, tiny_spec.num_classes)
    assert len(record["steps"]) == 2


def test_macs_target_stops_once_reached(tiny_model, tiny_spec):
    cfg = PruneConfig(macs_reduction=0.3, max_ratio=0.8, iterative_steps=16)
    record = pruning.prune_model(tiny_model, tiny_spec, cfg, [])
    assert record["macs_after"] <= 0.7 * record["macs_before"]
    assert len(record["steps"]) < 16  # stopped early, not pruned down to max_ratio


def test_pruned_model_round_trips_without_pickled_code(tiny_model, tiny_spec, tmp_path):
    pruning.prune_model(tiny_model, tiny_spec, PruneConfig(ratio=0.4, iterative_steps=1), [])
    path = pruning.save_pruned(tmp_path / "pruned.pt", tiny_model, tiny_spec)
    blob = torch.load(path, weights_only=True)  # tensors and plain types only
    assert blob["format"] == pruning.PLAN_FORMAT
    rebuilt = pruning.load_pruned(path, tiny_spec)
    assert pruning.channel_plan(rebuilt) == pruning.channel_plan(tiny_model)
    torch.testing.assert_close(_outputs(rebuilt, tiny_spec), _outputs(tiny_model, tiny_spec))


def test_load_pruned_rejects_a_plain_checkpoint(tiny_run, tiny_spec):
    assert "format" not in read_checkpoint(tiny_run / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="channel-plan"):
        pruning.load_pruned(tiny_run / "checkpoint.pt", tiny_spec)


def test_finetune_uses_the_train_loop_and_keeps_the_best_epoch(tiny_model, tiny_spec, tiny_run):
    from contract.config import from_dict
    from optimize.config import FinetuneConfig
    from train.config import TrainConfig
    from train.data import scan_folder

    cfg = from_dict(TrainConfig, read_checkpoint(tiny_run / "checkpoint.pt")["config"])
    splits = scan_folder(cfg.data, cfg.seed).splits
    train = load_split(
        Split(splits["train"].files[:64], splits["train"].labels[:64]), tiny_spec, "train", 64
    )[0]
    val = load_split(splits["val"], tiny_spec, "val", 64)[0]
    pruning.prune_model(tiny_model, tiny_spec, PruneConfig(ratio=0.5, iterative_steps=1), [])
    record = pruning.finetune(tiny_model, train, val, FinetuneConfig(epochs=2, batch_size=32), 0)
    assert record["epochs"] == 2 and len(record["history"]) == 2
    assert record["best_val_top1"] == round(max(h["val_top1"] for h in record["history"]), 4)


def test_efficientnet_lite0_prunes_through_depthwise_groups(tmp_path):
    """Depthwise convs lose channels with the convs that feed them; the plan round-trips."""
    from contract import ModelSpec
    from train.models import create_model

    spec = ModelSpec(name="lite", arch="efficientnet_lite0", labels=tuple("abcd"),
                     height=64, width=64, mean=(0.5,) * 3, std=(0.5,) * 3)  # fmt: skip
    model = create_model("efficientnet_lite0", 4)
    record = pruning.prune_model(model, spec, PruneConfig(ratio=0.5, iterative_steps=1), [])
    assert record["macs_after"] < 0.5 * record["macs_before"]
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert record["channels"]["_conv_head"] < 1280  # the head conv is pruned, not the classifier
    assert model.get_classifier().out_features == 4
    rebuilt = pruning.load_pruned(pruning.save_pruned(tmp_path / "p.pt", model, spec), spec)
    torch.testing.assert_close(_outputs(rebuilt, spec), _outputs(model, spec))
