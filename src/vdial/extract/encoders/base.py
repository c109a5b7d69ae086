"""What every frozen encoder declares (`EncoderSpec`) and does (`Encoder`).

An encoder turns a video's sampled frames into stored rows. It chooses the frames
(`frame_indices`), groups them into forward units (`preprocess`: one unit per frame for image
encoders, one per clip of `clip_len` frames for video encoders), runs batches of units
(`encode`), and turns one item's unit outputs into rows along time with their per-row extras
(`to_rows`): each row covers `frames_per_row` input frames and holds `item_shape` values. Region
encoders override `to_rows` and `row_extras` (rows are regions, with boxes and labels).

An encoder family registers one builder per size. The spec is everything a reader of the store
needs to know how the features were made (architecture, weights, input size and
normalisation, frames and sampling, tapped layer, token grid, dim); it is saved verbatim in
the feature's attributes, together with the weights digest (or `random:<seed>`).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vdial.extract.decode import uniform_indices

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class EncoderSpec:
    """How an encoder turns frames into tokens; stored with every feature it writes."""

    name: str  # registry family, e.g. "dinov2"; also the default feature name
    size: str  # registry size within the family, e.g. "large" (paper) or "tiny" (tests)
    architecture: str  # library architecture id, e.g. timm "vit_large_patch14_reg4_dinov2"
    weights_source: str  # where the papers' checkpoint comes from and the file expected
    input_size: int  # square side in pixels after resize + centre crop
    mean: tuple[float, ...]  # per-channel normalisation mean (RGB, 0..1 scale)
    std: tuple[float, ...]  # per-channel normalisation std
    interpolation: str  # resize filter: "bicubic" or "bilinear"
    resize: str = "crop"  # "crop": short side to input_size, centre crop; "squash": no crop
    frames: int  # frames sampled per video
    sampling: str  # how frames are chosen, e.g. "uniform-segment-middle"
    layer: str  # tapped output, e.g. "block 22 of 24 (penultimate), no final norm"
    keep_prefix_tokens: bool  # whether CLS/register tokens are kept in the output
    grid: tuple[int, int]  # spatial token grid (H', W') per row; (1, 1) for one vector per row
    dim: int  # feature dimension per token
    prefix_tokens: int = 0  # CLS/register tokens the architecture has (stored first if kept)
    clip_len: int = 1  # input frames per forward unit (1: image encoder, run frame by frame)
    frames_per_row: int = 1  # input frames behind one stored row (ViViT tubelet 2, 3D-CNN clip)
    max_regions: int = 0  # region encoders: most regions per image (0: a dense token grid)

    @property
    def tokens_per_frame(self) -> int:
        """Tokens in one stored row: the grid, plus the prefix tokens when they are kept."""
        kept = self.prefix_tokens if self.keep_prefix_tokens else 0
        return self.grid[0] * self.grid[1] + kept

    def to_attrs(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


WEIGHTS_ENV = "VDIAL_WEIGHTS"


class WeightsError(FileNotFoundError):
    """A checkpoint is missing or does not match the architecture."""


def find_weights(family: str, size: str, names: tuple[str, ...], source: str) -> Path:
    """The first of `names` under $VDIAL_WEIGHTS/<family>/, or an error saying what to get."""
    import os

    root = os.environ.get(WEIGHTS_ENV)
    candidates = [Path(root) / family / name for name in names] if root else []
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(str(p) for p in candidates) or f"${WEIGHTS_ENV}/{family}/<file> (unset)"
    raise WeightsError(
        f"no checkpoint for {family}:{size}: expected one of {list(names)} at {where}. "
        f"Source: {source}. Pass --weights PATH, set {WEIGHTS_ENV}, or use --random-init."
    )


def create_timm_model(
    family: str,
    size: str,
    architecture: str,
    kwargs: dict[str, Any],
    *,
    weights: str | Path | None,
    find_checkpoint: Callable[[str], Path],
    source: str,
    random_init: bool,
    seed: int,
) -> tuple[Any, str]:
    """(timm model, provenance): seeded random weights, or a local checkpoint loaded by timm."""
    import timm
    import torch

    if random_init:
        torch.manual_seed(seed)
        return timm.create_model(architecture, pretrained=False, **kwargs), f"random:{seed}"
    path = Path(weights) if weights is not None else find_checkpoint(size)
    if not path.is_file():
        raise WeightsError(f"{family}:{size} checkpoint not found: {path}. Source: {source}")
    try:
        model = timm.create_model(
            architecture,
            pretrained=True,
            pretrained_cfg_overlay={"file": str(path), "num_classes": 0},
            **kwargs,
        )
    except RuntimeError as err:  # state-dict key or shape mismatch
        raise WeightsError(f"{path} does not fit {family}:{size}: {err}") from err
    return model, file_digest(path)


def file_digest(path: str | Path) -> str:
    """sha256 of a weights file, streamed (checkpoints are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


class Encoder(abc.ABC):
    """A frozen encoder: choose frames, `preprocess` them into units, `encode` unit batches."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, weights: str) -> None:
        self.spec = spec
        self.model = model.eval().requires_grad_(False)
        self.weights = weights  # "sha256:<hex>" of the checkpoint, or "random:<seed>"

    def to(self, device: str | torch.device) -> Encoder:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one stored row (the leading, ragged axis is rows along time)."""
        return (self.spec.tokens_per_frame, self.spec.dim)

    @property
    def row_extras(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-row arrays stored beside the tokens: name -> (shape per row, dtype)."""
        return {"timestamps": ((), "float64"), "frame_indices": ((), "int64")}

    def frame_indices(self, num_frames: int, fps: float) -> np.ndarray:
        """Source frames to decode for a video of `num_frames` frames at `fps`."""
        del fps  # uniform sampling depends on the frame count only
        return uniform_indices(num_frames, self.spec.frames)

    def to_rows(
        self, outputs: list[Any], timestamps: np.ndarray, indices: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One item's unit outputs (in unit order) -> rows [R, *item_shape] and per-row extras.

        A row covering several frames (a tubelet, a clip) is stamped with its first frame.
        """
        import torch

        rows = torch.stack(outputs).float().cpu().numpy().reshape(-1, *self.item_shape)
        step = self.spec.frames_per_row
        first = np.arange(len(rows)) * step
        return rows, {"timestamps": timestamps[first], "frame_indices": indices[first]}

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [T, H, W, 3] -> units; here (image encoders) float [T, 3, S, S].

        Resize (antialiased) the short side and centre crop, or, with `resize="squash"`, both
        sides to the input size (torchvision's `Resize((S, S))`, LAVIS and prismatic's
        "resize-naive"); then normalise. Video encoders group the result into clips.
        The resize runs on the uint8 frames, as PIL does in the reference pipelines (timm,
        torchvision, LAVIS): it rounds like them, and torch's uint8 path is about 20x faster
        on CPU than resizing in float, which matters because extraction is decode-bound.
        """
        import torch
        import torch.nn.functional as F

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}"
            )
        size = self.spec.input_size
        # channels-last uint8: the layout torch's vectorised antialiased resize works on
        x = torch.tensor(frames).permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        if self.spec.resize == "squash":
            new_h = new_w = size
        x = F.interpolate(
            x,
            size=(new_h, new_w),
            mode=self.spec.interpolation,
            antialias=True,
            align_corners=False,
        )
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[..., top : top + size, left : left + size].float().div_(255.0)
        mean = torch.tensor(self.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    @abc.abstractmethod
    def encode(self, batch: torch.Tensor) -> torch.Tensor | list[Any]:
        """A batch of units [B, ...] -> one output per unit (a tensor indexed by unit, or a list).

        Image encoders: float [B, 3, S, S] -> tokens [B, H'*W', D]. Video encoders: clips ->
        [B, rows per clip, tokens, D].
        """

    def provenance(self) -> dict[str, Any]:
        return {**self.spec.to_attrs(), "weights": self.weights}
