"""VisDial / bottom-up-attention region features in HDF5 into a store (`legacy_h5_export` back).

Layouts read (N images, K padded boxes, R regions in all, D feature dims):

* Padded with `image_id` — batra-mlp-lab/visdial-challenge-starter-pytorch
  `visdialch/data/readers.py` (ImageFeaturesHdfReader): "image_id" (N,), "features" (N, K, D),
  attrs["split"]. HDF5 conversions of peteanderson80/bottom-up-attention TSVs for LXMERT- or
  VisualBERT-style loaders (the fields airsplay/lxmert's `load_obj_tsv` decodes: img_id, img_h,
  img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features) hold in
  addition "num_boxes" (N,), "image_h"/"image_w" (N,), "boxes" (N, K, 4) and (N, K)
  class/attribute arrays, padded to K = 36 or 100; any dataset name of that shape is kept.
* Padded with `image_ids` — the same repo's `data/extract_features_detectron.py`: "image_ids"
  (N,) int, "features" (N, 100, 2048), "boxes" (N, 100, 4), "classes" and "scores" (N, 100)
  (float32: h5py's default dtype), attrs["split"].
* hengyuan-hu/bottom-up-attention-vqa `tools/detection_features_converter.py`: "image_features"
  (N, 36, 2048), "image_bb" (N, 36, 4), "spatial_features" (N, 36, 6); ids live in a separate
  `{image_id: row}` pickle, passed as `id_map`.
* Flat (10-100 adaptive boxes) — `tools/adaptive_detection_features_converter.py` of the same
  lineage (jnhwkim/ban-vqa; used for VisDial by DAN as `features_dan_faster_rcnn_x101_<split>.h5`
  with `<split>_imgid2idx.pkl`): "image_features" (R, D), "image_bb" (R, 4), "spatial_features"
  (R, 6) and "pos_boxes" (N, 2) holding each image's [start, end) rows; needs `id_map`.

Each image becomes one item of its real regions (padding rows beyond `num_boxes` are dropped, and
counted in the report when not zero). Every other dataset is kept: per-region arrays become
per-row extras, per-image arrays (image_h, image_w, ...) become per-row extras repeated on each
of the image's rows. Repeating is chosen over feature attributes because a consumer gets them
with the boxes from one `feature.item(id)`, and attributes of 100k images would make opening the
store slow; only images without any region (nothing to repeat on) keep theirs in the spec under
"rowless". `num_boxes` itself is the item's row count (its dtype is in the spec). Integer ids
become strings in the store and go back to the original dtype on export. The file is read in
blocks of about `block_bytes`, never whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vdial.cache.feature import Feature
from vdial.cache.legacy_common import (
    IMPORT_STAGE,
    DtypePolicy,
    ImportReport,
    create_or_resume,
    default_name,
    file_provenance,
    json_value,
    load_pickle,
    progress_bar,
    resolve_dtype,
)
from vdial.cache.store import FeatureStore

ID_KEYS = ("image_id", "image_ids")
FEATURE_KEYS = ("features", "image_features")
NUM_BOXES = "num_boxes"
POS_BOXES = "pos_boxes"
BLOCK_BYTES = 64 << 20
VLEN_STR = "vlen-str"  # id dtype of variable-length string ids


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(f"no HDF5 file at {path}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from None


def _ids_from_dataset(path: Path, ds: h5py.Dataset) -> tuple[list[str], str]:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return [str(v) for v in ds.asstr()[()]], VLEN_STR
    if ds.dtype.kind in "iu":
        return [str(int(v)) for v in ds[()]], ds.dtype.str
    if ds.dtype.kind == "S":
        return [v.decode() for v in ds[()]], ds.dtype.str
    raise ValueError(f"{path}: id dataset {ds.name!r} has dtype {ds.dtype}; expected ints or text")


def _ids_from_map(path: Path, rows: int) -> tuple[list[str], list[int], str]:
    mapping = load_pickle(path)
    if not isinstance(mapping, dict) or not all(
        isinstance(v, int | np.integer) and 0 <= v < rows for v in mapping.values()
    ):
        raise ValueError(f"{path}: expected a {{image_id: row}} dict with rows in [0, {rows})")
    if len(set(map(int, mapping.values()))) != len(mapping):
        raise ValueError(f"{path}: several image ids map to the same row")
    pairs = sorted(((int(row), key) for key, row in mapping.items()), key=lambda p: p[0])
    keys = [key for _, key in pairs]
    ints = all(isinstance(k, int | np.integer) for k in keys)
    ids = [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
    return ids, [row for row, _ in pairs], ("<i8" if ints else VLEN_STR)


def _extra_name(key: str) -> str:
    name = re.sub(r"\W", "_", key)
    return name if name.isidentifier() and name != "data" else f"h5_{name}"


def _inspect(h5: h5py.File, path: Path, id_map: Path | None) -> dict[str, Any]:
    """Which datasets hold what; raises ValueError naming the file for anything unexpected."""
    datasets = {}
    for key, node in h5.items():
        if not isinstance(node, h5py.Dataset):
            raise ValueError(f"{path}: {key!r} is a group; only files of plain datasets are read")
        datasets[key] = node
    features_key = next((k for k in FEATURE_KEYS if k in datasets), None)
    if features_key is None:
        raise ValueError(
            f"{path}: no 'features' (or 'image_features') dataset; datasets: {sorted(datasets)}"
        )
    features = datasets[features_key]
    flat = POS_BOXES in datasets
    if flat:
        pos = datasets[POS_BOXES]
        if pos.ndim != 2 or pos.shape[1] != 2 or features.ndim < 1:
            raise ValueError(
                f"{path}: flat layout needs 'pos_boxes' (N, 2) and {features_key!r} (R, ...); "
                f"got {pos.shape} and {features.shape}"
            )
        n_rows, n_regions, max_boxes = pos.shape[0], features.shape[0], 0
    else:
        if features.ndim < 2:
            raise ValueError(
                f"{path}: {features_key!r} has shape {features.shape}; expected (images, boxes, "
                f"...) padded, or a 'pos_boxes' dataset for the flat layout"
            )
        n_rows, n_regions, max_boxes = features.shape[0], None, features.shape[1]
    id_key = next((k for k in ID_KEYS if k in datasets), None)
    if id_key is not None:
        if datasets[id_key].shape != (n_rows,):
            raise ValueError(
                f"{path}: {id_key!r} has shape {datasets[id_key].shape}; expected ({n_rows},), one "
                f"id per image of {features_key!r}"
            )
        ids, id_dtype = _ids_from_dataset(path, datasets[id_key])
        rows = list(range(n_rows))
    elif id_map is not None:
        ids, rows, id_dtype = _ids_from_map(id_map, n_rows)
    else:
        raise ValueError(
            f"{path}: no 'image_id' or 'image_ids' dataset and no id map given (bottom-up-"
            f"attention-vqa files keep ids in a separate <split>_imgid2idx.pkl: pass it)"
        )
    seen: set[str] = set()
    duplicates = sorted({i for i in ids if i in seen or seen.add(i)})
    if duplicates:
        raise ValueError(f"{path}: {len(duplicates)} duplicated image id(s), e.g. {duplicates[:5]}")
    num_boxes = datasets.get(NUM_BOXES)
    if num_boxes is not None and (flat or num_boxes.shape != (n_rows,)):
        raise ValueError(
            f"{path}: 'num_boxes' has shape {num_boxes.shape}; expected ({n_rows},) with padded "
            f"features"
        )
    extras: dict[str, dict[str, Any]] = {}
    for key, ds in datasets.items():
        if key in (features_key, id_key, NUM_BOXES, POS_BOXES):
            continue
        if ds.dtype.kind not in "biuf":
            raise ValueError(f"{path}: dataset {key!r} has dtype {ds.dtype}; cannot keep it")
        if flat and ds.ndim >= 1 and ds.shape[0] == n_regions:
            per, shape = "region", ds.shape[1:]
        elif not flat and ds.ndim >= 2 and ds.shape[:2] == (n_rows, max_boxes):
            per, shape = "region", ds.shape[2:]
        elif ds.ndim >= 1 and ds.shape[0] == n_rows:
            per, shape = "image", ds.shape[1:]
        else:
            raise ValueError(
                f"{path}: dataset {key!r} has shape {ds.shape}: neither per image ({n_rows}, ...) "
                f"nor per region ({n_regions or f'{n_rows}, {max_boxes}'}, ...); cannot keep it"
            )
        name = _extra_name(key)
        if name in extras:
            raise ValueError(f"{path}: datasets {extras[name]['key']!r} and {key!r} clash")
        extras[name] = {"key": key, "per": per, "shape": shape, "dtype": ds.dtype}
    return {
        "datasets": datasets,
        "flat": flat,
        "features_key": features_key,
        "id_key": id_key,
        "id_dtype": id_dtype,
        "ids": ids,
        "rows": rows,
        "max_boxes": max_boxes,
        "extras": extras,
    }


def _lengths(info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(start, count) of each image's regions, in the order of `info["rows"]`."""
    rows = np.asarray(info["rows"], dtype=np.int64)
    datasets = info["datasets"]
    if info["flat"]:
        pos = datasets[POS_BOXES][()].astype(np.int64)[rows]
        return pos[:, 0], pos[:, 1] - pos[:, 0]
    if NUM_BOXES in datasets:
        return np.zeros(len(rows), np.int64), datasets[NUM_BOXES][()].astype(np.int64)[rows]
    return np.zeros(len(rows), np.int64), np.full(len(rows), info["max_boxes"], np.int64)


