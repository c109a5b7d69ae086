"""The encoder contract, parametrised over the registry: every family at its tiny size.

Frames are planned for a 40-frame video at 25 fps, preprocessed into units, encoded and turned
into rows; the rows must follow the spec (shape, dtype, count along time), be deterministic for
a seed and differ across seeds, and not depend on how units are batched.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vdial.extract.encoders import ENCODERS, build_encoder

TINY = [f"{name}:tiny" for name in ENCODERS]
NUM_FRAMES, FPS = 40, 25.0


def decoded(enc, seed=0):
    """Random frames at the encoder's planned indices, with their timestamps."""
    indices = np.asarray(enc.frame_indices(NUM_FRAMES, FPS), dtype=np.int64)
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (len(indices), 72, 96, 3), dtype=np.uint8)
    return frames, indices / FPS, indices


def rows_of(enc, frames, timestamps, indices, batch=None):
    units = enc.preprocess(frames)
    with torch.inference_mode():
        if batch is None:
            outputs = list(enc.encode(units))
        else:
            outputs = [
                o for k in range(0, len(units), batch) for o in enc.encode(units[k : k + batch])
            ]
    assert len(outputs) == len(units)
    return enc.to_rows(outputs, timestamps, indices)


@pytest.mark.parametrize("ref", TINY)
def test_rows_follow_the_spec(ref):
    enc = build_encoder(ref, random_init=True)
    frames, timestamps, indices = decoded(enc)
    assert indices.min() >= 0 and indices.max() < NUM_FRAMES
    rows, extras = rows_of(enc, frames, timestamps, indices)
    assert rows.dtype == np.float32 and np.isfinite(rows).all()
    assert rows.shape[1:] == enc.item_shape and len(rows) >= 1
    assert set(extras) == set(enc.row_extras)
    for name, (shape, dtype) in enc.row_extras.items():
        assert extras[name].shape == (len(rows), *shape), name
        assert extras[name].dtype == np.dtype(dtype), name
    assert set(extras["frame_indices"].tolist()) <= set(indices.tolist())
    spec = enc.spec
    if not spec.max_regions:  # dense encoders: rows along time follow frames_per_row
        assert len(rows) == len(indices) // spec.frames_per_row
        # a multi-layer encoder (clip) stacks its tapped layers on a leading axis of each row
        layers = enc.provenance().get("layers")
        lead = (len(layers),) if layers else ()
        assert enc.item_shape == (*lead, spec.tokens_per_frame, spec.dim)
    assert enc.weights == "random:0"
    attrs = enc.provenance()
    assert attrs["name"] == ref.split(":")[0] and attrs["grid"] == list(spec.grid)


@pytest.mark.parametrize("ref", TINY)
def test_deterministic_batch_independent_and_seeded(ref):
    a = build_encoder(ref, random_init=True, seed=3)
    b = build_encoder(ref, random_init=True, seed=3)
    data = decoded(a, seed=1)
    rows, _ = rows_of(a, *data)
    one_by_one, _ = rows_of(b, *data, batch=1)
    np.testing.assert_allclose(rows, one_by_one, rtol=1e-4, atol=1e-4)
    other, _ = rows_of(build_encoder(ref, random_init=True, seed=4), *data)
    assert other.shape != rows.shape or not np.allclose(other, rows)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_family_declares_its_papers_checkpoint(name):
    family = ENCODERS.get(name)
    assert family.default_size in family.sizes and "tiny" in family.sizes
    assert family.summary


@pytest.mark.parametrize("name", list(ENCODERS))
def test_missing_checkpoint_is_an_error_naming_what_to_get(name, tmp_path, monkeypatch):
    from vdial.extract.encoders import WeightsError

    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_encoder(name)
    message = str(err.value)
    assert str(tmp_path / name) in message and "--random-init" in message
