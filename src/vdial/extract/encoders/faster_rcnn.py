"""Bottom-up-attention region features (Anderson et al. 2018), as VisDial/LTMI features were made.

Source of truth: peteanderson80/bottom-up-attention `tools/generate_tsv.py` on the caffe VG
ResNet-101 Faster R-CNN (1600 objects, 400 attributes; network in `bottom_up.py`). The image
minus the BGR means [102.9801, 115.9465, 122.7717] is resized (cv2 bilinear) to short side 600,
long side at most 1000; per object class, NMS 0.3 over the 300 RPN proposals gives each proposal
its best surviving class probability; those >= 0.2 are kept, at least 10 and at most 100 (fixed
K = 36 is min = max = K). A region is its proposal box in source pixels and its 2048-d
`pool5_flat`; object and attribute ids are argmaxes over the non-background columns (MILVLG's
`objects_id`/`attrs_id`: lines of `objects_vocab.txt`/`attributes_vocab.txt`), the score is that
object's probability. Checkpoints: MILVLG/bottom-up-attention.pytorch's conversion of the caffe
model (`bua-caffe-frcn-r101_with_attributes.pth`, detectron2 keys, maybe under "model"), or
this module's own state dict.

Images differ in size, so `preprocess` returns a list of `ScaledImage` (one tensor per frame
with its scale), not a padded batch: caffe ran one image at a time and padding would change the
border activations. `encode` batches same-size frames through the backbone and all RoIs through
res5.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from vdial.extract.encoders.base import (
    Encoder,
    EncoderSpec,
    WeightsError,
    file_digest,
    find_weights,
)

if TYPE_CHECKING:
    import torch

    from vdial.extract.encoders.bottom_up import Detections

NAME = "faster-rcnn"
PIXEL_MEANS_BGR = (102.9801, 115.9465, 122.7717)  # caffe cfg.PIXEL_MEANS, 0..255
BoxSource = Literal["proposal", "regressed"]


@dataclass(frozen=True, kw_only=True)
class NetConfig:
    """Widths, vocabularies and RPN settings; the defaults are the caffe VG ResNet-101 model."""

    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)  # bottlenecks in res2..res5
    stem_channels: int = 64  # conv1 output channels
    width: int = 64  # bottleneck width of res2 (doubles per stage; outputs are 4x the width)
    rpn_channels: int = 512  # rpn_conv/3x3 output channels
    num_classes: int = 1601  # object classes, background (index 0) included
    num_attributes: int = 401  # attributes, "no attribute" (index 0) included
    class_embed: int = 256  # cls_embedding width fed to the attribute head
    attr_hidden: int = 512  # fc_attr width
    anchor_scales: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0)  # multiples of the 16-px anchor
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    pre_nms_top_n: int = 6000  # TEST.RPN_PRE_NMS_TOP_N
    post_nms_top_n: int = 300  # TEST.RPN_POST_NMS_TOP_N
    rpn_nms: float = 0.7  # TEST.RPN_NMS_THRESH
    rpn_min_size: float = 16.0  # TEST.RPN_MIN_SIZE, source pixels (times the image scale)

    @property
    def dim(self) -> int:
        return self.width * 32  # res5 output channels


@dataclass(frozen=True, kw_only=True)
class FasterRcnnSize:
    """One registered size of the family."""

    net: NetConfig  # widths, vocabularies and RPN settings
    min_size: int  # short side after resizing (caffe TEST.SCALES)
    max_size: int  # cap on the long side (TEST.MAX_SIZE)
    checkpoints: tuple[str, ...]  # file names looked for under $VDIAL_WEIGHTS/faster-rcnn/
    source: str  # where the papers' weights come from


SIZES: dict[str, FasterRcnnSize] = {
    "r101": FasterRcnnSize(
        net=NetConfig(),
        min_size=600,
        max_size=1000,
        checkpoints=("bua-caffe-frcn-r101_with_attributes.pth", "bua-caffe-frcn-r101-k10-100.pth"),
        source="MILVLG/bottom-up-attention.pytorch bua-caffe-frcn-r101_with_attributes.pth, the "
        "conversion of peteanderson80/bottom-up-attention resnet101_faster_rcnn_final.caffemodel",
    ),
    "tiny": FasterRcnnSize(
        net=NetConfig(
            blocks=(1, 1, 1, 1),
            stem_channels=8,
            width=4,
            rpn_channels=16,
            num_classes=11,
            num_attributes=6,
            class_embed=8,
            attr_hidden=16,
            anchor_scales=(2.0, 4.0, 8.0),
            pre_nms_top_n=300,
            post_nms_top_n=40,
        ),
        min_size=96,
        max_size=160,
        checkpoints=("faster_rcnn_tiny.pth",),
        source="none: a test size (1 block per stage, 10 classes); --random-init, or a saved file",
    ),
}


@dataclass(frozen=True, kw_only=True)
class RegionSelection:
    """Which proposals become stored regions (generate_tsv.py's rule)."""

    conf_thresh: float = 0.2  # keep proposals whose best class survives NMS with this prob
    nms: float = 0.3  # per-class NMS IoU threshold (caffe TEST.NMS)
    min_regions: int = 10  # fewer confident proposals: the top min_regions by confidence
    max_regions: int = 100  # more: the top max_regions
    boxes: BoxSource = "proposal"  # stored box: the RPN proposal (as the papers) or the box
    # refined by the predicted class's regression (caffe im_detect's detections)


class ScaledImage(NamedTuple):
    """One network input: caffe-normalised BGR [3, h, w], its resize factor and source size."""

    image: torch.Tensor
    scale: float
    source_size: tuple[int, int]  # (height, width) of the decoded frame


def caffe_preprocess(frames: np.ndarray, min_size: int, max_size: int) -> list[ScaledImage]:
    """uint8 RGB [T, H, W, 3] -> BGR minus the pixel means, short side `min_size` (long side at
    most `max_size`), bilinear without antialiasing (cv2.INTER_LINEAR, as `_get_blobs`)."""
    import torch

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    scale = min_size / min(height, width)
    if round(scale * max(height, width)) > max_size:
        scale = max_size / max(height, width)
    size = (round(height * scale), round(width * scale))  # cv2's dsize from fx, fy
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).flip(1).float()
    x = x - torch.tensor(PIXEL_MEANS_BGR).view(1, 3, 1, 1)
    if size != (height, width):
        # the ATen op behind F.interpolate, given cv2's output size *and* its scale: cv2 maps
        # pixels by fx (not by the size ratio), which this reproduces to float precision
        x = torch.ops.aten.upsample_bilinear2d(x, list(size), False, scale, scale)
    return [ScaledImage(image, scale, (height, width)) for image in x]