def _read(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Rows of `ds` (increasing); one slice when they are contiguous, as they usually are."""
    if rows[-1] - rows[0] + 1 == len(rows):
        return ds[int(rows[0]) : int(rows[-1]) + 1]
    return ds[rows.tolist()]


def import_visdial_h5(
    store: FeatureStore,
    path: str | Path,
    *,
    name: str | None = None,
    id_map: str | Path | None = None,
    dtype: DtypePolicy = "keep",
    progress: bool = True,
    block_bytes: int = BLOCK_BYTES,
) -> ImportReport:
    """Import a bottom-up region-feature HDF5 file as feature `name` (default: the file stem).

    `id_map` is the `{image_id: row}` pickle of files without an id dataset; `dtype` is "keep"
    (exact), "float16" or "float32" for the region features (extras keep their dtypes).
    """
    path = Path(path)
    id_map = Path(id_map) if id_map is not None else None
    name = name or default_name(path.stem)
    with _open(path) as h5:
        info = _inspect(h5, path, id_map)
        datasets, extras = info["datasets"], info["extras"]
        features = datasets[info["features_key"]]
        starts, counts = _lengths(info)
        item_shape = features.shape[1:] if info["flat"] else features.shape[2:]
        stored = resolve_dtype(dtype, features.dtype)
        rowless = {}
        for item_id, row, count in zip(info["ids"], info["rows"], counts, strict=True):
            if count == 0:  # per-image values have no row to ride on: keep them in the spec
                rowless[item_id] = {
                    n: json_value(datasets[e["key"]][row])
                    for n, e in extras.items()
                    if e["per"] == "image"
                }
        source = {
            "format": "visdial-h5",
            **file_provenance(path),
            "layout": "flat" if info["flat"] else "padded",
            "features_key": info["features_key"],
            "id_key": info["id_key"],
            "id_dtype": info["id_dtype"],
            "id_map": file_provenance(id_map) if id_map is not None else None,
            "num_boxes_dtype": datasets[NUM_BOXES].dtype.str if NUM_BOXES in datasets else None,
            "max_boxes": info["max_boxes"],
            "dtype": features.dtype.str,
            "extras": {n: {"key": e["key"], "per": e["per"]} for n, e in extras.items()},
            "datasets": {
                k: {"shape": list(ds.shape), "dtype": ds.dtype.str} for k, ds in datasets.items()
            },
            "attrs": {k: json_value(v) for k, v in h5.attrs.items()},
            "rowless": rowless,
        }
        feature, note = create_or_resume(
            store,
            name,
            {"name": name, "dtype_policy": dtype, "source": source},
            item_shape=item_shape,
            dtype=stored.name,
            extras={n: (e["shape"], e["dtype"].name) for n, e in extras.items()},
        )
        row_bytes = features.dtype.itemsize * int(np.prod(item_shape)) + sum(
            e["dtype"].itemsize * int(np.prod(e["shape"])) for e in extras.values()
        )
        per_image_bytes = max(1, row_bytes * max(info["max_boxes"], int(counts.max(initial=1))))
        block = max(1, block_bytes // per_image_bytes)
        report = _copy(feature, path, info, starts, counts, block, progress)
    return replace(report, notes=(note, *report.notes)) if note else report


def _copy(
    feature: Feature,
    path: Path,
    info: dict[str, Any],
    starts: np.ndarray,
    counts: np.ndarray,
    block: int,
    progress: bool,
) -> ImportReport:
    ids = info["ids"]
    limit = info["datasets"][info["features_key"]].shape[0] if info["flat"] else info["max_boxes"]
    what = POS_BOXES if info["flat"] else NUM_BOXES
    added = skipped = failed = dirty = 0
    with progress_bar(progress) as bar, feature.writer() as writer:
        task = bar.add_task(f"importing {path.name} -> {feature.name}", total=len(ids))
        for lo in range(0, len(ids), block):
            hi = min(lo + block, len(ids))
            good = []
            for j in range(lo, hi):
                if ids[j] in feature:  # resuming: written by an earlier run
                    skipped += 1
                elif counts[j] < 0 or starts[j] < 0 or starts[j] + counts[j] > limit:
                    end = starts[j] + counts[j]
                    message = f"{path}: image {ids[j]}: {what} gives rows [{starts[j]}, {end})"
                    writer.fail(ids[j], IMPORT_STAGE, f"{message}, outside the {limit} stored")
                    failed += 1
                else:
                    good.append(j)
            for j, data, extras, padded in _block_items(info, lo, hi, good, starts, counts):
                dirty += padded
                try:
                    writer.add(ids[j], data, **extras)
                except ValueError as err:  # e.g. float16 overflow: this image fails, not all
                    writer.fail(ids[j], IMPORT_STAGE, f"{path}: image {ids[j]}: {err}")
                    failed += 1
                else:
                    added += 1
            bar.advance(task, hi - lo)
    notes = ()
    if dirty:
        notes = (
            f"{dirty} image(s) had non-zero values in padding rows beyond num_boxes; those rows "
            f"were dropped (export pads with zeros)",
        )
    return ImportReport(
        feature=feature.name, added=added, skipped=skipped, failed=failed, notes=notes
    )


def _block_items(
    info: dict[str, Any],
    lo: int,
    hi: int,
    good: list[int],
    starts: np.ndarray,
    counts: np.ndarray,
) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray], bool]]:
    """(index, regions, extras, non-zero padding?) of images `good` of block [lo, hi).

    Each dataset is read once per block: padded files by image rows, flat ones by the span of
    regions the block covers (contiguous in converter output, so the span is tight).
    """
    if not good:
        return
    datasets, extras, flat = info["datasets"], info["extras"], info["flat"]
    rows = np.asarray(info["rows"][lo:hi], dtype=np.int64)
    if flat:
        r0 = int(min(starts[j] for j in good))
        r1 = int(max(starts[j] + counts[j] for j in good))

        def region(ds: h5py.Dataset) -> np.ndarray:
            return ds[r0:r1]
    else:

        def region(ds: h5py.Dataset) -> np.ndarray:
            return _read(ds, rows)

    data = region(datasets[info["features_key"]])
    columns = {
        n: region(datasets[e["key"]]) if e["per"] == "region" else _read(datasets[e["key"]], rows)
        for n, e in extras.items()
    }
    per_region = [n for n, e in extras.items() if e["per"] == "region"]
    for j in good:
        n, local = int(counts[j]), j - lo
        if flat:
            at: tuple = (slice(int(starts[j]) - r0, int(starts[j]) - r0 + n),)
            padded = False
        else:
            at = (local, slice(0, n))
            tails = [data[local, n:], *(columns[c][local, n:] for c in per_region)]
            padded = any(bool(np.any(t != 0)) for t in tails)
        item_extras = {
            c: columns[c][at] if c in per_region else np.repeat(columns[c][local][None], n, axis=0)
            for c in extras
        }
        yield j, data[at], item_extras, padded
