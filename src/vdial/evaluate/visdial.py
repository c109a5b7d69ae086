"""VisDial v1.0 retrieval metrics, computed as the VisDial challenge computes them.

Each round offers N = 100 candidate answers. A model's output for a round is a ranking of the
options (`ranks[i]` = 1-based rank of option i). The metrics follow the challenge's reference
code (batra-mlp-lab/visdial-challenge-starter-pytorch, `visdialch/metrics.py`):

* R@1, R@5, R@10, MRR and mean rank of the ground-truth option (`gt_index`), averaged over
  every round that has one;
* NDCG over the densely annotated rounds, with the per-round cut-off k = the number of options
  with non-zero relevance: DCG of the relevances of the top-k predicted options with discount
  log2(position + 1), divided by the DCG of the k largest relevances.

Tie rule: scores are turned into ranks by a stable descending sort, so options with equal
scores are ranked by option index, lower index first (`TIE_RULE`; the reference code uses
PyTorch's unstable sort, which leaves ties unspecified). Submissions in the official ranks
format are permutations and need no tie rule.

Missing rounds: a scored round without a prediction counts as the worst case, the
ground-truth option at rank N (R@k 0, reciprocal rank 1/N) and NDCG 0; it is listed under
"missing". A densely annotated round whose relevances are all zero has no NDCG (the reference
divides by zero); it is left out of NDCG and listed under "ndcg_undefined".

Rounds are keyed by (image_id, round_id) with round_id 1-based, as in the submission format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.table import Table

from vdial.evaluate.avsd import EvaluationError, read_json

PROTOCOL = "visdial/v1.0"
TIE_RULE = "stable-descending: equal scores are ranked by option index, lower index first"
METRIC_KEYS = ("r@1", "r@5", "r@10", "mrr", "mean_rank", "ndcg")
HEADERS = {
    "r@1": "R@1",
    "r@5": "R@5",
    "r@10": "R@10",
    "mrr": "MRR",
    "mean_rank": "mean rank",
    "ndcg": "NDCG",
}

RoundKey = tuple[int, int]  # (image_id, 1-based round_id)


@dataclass(frozen=True, kw_only=True)
class VisdialReferences:
    """Every round with answer options of a VisDial file, with its ground truth."""

    keys: tuple[RoundKey, ...]  # (image_id, round_id) of each round, in file order
    option_ids: np.ndarray  # [R, N] int: option i of round r is vocabulary[option_ids[r, i]]
    vocabulary: tuple[str, ...]  # the file's `data.answers`, shared by all rounds
    gt_index: np.ndarray  # [R] int: index of the ground-truth option, -1 where there is none
    relevance: np.ndarray  # [R, N] float: dense relevance, rows of NaN where not annotated

    def __post_init__(self) -> None:
        n_rounds = len(self.keys)
        if self.option_ids.ndim != 2 or self.option_ids.shape[0] != n_rounds:
            raise ValueError(f"option_ids must be [{n_rounds}, N], got {self.option_ids.shape}")
        if self.gt_index.shape != (n_rounds,):
            raise ValueError(f"gt_index must be [{n_rounds}], got {self.gt_index.shape}")
        if self.relevance.shape != self.option_ids.shape:
            raise ValueError(f"relevance must be {self.option_ids.shape}")

    @property
    def num_options(self) -> int:
        return self.option_ids.shape[1]

    @cached_property
    def row(self) -> dict[RoundKey, int]:
        """Row of each round key."""
        return {key: r for r, key in enumerate(self.keys)}

    @cached_property
    def scored(self) -> np.ndarray:
        """[R] bool: the round has a ground-truth option or dense relevances."""
        return (self.gt_index >= 0) | ~np.isnan(self.relevance).all(axis=1)


def load_references(path: str | Path, dense: str | Path | None = None) -> VisdialReferences:
    """The rounds with answer options of a VisDial v1.0 file, plus optional dense relevances.

    Reads through the manifest reader, so malformed files fail with the file and location.
    """
    # pyarrow (through the manifest reader) loads only when references are read.
    from vdial.manifests.schema import ManifestError
    from vdial.manifests.visdial import read_visdial

    path = Path(path)
    dense_files = {"eval": Path(dense)} if dense is not None else None
    try:
        manifest = read_visdial({"eval": path}, None, name="visdial-eval", dense=dense_files)
    except ManifestError as err:
        raise EvaluationError(str(err)) from err
    vocabulary = tuple(read_json(path)["data"]["answers"])
    # A string listed twice maps to its first index (both would embed identically).
    lookup = {answer: i for i, answer in reversed(list(enumerate(vocabulary)))}
    columns = manifest.dialogs.select(
        ["dialog_id", "turn", "answer_options", "gt_index", "relevance"]
    ).to_pydict()
    keys, options, gt_index, relevance = [], [], [], []
    n_options = 0
    for image_id, turn, opts, gt, rel in zip(*columns.values(), strict=True):
        if opts is None:
            continue
        n_options = len(opts)
        keys.append((int(image_id), turn + 1))
        options.append([lookup[o] for o in opts])
        gt_index.append(-1 if gt is None else gt)
        relevance.append([np.nan] * len(opts) if rel is None else rel)
    if not keys:
        raise EvaluationError(f"{path}: no round has answer options")
    refs = VisdialReferences(
        keys=tuple(keys),
        option_ids=np.asarray(options, dtype=np.int64).reshape(len(keys), n_options),
        vocabulary=vocabulary,
        gt_index=np.asarray(gt_index, dtype=np.int64),
        relevance=np.asarray(relevance, dtype=np.float64).reshape(len(keys), n_options),
    )
    if not refs.scored.any():
        raise EvaluationError(
            f"{path}: no round has a gt_index or dense relevances (a test file needs --dense)"
        )
    return refs


def ranks_from_scores(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of scores [..., N], highest score first, ties by lower option index."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise EvaluationError("scores contain NaN or infinite values")
    # A stable sort of the negated scores keeps equal scores in option order (TIE_RULE).
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    positions = np.broadcast_to(np.arange(1, scores.shape[-1] + 1), order.shape)
    np.put_along_axis(ranks, order, positions, axis=-1)
    return ranks


def rank_rounds(scores: Mapping[RoundKey, np.ndarray]) -> dict[RoundKey, np.ndarray]:
    """Ranks of every round's option scores, by `ranks_from_scores` (one batched sort)."""
    if not scores:
        return {}
    keys = list(scores)
    ranks = ranks_from_scores(np.stack([np.asarray(scores[k]) for k in keys]))
    return dict(zip(keys, ranks, strict=True))


