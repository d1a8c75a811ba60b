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
