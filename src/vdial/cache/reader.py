"""`FeatureReader`: a picklable, lazily opened view of one feature for DataLoader workers.

A Zarr handle (and the event-loop thread behind it) must not cross a process boundary, so the
reader pickles as just (path, feature name) and opens its own handle on first access in each
process, including after a fork.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vdial.cache.feature import Feature
from vdial.cache.location import is_url
from vdial.cache.store import FeatureStore


class FeatureReader:
    """Read items of `feature` in store `path` by id; safe to send to worker processes."""

    def __init__(
        self, path: str | Path, feature: str, *, storage_options: dict[str, Any] | None = None
    ) -> None:
        self.path = path if is_url(path) else Path(path)
        self.feature_name = feature
        self.storage_options = dict(storage_options or {})
        self._feature: Feature | None = None
        self._pid: int | None = None

    def __repr__(self) -> str:
        return f"FeatureReader({str(self.path)!r}, {self.feature_name!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "feature": self.feature_name,
            "storage_options": self.storage_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["feature"], storage_options=state["storage_options"])

    @property
    def is_open(self) -> bool:
        """Whether this process holds an open handle."""
        return self._feature is not None and self._pid == os.getpid()

    @property
    def feature(self) -> Feature:
        if not self.is_open:
            store = FeatureStore.open(self.path, "r", storage_options=self.storage_options or None)
            self._feature = store[self.feature_name]
            self._pid = os.getpid()
        return self._feature

    def __getitem__(self, item_id: str) -> np.ndarray:
        return self.feature[item_id]

    def item(self, item_id: str) -> dict[str, np.ndarray]:
        return self.feature.item(item_id)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.feature

    def __len__(self) -> int:
        return len(self.feature)

    @property
    def ids(self) -> list[str]:
        return self.feature.ids