def _int(value: Any, where: str) -> int:
    # bool is an int subclass; an image_id of `true` is malformed, not 1.
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise EvaluationError(f"{where}: expected an integer, got {value!r}")
    return int(value)


def _key(
    image_id: Any,
    round_id: Any,
    where: tuple[Path, str],  # the file and the entry's location in it
    seen: dict[RoundKey, str],
    references: VisdialReferences | None,
) -> RoundKey:
    """The checked (image_id, round_id) of one prediction; `seen` records where each was."""
    path, at = where
    key = (_int(image_id, f"{path}: {at}.image_id"), _int(round_id, f"{path}: {at}.round_id"))
    if key[1] < 1:
        raise EvaluationError(f"{path}: {at}: round_id {key[1]} is not 1-based (rounds start at 1)")
    if key in seen:
        raise EvaluationError(
            f"{path}: {at}: second prediction for image_id {key[0]} round_id {key[1]} "
            f"(first at {seen[key]})"
        )
    if references is not None and key not in references.row:
        raise EvaluationError(
            f"{path}: {at}: image_id {key[0]} round_id {key[1]} is not a round with answer "
            "options in the references"
        )
    seen[key] = at
    return key


def _entries(
    path: Path, field: str, references: VisdialReferences | None
) -> list[tuple[RoundKey, Any, str]]:
    """(key, value of `field`, location) of each entry of a JSON list of round predictions."""
    data = read_json(path)
    if not isinstance(data, list):
        raise EvaluationError(
            f'{path}: expected a JSON list of {{"image_id", "round_id", "{field}"}} objects, '
            f"got {type(data).__name__}"
        )
    seen: dict[RoundKey, str] = {}
    out = []
    for i, entry in enumerate(data):
        where = f"{path}: [{i}]"
        if not isinstance(entry, dict):
            raise EvaluationError(f"{where}: expected an object, got {entry!r:.60}")
        for name in ("image_id", "round_id", field):
            if name not in entry:
                raise EvaluationError(f"{where}: missing {name!r}")
        key = _key(entry["image_id"], entry["round_id"], (path, f"[{i}]"), seen, references)
        out.append((key, entry[field], where))
    return out


def _numbers(value: Any, n: int, where: str, *, integer: bool) -> np.ndarray:
    kind = "integers" if integer else "numbers"
    if not isinstance(value, list) or len(value) != n:
        got = f"{len(value)} values" if isinstance(value, list) else repr(value)[:60]
        raise EvaluationError(f"{where}: expected a list of {n} {kind}, got {got}")
    allowed = int if integer else int | float
    for v in value:
        if not isinstance(v, allowed) or isinstance(v, bool):
            raise EvaluationError(f"{where}: expected a list of {n} {kind}, found {v!r:.60}")
    return np.asarray(value, dtype=np.int64 if integer else np.float64)


