"""Fixtures for the feature-cache tests: a fresh store and a feature factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cache.cache_testlib import SPEC
from vdial.cache import FeatureStore


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore.open(tmp_path / "cache" / "toy", mode="a")


@pytest.fixture
def make_feature(store: FeatureStore):
    def make(name: str = "dinov2", **kwargs):
        kwargs.setdefault("item_shape", (16, 8))
        kwargs.setdefault("spec", SPEC)
        kwargs.setdefault("extras", {"timestamps": ((), "float32")})
        return store.create_feature(name, **kwargs)

    return make
