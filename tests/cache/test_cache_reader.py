"""FeatureReader: pickles without a handle and serves a torch DataLoader with worker processes."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from tests.cache.cache_testlib import ragged_item
from vdial.cache import FeatureReader


class _IdDataset(torch.utils.data.Dataset):
    """Maps DataLoader indices to ids and reports which process read each item."""

    def __init__(self, reader: FeatureReader, ids: list[str]) -> None:
        self.reader, self.ids = reader, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        item_id = self.ids[index]
        was_open = self.reader.is_open
        rows = torch.from_numpy(self.reader[item_id].astype(np.float32))
        return item_id, rows, os.getpid(), was_open


def _fill(make_feature, ids):
    feature = make_feature()
    with feature.writer(segment_items=4) as writer:
        for item_id in ids:
            writer.add(item_id, ragged_item(item_id, 3), timestamps=np.arange(3))
    return feature


def test_reader_pickles_as_path_and_name_and_reopens_lazily(store, make_feature):
    _fill(make_feature, ["a", "b"])
    reader = FeatureReader(store.path, "dinov2")
    assert not reader.is_open
    np.testing.assert_array_equal(reader["a"], ragged_item("a", 3).astype(np.float16))
    assert reader.is_open and len(reader) == 2 and "b" in reader and "z" not in reader

    clone = pickle.loads(pickle.dumps(reader))
    assert not clone.is_open and clone.path == store.path and clone.feature_name == "dinov2"
    np.testing.assert_array_equal(clone.item("b")["timestamps"], np.arange(3, dtype=np.float32))
    assert sorted(clone.ids) == ["a", "b"]


@pytest.mark.parametrize("context", ["spawn", "fork"])
def test_reader_in_a_dataloader_with_two_workers(store, make_feature, context):
    ids = [f"v{i}" for i in range(8)]
    _fill(make_feature, ids)
    reader = FeatureReader(store.path, "dinov2")
    if context == "fork":
        reader["v0"]  # a forked worker inherits this handle and must not reuse it
    loader = torch.utils.data.DataLoader(
        _IdDataset(reader, ids), batch_size=2, num_workers=2, multiprocessing_context=context
    )
    seen, pids, opens = {}, set(), 0
    for batch_ids, batch, batch_pids, was_open in loader:
        pids.update(batch_pids.tolist())
        opens += int((~was_open).sum())
        for item_id, rows in zip(batch_ids, batch, strict=True):
            seen[item_id] = rows.numpy()
    assert sorted(seen) == ids
    for item_id in ids:
        expected = ragged_item(item_id, 3).astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(seen[item_id], expected)
    assert len(pids) == 2 and os.getpid() not in pids
    assert opens == 2  # each worker opened its own handle exactly once
    assert reader.is_open == (context == "fork")  # spawn: the parent never opened the store