def load_ranks(
    path: str | Path, *, references: VisdialReferences | None = None, num_options: int = 100
) -> dict[RoundKey, np.ndarray]:
    """Ranks from the official submission format: a JSON list of {"image_id", "round_id",
    "ranks"}, where ranks[i] is the 1-based rank of option i; each must be a permutation."""
    path = Path(path)
    n = references.num_options if references is not None else num_options
    out = {}
    for key, value, where in _entries(path, "ranks", references):
        ranks = _numbers(value, n, f"{where}.ranks", integer=True)
        counts = np.bincount(np.clip(ranks, 0, n + 1), minlength=n + 2)[1 : n + 1]
        if (counts != 1).any():
            duplicate = (np.flatnonzero(counts > 1) + 1).tolist()
            absent = (np.flatnonzero(counts == 0) + 1).tolist()
            raise EvaluationError(
                f"{where}.ranks: not a permutation of 1..{n}: duplicated {duplicate[:5]}, "
                f"missing {absent[:5]}"
            )
        out[key] = ranks
    return out


def load_scores(
    path: str | Path, *, references: VisdialReferences | None = None, num_options: int = 100
) -> dict[RoundKey, np.ndarray]:
    """Option scores (higher = better) from a JSON list of {"image_id", "round_id", "scores"}
    or an .npz with arrays `image_id` [R], `round_id` [R] and `scores` [R, N]."""
    path = Path(path)
    n = references.num_options if references is not None else num_options
    out: dict[RoundKey, np.ndarray] = {}
    if path.suffix == ".npz":
        if not path.is_file():
            raise EvaluationError(f"{path}: file not found")
        with np.load(path) as npz:
            absent = [k for k in ("image_id", "round_id", "scores") if k not in npz]
            if absent:
                raise EvaluationError(f"{path}: missing array(s) {absent}")
            image_ids, round_ids, scores = npz["image_id"], npz["round_id"], npz["scores"]
        if scores.shape != (len(image_ids), n) or round_ids.shape != image_ids.shape:
            raise EvaluationError(
                f"{path}: expected image_id [R], round_id [R] and scores [R, {n}], got "
                f"{image_ids.shape}, {round_ids.shape} and {scores.shape}"
            )
        if not np.issubdtype(image_ids.dtype, np.integer) or not np.issubdtype(
            round_ids.dtype, np.integer
        ):
            raise EvaluationError(f"{path}: image_id and round_id must be integer arrays")
        seen: dict[RoundKey, str] = {}
        for i, (image_id, round_id) in enumerate(zip(image_ids, round_ids, strict=True)):
            key = _key(image_id, round_id, (path, f"row {i}"), seen, references)
            if not np.isfinite(scores[i]).all():
                raise EvaluationError(f"{path}: row {i}: scores contain NaN or infinite values")
            out[key] = scores[i].astype(np.float64)
        return out
    for key, value, where in _entries(path, "scores", references):
        scores = _numbers(value, n, f"{where}.scores", integer=False)
        if not np.isfinite(scores).all():
            raise EvaluationError(f"{where}.scores: contains NaN or infinite values")
        out[key] = scores
    return out


def load_answers(
    path: str | Path, *, references: VisdialReferences | None = None
) -> dict[RoundKey, str]:
    """Generated answers: a JSON list of {"image_id", "round_id", "answer": str}."""
    out = {}
    for key, value, where in _entries(Path(path), "answer", references):
        if not isinstance(value, str):
            raise EvaluationError(f"{where}.answer: expected a string, got {value!r:.60}")
        out[key] = value
    return out


