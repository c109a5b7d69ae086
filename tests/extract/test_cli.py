"""`vdial encoders` and `vdial extract`'s encoder options, through the real CLI."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from tests.conftest import write_video
from vdial.cache import FeatureStore
from vdial.cli import app
from vdial.extract.encoders import ENCODERS

runner = CliRunner()


def test_encoders_lists_every_family_with_its_sizes_specs_and_options():
    result = runner.invoke(app, ["encoders", "--options"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ENCODERS:
        family = ENCODERS.get(name)
        assert f"{name}:{family.default_size}*" in result.output
        for size in family.sizes:
            assert f"{name}:{size}" in result.output
    assert "T x 256 x 1024" in result.output  # dinov2:large, 16x16 patches of 1024
    assert "T/2 x 196 x 768" in result.output  # vivit: one row per 2-frame tubelet
    assert "--option faster-rcnn.regions=" in result.output


def _folder(tmp_path):
    root = tmp_path / "videos"
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    write_video(root / "a.mp4", rng.integers(0, 256, (6, 48, 64, 3), dtype=np.uint8))
    return root


def _extract(tmp_path, *extra):
    root = _folder(tmp_path)
    built = runner.invoke(
        app,
        ["manifest", "build", "folder", "--name", "m", "--root", str(root), "--out", str(tmp_path)],
    )
    assert built.exit_code == 0, built.output
    manifest = tmp_path / "m"
    args = ["extract", "--manifest", manifest, "--store", tmp_path / "s", "--random-init"]
    return runner.invoke(app, [str(a) for a in [*args, "-e", "dinov2:tiny", "--frames", 2, *extra]])


def test_builder_options_reach_the_encoder_and_the_stored_spec(tmp_path):
    result = _extract(tmp_path, "--option", "dinov2.keep_prefix_tokens=true")
    assert result.exit_code == 0, result.output
    feature = FeatureStore.open(tmp_path / "s")["dinov2"]
    assert feature.spec["keep_prefix_tokens"] is True
    assert np.asarray(feature["a"]).shape == (2, 16 + 5, 32)  # grid 4x4 plus CLS and registers


def test_unknown_or_malformed_options_are_clear_errors(tmp_path):
    result = _extract(tmp_path, "--option", "dinov2.nope=1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: encoder 'dinov2' has no option 'nope'" in result.output
    assert "keep_prefix_tokens (default False)" in result.output
    result = _extract(tmp_path, "--option", "keep_prefix_tokens=true")
    assert result.exit_code != 0 and "FAMILY.OPTION=VALUE" in result.output


def test_a_feature_with_another_spec_is_a_one_line_error(tmp_path):
    assert _extract(tmp_path).exit_code == 0
    result = _extract(tmp_path, "--frames", "3")  # _extract asks for 2 frames first
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "exists with a different definition: spec.frames: stored 2, requested 3" in (
        result.output
    )


def test_features_are_float16_unless_float32_is_asked_for(tmp_path):
    result = _extract(tmp_path, "--dtype", "float32")
    assert result.exit_code == 0, result.output
    feature = FeatureStore.open(tmp_path / "s")["dinov2"]
    assert feature.dtype == np.float32 and feature["a"].dtype == np.float32
    (tmp_path / "again").mkdir()
    result = _extract(tmp_path / "again", "--dtype", "bfloat16")
    assert result.exit_code != 0 and "float16 or float32" in result.output
