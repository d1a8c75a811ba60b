import json

import pytest

from contract import ModelSpec, SpecError, load_spec, save_spec


def make_spec(**kw) -> ModelSpec:
    base = dict(name="m", arch="resnet_small", labels=("a", "b", "c"), height=28, width=28,
                color_mode="L", mean=(0.5,), std=(0.25,))  # fmt: skip
    return ModelSpec(**{**base, **kw})


def test_round_trip(tmp_path):
    spec = make_spec()
    save_spec(spec, tmp_path / "model_spec.json")
    assert load_spec(tmp_path) == spec
    data = json.loads((tmp_path / "model_spec.json").read_text())
    assert data["channels"] == 1 and data["input_name"] == "input"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": ("a",)}, "at least 2 labels"),
        ({"labels": ("a", "a")}, "not unique"),
        ({"color_mode": "CMYK"}, "color_mode"),
        ({"mean": (0.5, 0.5, 0.5)}, "mean/std need 1"),
        ({"std": (0.0,)}, "positive"),
        ({"mean": (float("nan"),)}, "mean values must be finite"),
        ({"height": 0}, "outside"),
        ({"resize_policy": "stretch"}, "resize_policy"),
        ({"dtype": "float16"}, r"inputs of \['float32', 'uint8'\]"),
    ],
)
def test_validation_names_the_problem(change, message):
    with pytest.raises(SpecError, match=message):
        make_spec(**change).validate()


def test_load_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(bad)
    bad.write_text(json.dumps({**make_spec().to_dict(), "surprise": 1}))
    with pytest.raises(SpecError, match="unknown model spec keys"):
        load_spec(bad)
    bad.write_text(json.dumps({**make_spec().to_dict(), "channels": 3}))
    with pytest.raises(SpecError, match="contradicts"):
        load_spec(bad)


def test_uint8_inputs_are_a_valid_spec(tmp_path):
    spec = make_spec(dtype="uint8")
    save_spec(spec, tmp_path / "model_spec.json")
    assert load_spec(tmp_path).dtype == "uint8"