def ndcg_per_round(ranks: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """[R] NDCG with cut-off k = number of non-zero relevances; NaN where k = 0."""
    ranks = np.asarray(ranks)
    relevance = np.asarray(relevance, dtype=np.float64)
    n = ranks.shape[-1]
    order = np.argsort(ranks, axis=-1)  # option ids by predicted position
    discount = 1.0 / np.log2(np.arange(n) + 2.0)
    cut = np.arange(n) < np.count_nonzero(relevance, axis=-1)[:, None]
    dcg = (np.take_along_axis(relevance, order, axis=-1) * discount * cut).sum(-1)
    ideal = (-np.sort(-relevance, axis=-1) * discount * cut).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(cut.any(-1), dcg / ideal, np.nan)


def _summary(gt_ranks: np.ndarray, ndcg: np.ndarray) -> dict[str, Any]:
    """Metrics over the given ground-truth ranks and NDCG values (None when there are none)."""
    out: dict[str, Any] = {"n_rounds": int(gt_ranks.size), "n_ndcg": int(ndcg.size)}
    has = gt_ranks.size > 0
    for k in (1, 5, 10):
        out[f"r@{k}"] = float(np.mean(gt_ranks <= k)) if has else None
    out["mrr"] = float(np.mean(1.0 / gt_ranks)) if has else None
    out["mean_rank"] = float(np.mean(gt_ranks)) if has else None
    out["ndcg"] = float(np.mean(ndcg)) if ndcg.size else None
    return out


def evaluate_visdial(
    ranks: Mapping[RoundKey, np.ndarray],
    references: VisdialReferences,
    *,
    question_types: Mapping[str, list[str]] | None = None,
    ranker: str | None = None,
) -> dict[str, Any]:
    """Score predicted option ranks against `references`, overall and per question type.

    `ranks` maps (image_id, round_id) to N 1-based ranks. A prediction for a round that is
    not in the references is an error; a prediction for a round without ground truth or
    dense relevances is ignored. `question_types` maps str(image_id) to the type of each
    round (index round_id - 1). `ranker` names the ranker that produced the ranks, if any.
    """
    unknown = [key for key in ranks if key not in references.row]
    if unknown:
        raise EvaluationError(
            f"{len(unknown)} predicted round(s) are not rounds with answer options in the "
            f"references, e.g. (image_id, round_id) {unknown[:5]}"
        )
    n = references.num_options
    rows = np.flatnonzero(references.scored)
    keys = [references.keys[r] for r in rows]
    present = np.array([key in ranks for key in keys], dtype=bool)
    # Rows without a prediction get the identity ranking here; their metrics are then set to
    # the worst case below, so its values never reach the result.
    predicted = np.tile(np.arange(1, n + 1), (len(rows), 1))
    for j in np.flatnonzero(present):
        value = np.asarray(ranks[keys[j]])
        if value.shape != (n,) or not np.array_equal(np.sort(value), predicted[j]):
            raise EvaluationError(f"ranks of {keys[j]} are not a permutation of 1..{n}")
        predicted[j] = value
    gt = references.gt_index[rows]
    relevance = references.relevance[rows]
    has_gt = gt >= 0
    gt_ranks = np.where(present, predicted[np.arange(len(rows)), np.maximum(gt, 0)], n)
    dense = ~np.isnan(relevance).all(axis=1)
    ndcg = np.full(len(rows), np.nan)
    ndcg[dense] = ndcg_per_round(predicted[dense], relevance[dense])
    undefined = dense & np.isnan(ndcg)
    ndcg[dense & ~present] = 0.0
    use_ndcg = dense & ~undefined

    def pairs(mask: np.ndarray) -> list[list[int]]:
        return [list(keys[j]) for j in np.flatnonzero(mask)]

    overall = _summary(gt_ranks[has_gt], ndcg[use_ndcg])
    result: dict[str, Any] = {
        "protocol": PROTOCOL,
        "tie_rule": TIE_RULE,
        "missing_rule": "a missing round counts as ground truth at rank N and NDCG 0",
        "ranker": ranker,
        "n_rounds": overall.pop("n_rounds"),
        "n_ndcg": overall.pop("n_ndcg"),
        "missing": pairs(~present),
        "ndcg_undefined": pairs(undefined),
        "overall": overall,
    }
    result["by_type"] = {}
    if question_types is not None:
        types = []
        for image_id, round_id in keys:
            listed = question_types.get(str(image_id))
            if listed is None or round_id > len(listed):
                raise EvaluationError(
                    f"question types: no type for image_id {image_id} round_id {round_id} "
                    f"({'no entry' if listed is None else f'{len(listed)} round(s) listed'})"
                )
            types.append(listed[round_id - 1])
        kinds = np.array(types, dtype=object)
        for kind in sorted(set(types)):
            of = kinds == kind
            result["by_type"][kind] = _summary(gt_ranks[has_gt & of], ndcg[use_ndcg & of])
    return result


def metrics_table(result: dict[str, Any], *, title: str = "VisDial metrics") -> Table:
    """One result as a table: an "overall" row, then a row per question type."""
    # A light box keeps the nine columns within an 80-column terminal.
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("subset", no_wrap=True)
    for name in ("rounds", "dense", *(HEADERS[k] for k in METRIC_KEYS)):
        table.add_column(name, justify="right", no_wrap=True)
    rows = [("overall", result["n_rounds"], result["n_ndcg"], result["overall"])]
    rows += [(kind, s["n_rounds"], s["n_ndcg"], s) for kind, s in result["by_type"].items()]
    for name, n_rounds, n_ndcg, scores in rows:
        values = ("–" if scores[k] is None else f"{scores[k]:.4f}" for k in METRIC_KEYS)
        table.add_row(name, str(n_rounds), str(n_ndcg), *values)
    return table
