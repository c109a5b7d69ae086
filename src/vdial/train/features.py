"""What a sample reads from the feature stores: one value per input role of its family.

A family declares its roles (`InputSpec`: patch/clip tokens, regions with boxes, or a cached
text embedding); a recipe maps each role to one store feature, or to several that are
concatenated per row after truncating to the shortest (the AVSD legacy `i3d_rgb` + `i3d_flow`
+ `vggish` input, 4224-d). Values are float32 numpy arrays:

* tokens:  {"data": [F, P, D], "rows": valid rows}  F = `frames` (uniformly subsampled with
  np.linspace, or padded with zeros or by repeating the last row), P tokens per row;
* regions: {"data": [N, D], "boxes": [N, 4] as x1/W, y1/H, x2/W, y2/H, "classes": [N]};
  the image size comes from the item's `image_w`/`image_h` extras, else the manifest;
* text:    {"data": [D]}, keyed by dialog id (a caption embedding).

The `visual` ablation acts on every visual role: "zero" zeroes data (and boxes), "shuffle"
reads another media item's features (a fixed derangement of the split's media ids).
`FeatureSet` pickles as paths and opens its stores lazily in each DataLoader worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vdial.cache import FeatureReader, FeatureStore


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """One input role a family reads."""

    kind: Literal["tokens", "regions", "text"] = "tokens"  # what the role's feature holds
    frames: int | None = None  # tokens: rows kept (None: as stored, ragged)
    pad: Literal["zero", "repeat"] = "zero"  # tokens: how short items reach `frames`
    max_regions: int | None = None  # regions: the first N rows at most
    required: bool = True  # the recipe must map this role
    visual: bool = True  # subject to the zeroed/shuffled-visual ablations


@dataclass(frozen=True)
class InputShape:
    """What a model needs to size its input layers for one role."""

    dim: int  # feature dimension (summed over concatenated features)
    tokens: int  # tokens per row (1 for one vector per frame, regions or text)
    rows: int | None  # rows per sample (frames, or max regions), None when ragged


def derangement(ids: list[str], seed: int) -> dict[str, str]:
    """Map each id to a different id (fixed by `seed`), for the shuffled-visual ablation."""
    if len(ids) < 2:
        raise ValueError("the shuffled-visual ablation needs at least two media items")
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[order[i]]: ids[order[(i + 1) % len(ids)]] for i in range(len(ids))}


def sample_rows(n: int, frames: int) -> np.ndarray:
    """`frames` row indices spread uniformly over `n` rows (np.linspace, rounded)."""
    return np.linspace(0, n - 1, frames).round().astype(int)


class FeatureSet:
    """The features of one dataset's roles, read per sample."""

    def __init__(
        self,
        store: str,
        roles: dict[str, tuple[tuple[str, ...], InputSpec]],
        *,
        visual: str = "real",
        seed: int = 0,
        media_ids: list[str] | None = None,
        image_sizes: dict[str, tuple[int, int]] | None = None,
        cache_mb: int = 0,
    ) -> None:
        self.store = store
        self.roles = roles
        self.visual = visual
        self.readers = {
            name: FeatureReader(store, name) for features, _ in roles.values() for name in features
        }
        self.swap = derangement(sorted(set(media_ids or [])), seed) if visual == "shuffle" else {}
        self.image_sizes = dict(image_sizes or {})
        self._cache: dict[tuple[str, str], Any] = {}
        self._cache_left = cache_mb * 2**20

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}  # each worker fills its own
        return state

    # -- checks, done once by the trainer -------------------------------------------------

    def shapes(self) -> dict[str, InputShape]:
        store = FeatureStore.open(self.store, mode="r")
        out = {}
        for role, (features, spec) in self.roles.items():
            shapes = [store[name].item_shape for name in features]
            if spec.kind == "tokens":
                per_row = {s[-2] if len(s) > 1 else 1 for s in shapes}
                if len(per_row) != 1:
                    raise ValueError(
                        f"role {role!r}: features {list(features)} have different tokens per "
                        f"row ({sorted(per_row)}); only features of one grid are concatenated"
                    )
                out[role] = InputShape(sum(s[-1] for s in shapes), per_row.pop(), spec.frames)
            else:
                out[role] = InputShape(
                    sum(s[-1] for s in shapes), 1, spec.max_regions if spec.kind == "regions" else 1
                )
        return out

    def key(self, role: str, sample: Any) -> str:
        return sample.dialog_id if self.roles[role][1].kind == "text" else sample.media_id

    def failed(self) -> set[str]:
        """Ids recorded as failed in any feature the roles read."""
        store = FeatureStore.open(self.store, mode="r")
        return {i for name in self.readers for i in store[name].failures}

    def missing(self, samples: list[Any]) -> dict[str, list[str]]:
        """feature -> ids the samples need that it lacks (an error for the trainer)."""
        store = FeatureStore.open(self.store, mode="r")
        out = {}
        for role, (features, _) in self.roles.items():
            wanted = sorted({self.key(role, s) for s in samples})
            for name in features:
                if name not in store:
                    raise KeyError(
                        f"the store {self.store} has no feature {name!r} (role {role!r}); "
                        f"it has {', '.join(store.features) or 'none'}"
                    )
                absent = store[name].missing(wanted)
                if absent:
                    out[name] = absent
        return out

    # -- reading ---------------------------------------------------------------------------

    def _item(self, name: str, item_id: str, extras: bool) -> Any:
        key = (name, item_id)
        value = self._cache.get(key)
        if value is None:
            reader = self.readers[name]
            value = reader.item(item_id) if extras else {"data": reader[item_id]}
            size = sum(v.nbytes for v in value.values())
            if size <= self._cache_left:
                self._cache[key] = value
                self._cache_left -= size
        return value

    def read(self, sample: Any) -> dict[str, dict[str, np.ndarray]]:
        return {role: self.read_role(role, sample) for role in self.roles}

    def read_role(self, role: str, sample: Any) -> dict[str, np.ndarray]:
        features, spec = self.roles[role]
        item_id = self.key(role, sample)
        if spec.visual and spec.kind != "text":
            item_id = self.swap.get(item_id, item_id)
        if spec.kind == "tokens":
            value = self._tokens(features, spec, item_id)
        elif spec.kind == "regions":
            value = self._regions(features, spec, item_id)
        else:
            value = {"data": np.asarray(self._item(features[0], item_id, False)["data"], "f4")}
            value["data"] = value["data"].reshape(-1)
        if spec.visual and self.visual == "zero":
            value = {k: np.zeros_like(v) if k in ("data", "boxes") else v for k, v in value.items()}
        return value

    def _tokens(self, features: tuple[str, ...], spec: InputSpec, item_id: str) -> dict:
        parts = []
        for name in features:
            rows = np.asarray(self._item(name, item_id, False)["data"], dtype=np.float32)
            parts.append(
                rows[:, None, :] if rows.ndim == 2 else rows.reshape(len(rows), -1, rows.shape[-1])
            )
        # Legacy AVSD features differ by a row or two in length: truncate to the shortest.
        n = min(len(p) for p in parts)
        data = np.concatenate([p[:n] for p in parts], axis=-1) if len(parts) > 1 else parts[0]
        rows = n
        if spec.frames is not None:
            if n >= spec.frames:
                data = data[sample_rows(n, spec.frames)]
                rows = spec.frames
            elif spec.pad == "repeat" and n:
                data = data[np.minimum(np.arange(spec.frames), n - 1)]
                rows = spec.frames
            else:
                pad = np.zeros((spec.frames - n, *data.shape[1:]), np.float32)
                data = np.concatenate([data, pad])
        return {"data": data, "rows": np.asarray(rows)}

    def _regions(self, features: tuple[str, ...], spec: InputSpec, item_id: str) -> dict:
        item = self._item(features[0], item_id, True)
        data = np.asarray(item["data"], np.float32)
        keep = len(data) if spec.max_regions is None else min(len(data), spec.max_regions)
        boxes = np.asarray(item.get("boxes", np.zeros((len(data), 4))), np.float32)[:keep]
        if "image_w" in item and len(item["image_w"]):
            size = (float(item["image_w"][0]), float(item["image_h"][0]))
        elif item_id in self.image_sizes:
            size = self.image_sizes[item_id]
        else:  # no recorded size: the boxes' extent is the best estimate there is
            size = (
                max(float(boxes[:, 2].max(initial=1.0)), 1.0),
                max(float(boxes[:, 3].max(initial=1.0)), 1.0),
            )
        scale = np.asarray([size[0], size[1], size[0], size[1]], np.float32)
        classes = item.get("class_id", item.get("classes"))
        return {
            "data": data[:keep],
            "boxes": np.clip(boxes / scale, 0.0, 1.0),
            "classes": np.asarray(
                classes[:keep] if classes is not None else np.zeros(keep), np.int64
            ),
        }
