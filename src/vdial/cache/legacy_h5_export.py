"""Export a feature in the padded VisDial bottom-up HDF5 layout (see `legacy_h5` for layouts).

The file is what batra-mlp-lab/visdial-challenge-starter-pytorch's ImageFeaturesHdfReader and the
LXMERT-style loaders read: an id dataset (N,), "features" (N, K, D) zero-padded to K boxes,
"num_boxes" (N,), per-region arrays (N, K, ...) such as "boxes", and per-image arrays (N, ...)
such as "image_h". A feature imported by `import_visdial_h5` from a padded file comes back with
the same dataset names, dtypes, K and file attributes, so the arrays are identical to the
source's; one from a flat file comes back padded. Items are read and written in blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vdial.cache.feature import Feature
from vdial.cache.legacy_common import progress_bar
from vdial.cache.legacy_h5 import BLOCK_BYTES, NUM_BOXES, VLEN_STR


def _id_array(ids: list[str], id_dtype: str | None) -> tuple[np.ndarray | list[str], Any]:
    """Ids in the dtype they had in the source (ints when every id is a plain integer)."""
    if id_dtype is None:
        id_dtype = "<i8" if all(i.isdigit() and str(int(i)) == i for i in ids) else VLEN_STR
    if id_dtype == VLEN_STR:
        return ids, h5py.string_dtype()
    dtype = np.dtype(id_dtype)
    try:
        values = [i.encode() if dtype.kind == "S" else int(i) for i in ids]
        return np.array(values, dtype=dtype), dtype
    except (ValueError, OverflowError):
        raise ValueError(f"ids such as {ids[:3]} cannot be written as {dtype}") from None


def export_visdial_h5(feature: Feature, out_path: str | Path, *, progress: bool = True) -> int:
    """Write `feature` in the padded bottom-up layout; returns the number of images written.

    Items are padded with zeros to the largest region count (at least the source's K), with
    "num_boxes" (N,), the ids, per-region extras as (N, K, ...) and per-image ones as (N, ...).
    A feature imported by `import_visdial_h5` gets its dataset names, id and num_boxes dtypes,
    per-image values and file attributes back.
    """
    out_path = Path(out_path)
    spec_source = feature.spec.get("source") or {}
    source = spec_source if spec_source.get("format") == "visdial-h5" else {}
    meta = source.get("extras", {})
    rowless = source.get("rowless", {})
    ids = feature.ids
    counts = np.array([feature.location(i)[2] for i in ids], dtype=np.int64)
    k = max(int(counts.max(initial=0)), int(source.get("max_boxes") or 0))
    n = len(ids)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out_path, "w") as h5:
        id_values, id_dtype = _id_array(ids, source.get("id_dtype"))
        h5.create_dataset(source.get("id_key") or "image_id", data=id_values, dtype=id_dtype)
        h5.create_dataset(NUM_BOXES, data=counts.astype(source.get("num_boxes_dtype") or "<i8"))
        columns = {"data": (feature.item_shape, feature.dtype, "region")}
        for e_name, (shape, dtype) in feature.extras.items():
            columns[e_name] = (shape, dtype, meta.get(e_name, {}).get("per", "region"))
        out = {}
        for col, (shape, dtype, per) in columns.items():
            key = source.get("features_key", "features") if col == "data" else col
            key = meta.get(col, {}).get("key", key)
            if key in h5:
                raise ValueError(f"feature {feature.name!r}: extra {col!r} would overwrite {key!r}")
            full = (n, k, *shape) if per == "region" else (n, *shape)
            chunks = (1, *full[1:]) if all(full) and len(full) > 1 else None
            out[col] = h5.create_dataset(key, shape=full, dtype=dtype, chunks=chunks, fillvalue=0)
        for attr, value in source.get("attrs", {}).items():
            h5.attrs[attr] = value
        row_bytes = sum(np.dtype(d).itemsize * int(np.prod(s)) for s, d, _ in columns.values())
        block = max(1, BLOCK_BYTES // max(1, row_bytes * max(k, 1)))
        with progress_bar(progress) as bar:
            task = bar.add_task(f"exporting {feature.name} to {out_path.name}", total=n)
            for lo in range(0, n, block):
                hi = min(lo + block, n)
                buffers = {c: np.zeros((hi - lo, *ds.shape[1:]), ds.dtype) for c, ds in out.items()}
                items = dict(feature.iter_items(ids[lo:hi]))  # a segment read, not item reads
                for j, item_id in enumerate(ids[lo:hi]):
                    item, rows = items[item_id], int(counts[lo + j])
                    for col, (_, _, per) in columns.items():
                        if per == "region":
                            buffers[col][j, :rows] = item[col]
                        elif rows:
                            buffers[col][j] = item[col][0]
                        elif item_id in rowless and col in rowless[item_id]:
                            buffers[col][j] = rowless[item_id][col]
                for col, ds in out.items():
                    ds[lo:hi] = buffers[col]
                bar.advance(task, hi - lo)
    return n
