"""Typed config dataclasses from mappings: nested types, unions, and errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from vdial.config import ConfigError, from_dict, read_yaml, save_config, to_dict


@dataclass(frozen=True, kw_only=True)
class Inner:
    width: int = 4
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    ratio: float = 0.5
    sizes: tuple[int, ...] = ()
    pair: tuple[float, float] = (0.9, 0.99)
    weights: dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None
    either: str | tuple[str, ...] = "x"
    free: Any = None

    def __post_init__(self) -> None:
        if self.ratio < 0:
            raise ValueError("ratio must be >= 0")


def test_nested_values_are_coerced():
    cfg = from_dict(
        Outer,
        {
            "name": "n",
            "ratio": 1,
            "sizes": [1, 2],
            "pair": [0.1, 0.2],
            "weights": {"a": 2},
            "inner": {"width": 8, "kind": "b"},
            "either": ["p", "q"],
            "free": {"anything": [1]},
        },
    )
    assert cfg.ratio == 1.0 and isinstance(cfg.ratio, float)
    assert cfg.sizes == (1, 2) and cfg.pair == (0.1, 0.2) and cfg.weights == {"a": 2.0}
    assert cfg.inner == Inner(width=8, kind="b") and cfg.either == ("p", "q")
    assert cfg.free == {"anything": [1]} and cfg.maybe is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "n", "ration": 1}, "f.yaml: unknown key 'ration'; valid keys: name, ratio,"),
        (
            {"name": "n", "inner": {"widht": 1}},
            "f.yaml: unknown key 'inner.widht'; valid keys of inner: width, kind",
        ),
        ({"name": "n", "inner": {"width": "8"}}, "f.yaml: inner.width: expected int, got '8'"),
        ({"name": "n", "inner": {"kind": "c"}}, "f.yaml: inner.kind: 'c' is not one of ['a', 'b']"),
        ({"name": "n", "pair": [1.0]}, "f.yaml: pair: expected a list of 2 values"),
        ({"name": "n", "sizes": [1, "x"]}, "f.yaml: sizes[1]: expected int, got 'x'"),
        ({"name": "n", "weights": {"a": "heavy"}}, "f.yaml: weights.a: expected float"),
        ({"name": "n", "ratio": True}, "f.yaml: ratio: expected float, got True"),
        ({"name": "n", "ratio": -1.0}, "f.yaml: ratio must be >= 0"),
        ({}, "f.yaml: missing required key(s) name"),
    ],
)
def test_errors_name_the_file_and_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data, "f.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_yaml_round_trip(tmp_path):
    cfg = from_dict(Outer, {"name": "n", "sizes": [3], "inner": {"kind": "b"}})
    save_config(cfg, tmp_path / "c.yaml")
    assert from_dict(Outer, read_yaml(tmp_path / "c.yaml")) == cfg
    assert to_dict(cfg)["sizes"] == [3]
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        read_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_yaml(tmp_path / "bad.yaml")
