from dataclasses import dataclass, field

import pytest

from contract.config import ConfigError, load_config


@dataclass
class Inner:
    lr: float = 0.1
    steps: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Outer:
    name: str = "x"
    flag: bool = False
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\ninner:\n  lr: 0.5\n")
    cfg = load_config(Outer, path, ["inner.steps=[3,4]", "flag=true", "limit=7"])
    assert cfg == Outer(name="y", flag=True, limit=7, inner=Inner(lr=0.5, steps=[3, 4]))


def test_scalars_are_converted_to_the_field_type(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: 12\ninner:\n  lr: 1\n")
    cfg = load_config(Outer, path, ["limit=0x10", "inner.steps=5,6"])
    assert (cfg.name, cfg.limit, cfg.inner.lr, cfg.inner.steps) == ("12", 16, 1.0, [5, 6])
    assert type(cfg.inner.lr) is float and type(cfg.limit) is int
    assert load_config(Outer, None, ["limit=none"]).limit is None


@pytest.mark.parametrize(
    "yaml_text, overrides, message",
    [
        ("nmae: y\n", [], "unknown config key: nmae"),
        ("inner:\n  lr: fast\n", [], "inner.lr: expected float"),
        ("", ["inner.bogus=1"], "unknown config key: inner.bogus"),
        ("", ["flag=maybe"], "flag: expected true/false"),
        ("", ["novalue"], "key=value"),
        ("name: [unclosed\n", [], "not valid YAML"),
        ("- a list\n", [], "mapping at the top"),
        ("limit: true\n", [], "limit: expected a number, got True"),
        ("", ["limit=7.5"], "limit: expected int, got 7.5"),
        ("name:\n  a: 1\n", [], "name: expected a string"),
        ("inner: 3\n", [], "inner: expected a mapping"),
        ("inner:\n  steps: 3\n", [], "inner.steps: expected a list"),
    ],
)
def test_errors_name_the_key(tmp_path, yaml_text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, path, overrides)


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, "/nonexistent/c.yaml")