def class_max_conf(boxes: torch.Tensor, cls_prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """Each box's best object probability among the classes whose NMS keeps it.

    boxes [B, R, 4], cls_prob [B, R, C] -> [B, R]. generate_tsv.py runs caffe NMS once per class
    (1600 times per image); the classes share the boxes, so one IoU matrix per image and one
    greedy pass over score ranks serve all classes of all images at once. Images with fewer
    boxes are padded with probability -1: padding ranks last, so it never suppresses a box.
    """
    import torch

    from vdial.extract.encoders.bottom_up import legacy_iou

    scores = cls_prob[..., 1:].transpose(1, 2)  # [B, classes, boxes], background excluded
    n, k, r = scores.shape
    overlap = legacy_iou(boxes, boxes) > threshold
    order = scores.argsort(dim=2, descending=True, stable=True)
    suppressed = torch.zeros_like(scores, dtype=torch.bool)
    kept = torch.zeros_like(suppressed)
    image = torch.arange(n, device=scores.device)[:, None]
    cls = torch.arange(k, device=scores.device)[None, :]
    for rank in range(r):
        box = order[:, :, rank]  # [B, classes]: each class's next box
        alive = ~suppressed[image, cls, box]
        kept[image, cls, box] = alive
        suppressed |= alive[..., None] & overlap[image, box]
    return torch.where(kept, scores, torch.zeros_like(scores)).amax(dim=1)


def select_regions(max_conf: torch.Tensor, sel: RegionSelection) -> torch.Tensor:
    """Indices of the kept proposals: confident ones in proposal order, else the top by conf."""
    import torch

    keep = torch.nonzero(max_conf >= sel.conf_thresh).flatten()
    if sel.min_regions <= len(keep) <= sel.max_regions:
        return keep
    limit = sel.min_regions if len(keep) < sel.min_regions else sel.max_regions
    return torch.sort(max_conf, descending=True, stable=True).indices[:limit]


class FasterRcnnEncoder(Encoder):
    """Rows are regions (pool5_flat) of the sampled frames, with boxes, labels and scores."""

    def __init__(
        self,
        spec: EncoderSpec,
        model: torch.nn.Module,
        weights: str,
        *,
        cfg: FasterRcnnSize,  # the size: network config and resize rule
        selection: RegionSelection,  # which proposals become rows
        roi_batch: int,  # RoIs per res5 forward (memory bound)
    ) -> None:
        super().__init__(spec, model, weights)
        self.cfg, self.selection, self.roi_batch = cfg, selection, roi_batch

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.spec.dim,)

    @property
    def row_extras(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {
            **super().row_extras,
            "boxes": ((4,), "float32"),  # x1, y1, x2, y2 in source pixels
            "class_id": ((), "int64"),  # object index, background excluded (objects_vocab.txt)
            "attribute_id": ((), "int64"),  # attribute index, "none" excluded
            "score": ((), "float32"),  # probability of class_id
        }

    def preprocess(self, frames: np.ndarray) -> list[ScaledImage]:
        return caffe_preprocess(frames, self.cfg.min_size, self.cfg.max_size)

    def encode(self, batch: Sequence[ScaledImage]) -> list[dict[str, torch.Tensor]]:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, unit in enumerate(batch):  # frames of one video share a size: one backbone pass
            groups[tuple(unit.image.shape)].append(i)
        found: list[Any] = [None] * len(batch)
        for members in groups.values():
            images = torch.stack([batch[i].image for i in members]).to(self.device)
            scales = [batch[i].scale for i in members]
            detections = self.model.detect(images, scales, self.roi_batch)
            for i, det in zip(members, detections, strict=True):
                found[i] = det
        boxes = [det.rois / unit.scale for det, unit in zip(found, batch, strict=True)]
        probs = pad_sequence([det.cls_prob for det in found], batch_first=True, padding_value=-1)
        max_conf = class_max_conf(pad_sequence(boxes, batch_first=True), probs, self.selection.nms)
        return [
            self._regions(det, unit, box, conf[: len(box)])
            for det, unit, box, conf in zip(found, batch, boxes, max_conf, strict=True)
        ]

    def _regions(
        self, det: Detections, unit: ScaledImage, boxes: torch.Tensor, max_conf: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        import torch

        from vdial.extract.encoders.bottom_up import clip_boxes, decode_boxes

        keep = select_regions(max_conf, self.selection)
        score, class_id = det.cls_prob[keep, 1:].max(dim=1)
        boxes = boxes[keep]
        if self.selection.boxes == "regressed":
            columns = (class_id[:, None] + 1) * 4 + torch.arange(4, device=boxes.device)
            refined = decode_boxes(boxes, det.deltas[keep].gather(1, columns))
            boxes = clip_boxes(refined, *unit.source_size)
        return {
            "features": det.features[keep].float().cpu(),
            "boxes": boxes.float().cpu(),
            "class_id": class_id.cpu(),
            "attribute_id": det.attr_prob[keep, 1:].argmax(dim=1).cpu(),
            "score": score.float().cpu(),
        }

    def to_rows(
        self, outputs: list[Any], timestamps: np.ndarray, indices: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One item's per-frame regions, concatenated; each region is stamped with its frame."""
        import torch

        def cat(key: str, dtype: str) -> np.ndarray:
            return torch.cat([o[key] for o in outputs]).numpy().astype(dtype)

        frame = np.repeat(np.arange(len(outputs)), [len(o["features"]) for o in outputs])
        extras = {
            "timestamps": np.asarray(timestamps, dtype=np.float64)[frame],
            "frame_indices": np.asarray(indices, dtype=np.int64)[frame],
        }
        for key in ("boxes", "class_id", "attribute_id", "score"):
            extras[key] = cat(key, self.row_extras[key][1])
        return cat("features", "float32").reshape(-1, *self.item_shape), extras


def find_checkpoint(size: str) -> Path:
    """Look for the size's checkpoint under $VDIAL_WEIGHTS/faster-rcnn/, or explain."""
    cfg = SIZES[size]
    return find_weights(NAME, size, cfg.checkpoints, cfg.source)


def build_faster_rcnn(
    size: str = "r101",
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    frames: int = 1,
    regions: int | None = None,
    min_regions: int = 10,
    max_regions: int = 100,
    conf_thresh: float = 0.2,
    boxes: BoxSource = "proposal",
    roi_batch: int = 1200,
) -> FasterRcnnEncoder:
    """Build the encoder. Each frame gives between `min_regions` and `max_regions` regions
    (fewer only when the RPN proposes fewer boxes); `regions=K` fixes min = max = K (the
    papers' 36-box variant). `roi_batch` bounds the RoIs per res5 pass (GPU memory)."""
    import torch

    from vdial.extract.encoders.bottom_up import BottomUpNet, load_checkpoint

    if size not in SIZES:
        raise KeyError(f"unknown {NAME} size {size!r}; known: {sorted(SIZES)}")
    if regions is not None:
        min_regions = max_regions = regions
    if not 1 <= min_regions <= max_regions:
        raise ValueError(f"need 1 <= min_regions <= max_regions, got {min_regions}, {max_regions}")
    if boxes not in ("proposal", "regressed"):
        raise ValueError(f"boxes must be 'proposal' or 'regressed', got {boxes!r}")
    cfg = SIZES[size]
    ref = f"{NAME}:{size}"
    if random_init:
        torch.manual_seed(seed)
        model = BottomUpNet(cfg.net)
        provenance = f"random:{seed}"
    else:
        path = Path(weights) if weights is not None else find_checkpoint(size)
        if not path.is_file():
            raise WeightsError(f"{ref} checkpoint not found: {path}. Source: {cfg.source}")
        model = BottomUpNet(cfg.net)
        load_checkpoint(model, path, ref)
        provenance = file_digest(path)
    selection = RegionSelection(
        conf_thresh=conf_thresh, min_regions=min_regions, max_regions=max_regions, boxes=boxes
    )
    net = cfg.net
    count = f"{min_regions}" if min_regions == max_regions else f"{min_regions}-{max_regions}"
    spec = EncoderSpec(
        name=NAME,
        size=size,
        architecture=f"bottom-up-attention Faster R-CNN, caffe ResNet C4 {net.blocks} "
        f"({net.num_classes - 1} objects, {net.num_attributes - 1} attributes); input BGR minus "
        f"caffe means, short side {cfg.min_size}, long side <= {cfg.max_size}, no crop",
        weights_source=cfg.source,
        input_size=cfg.min_size,
        mean=tuple(m / 255.0 for m in reversed(PIXEL_MEANS_BGR)),  # RGB, 0..1
        std=(1.0 / 255.0,) * 3,  # caffe does not divide: x * 255 - mean
        interpolation="bilinear",
        frames=frames,
        sampling="uniform-segment-middle",
        layer=f"pool5_flat (res5 over 14x14 RoI-pooled res4, mean) of {count} regions per frame: "
        f"per-class NMS {selection.nms}, conf >= {conf_thresh}; boxes: {boxes}",
        keep_prefix_tokens=False,
        grid=(1, 1),
        dim=net.dim,
        max_regions=max_regions,
    )
    return FasterRcnnEncoder(
        spec, model, provenance, cfg=cfg, selection=selection, roi_batch=roi_batch
    )
