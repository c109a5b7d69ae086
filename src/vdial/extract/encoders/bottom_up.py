"""The bottom-up-attention Faster R-CNN network (Anderson et al. 2018), layer for layer.

Source of truth: peteanderson80/bottom-up-attention `models/vg/ResNet-101/
faster_rcnn_end2end_final/test.prototxt` with `lib/rpn/proposal_layer.py`, `generate_anchors.py`
and `fast_rcnn/bbox_transform.py`. A caffe (MSRA) ResNet-101: stride in the first 1x1 conv of a
block, max pool with ceil rounding and no padding, eval-mode batch norm. An RPN on res4 (3x3 conv
to 512, 12 anchors: ratios 0.5/1/2 x scales 4/8/16/32 of a 16-pixel base, caffe's rounded
anchors in ratio-major order, background logits for all anchors before foreground ones) keeps
6000 boxes, NMS 0.7, 300 proposals. Each proposal is RoI-max-pooled 14x14 from res4, run through
res5 (stride 1, dilation 2) and mean-pooled to the 2048-d `pool5_flat` feature; then class
scores (1601 with background), class-specific box deltas, and the attribute head: an embedding
of the argmax class (background included) concatenated to pool5, fc 512, ReLU, 401 scores.

Boxes follow the caffe "+1" pixel convention (width = x2 - x1 + 1) for decoding, size filtering
and IoU; IoU in that convention is torchvision's IoU of boxes grown by one pixel, so torchvision's
NMS is used on shifted boxes. The bottlenecks are torchvision's with the stride moved to conv1.
Sizes are `faster_rcnn.NetConfig`. `convert_milvlg_state_dict` maps the detectron2 names of
MILVLG/bottom-up-attention.pytorch's converted checkpoint onto these modules.
"""

from __future__ import annotations

import math
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import Bottleneck, conv1x1

from vdial.extract.encoders.base import WeightsError

if TYPE_CHECKING:
    from vdial.extract.encoders.faster_rcnn import NetConfig

FEAT_STRIDE = 16  # res4 stride, the RPN's feat_stride and 1 / RoI pooling spatial scale
POOLED = 14  # RoI pooling output side (roi_pool5: pooled_w = pooled_h = 14)
DELTA_CLAMP = math.log(1000.0 / 16)  # exp() guard for extreme random-init deltas (detectron2's)
_GROW = (0.0, 0.0, 1.0, 1.0)  # caffe boxes include their last pixel


@dataclass
class Detections:
    """Every RPN proposal of one image with the head's outputs (before region selection)."""

    rois: torch.Tensor  # [R, 4] proposals x1y1x2y2 in network-input pixels
    features: torch.Tensor  # [R, D] pool5_flat
    cls_prob: torch.Tensor  # [R, num_classes] softmax, background first
    attr_prob: torch.Tensor  # [R, num_attributes] softmax, "no attribute" first
    deltas: torch.Tensor  # [R, 4 * num_classes] class-specific box deltas


def caffe_anchors(scales, ratios, base: int = FEAT_STRIDE) -> torch.Tensor:
    """py-faster-rcnn `generate_anchors`: rounded sizes around (7.5, 7.5), ratio-major order."""
    ratios = torch.tensor(ratios, dtype=torch.float64)
    scales = torch.tensor(scales, dtype=torch.float64)
    ctr = (base - 1) / 2.0
    ws = torch.round(torch.sqrt(base * base / ratios))  # round half to even, as numpy
    hs = torch.round(ws * ratios)
    ws = (ws[:, None] * scales[None]).reshape(-1)
    hs = (hs[:, None] * scales[None]).reshape(-1)
    half_w, half_h = 0.5 * (ws - 1), 0.5 * (hs - 1)
    return torch.stack([ctr - half_w, ctr - half_h, ctr + half_w, ctr + half_h], dim=1).float()


def decode_boxes(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """caffe `bbox_transform_inv`: boxes [N, 4], deltas [N, 4k] -> boxes [N, 4k]."""
    widths = boxes[:, 2:3] - boxes[:, 0:1] + 1.0
    heights = boxes[:, 3:4] - boxes[:, 1:2] + 1.0
    ctr_x = boxes[:, 0:1] + 0.5 * widths
    ctr_y = boxes[:, 1:2] + 0.5 * heights
    dx, dy = deltas[:, 0::4], deltas[:, 1::4]
    dw, dh = deltas[:, 2::4].clamp(max=DELTA_CLAMP), deltas[:, 3::4].clamp(max=DELTA_CLAMP)
    cx, cy = dx * widths + ctr_x, dy * heights + ctr_y
    half_w, half_h = 0.5 * torch.exp(dw) * widths, 0.5 * torch.exp(dh) * heights
    out = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)
    return out.reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """caffe `clip_boxes`: x into [0, width - 1], y into [0, height - 1]; boxes [N, 4]."""
    limits = boxes.new_tensor([width - 1, height - 1, width - 1, height - 1])
    return torch.minimum(boxes, limits).clamp(min=0)


def legacy_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU with caffe's inclusive pixel convention: [B, N, 4], [B, M, 4] -> [B, N, M]."""
    grow = a.new_tensor(_GROW)
    return torch.vmap(torchvision.ops.box_iou)(a + grow, b + grow)


def legacy_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """caffe `nms` (inclusive pixels): kept indices, by decreasing score."""
    return torchvision.ops.nms(boxes + boxes.new_tensor(_GROW), scores, threshold)


def _bottleneck(inplanes: int, width: int, stride: int, dilation: int) -> Bottleneck:
    out = width * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(conv1x1(inplanes, out, stride), nn.BatchNorm2d(out))
    block = Bottleneck(inplanes, width, downsample=downsample, dilation=dilation)
    block.conv1 = conv1x1(inplanes, width, stride)  # MSRA ResNets stride in the first 1x1 conv
    block.stride = stride
    return block


def _stage(inplanes: int, width: int, blocks: int, stride: int, dilation: int = 1):
    layers = [_bottleneck(inplanes, width, stride, dilation)]
    layers += [_bottleneck(width * 4, width, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class RpnHead(nn.Module):
    """rpn_conv/3x3 + ReLU, then objectness (2 per anchor) and box deltas (4 per anchor)."""

    def __init__(self, channels: int, hidden: int, anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.objectness = nn.Conv2d(hidden, 2 * anchors, 1)
        self.deltas = nn.Conv2d(hidden, 4 * anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):  # caffe's gaussian fillers
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.conv(x))
        return self.objectness(hidden), self.deltas(hidden)


class BottomUpNet(nn.Module):
    """ResNet-101 C4 Faster R-CNN with the Visual Genome class and attribute heads."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stem, w = cfg.stem_channels, cfg.width
        self.backbone = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False),
                bn1=nn.BatchNorm2d(stem),
                relu=nn.ReLU(inplace=True),
                pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),  # caffe rounds pooling up
                res2=_stage(stem, w, cfg.blocks[0], 1),
                res3=_stage(4 * w, 2 * w, cfg.blocks[1], 2),
                res4=_stage(8 * w, 4 * w, cfg.blocks[2], 2),
            )
        )
        anchors = caffe_anchors(cfg.anchor_scales, cfg.anchor_ratios)
        self.register_buffer("cell_anchors", anchors, persistent=False)
        self.rpn = RpnHead(16 * w, cfg.rpn_channels, len(anchors))
        self.res5 = _stage(16 * w, 8 * w, cfg.blocks[3], 1, dilation=2)
        self.cls_score = nn.Linear(cfg.dim, cfg.num_classes)
        self.bbox_pred = nn.Linear(cfg.dim, 4 * cfg.num_classes)
        self.cls_embed = nn.Embedding(cfg.num_classes, cfg.class_embed)
        self.attr_fc = nn.Linear(cfg.dim + cfg.class_embed, cfg.attr_hidden)
        self.attr_score = nn.Linear(cfg.attr_hidden, cfg.num_attributes)
        for layer in (self.cls_score, self.attr_fc, self.attr_score):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)
        nn.init.normal_(self.cls_embed.weight, std=0.01)

    def propose(self, res4: torch.Tensor, height: int, width: int, scale: float) -> torch.Tensor:
        """RPN proposals [R, 4] of one image (res4 [C, H', W']) in network-input pixels."""
        cfg = self.cfg
        logits, deltas = self.rpn(res4[None])
        a = len(self.cell_anchors)
        h, w = res4.shape[-2:]
        # caffe reshapes 2A channels to (2, A): all background logits, then all foreground
        fg = F.softmax(logits[0].view(2, a, h, w), dim=0)[1].permute(1, 2, 0).reshape(-1)
        deltas = deltas[0].view(a, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4)
        ys = torch.arange(h, device=res4.device, dtype=torch.float32) * FEAT_STRIDE
        xs = torch.arange(w, device=res4.device, dtype=torch.float32) * FEAT_STRIDE
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
        anchors = (shifts + self.cell_anchors[None]).reshape(-1, 4)  # (y, x, anchor) order
        boxes = clip_boxes(decode_boxes(anchors, deltas), height, width)
        sides = boxes[:, 2:] - boxes[:, :2] + 1
        keep = (sides >= cfg.rpn_min_size * scale).all(dim=1)
        boxes, fg = boxes[keep], fg[keep]
        order = fg.argsort(descending=True)[: cfg.pre_nms_top_n]
        boxes, fg = boxes[order], fg[order]
        return boxes[legacy_nms(boxes, fg, cfg.rpn_nms)[: cfg.post_nms_top_n]]

    def pool5(self, res4: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """rois [K, 5] (batch index, x1, y1, x2, y2) -> pool5_flat [K, D]."""
        pooled = torchvision.ops.roi_pool(res4, rois, POOLED, 1.0 / FEAT_STRIDE)
        return self.res5(pooled).mean(dim=(2, 3))

    def heads(self, pool5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pool5 [K, D] -> class probabilities, box deltas, attribute probabilities."""
        scores = self.cls_score(pool5)
        embedded = self.cls_embed(scores.argmax(dim=1))  # the caffe ArgMax includes background
        hidden = F.relu(self.attr_fc(torch.cat([pool5, embedded], dim=1)))
        attr = F.softmax(self.attr_score(hidden), dim=1)
        return F.softmax(scores, dim=1), self.bbox_pred(pool5), attr

    def detect(self, images: torch.Tensor, scales: list[float], roi_batch: int) -> list[Detections]:
        """Same-size network inputs [B, 3, H, W] -> every proposal of each image with its outputs.

        res5 runs over all images' RoIs together, `roi_batch` RoIs at a time (a C4 head is
        memory-heavy: 14x14 maps of 1024-2048 channels per RoI).
        """
        height, width = images.shape[-2:]
        res4 = self.backbone(images)
        props = [self.propose(res4[i], height, width, s) for i, s in enumerate(scales)]
        owner = torch.cat(
            [
                torch.full((len(p), 1), i, dtype=p.dtype, device=p.device)
                for i, p in enumerate(props)
            ]
        )
        rois = torch.cat([owner, torch.cat(props)], dim=1)
        parts = [self.pool5(res4, part) for part in rois.split(roi_batch)]
        pool5 = torch.cat(parts) if parts else res4.new_zeros((0, self.cfg.dim))
        sizes = [len(p) for p in props]
        outputs = zip(*(t.split(sizes) for t in (pool5, *self.heads(pool5))), strict=True)
        return [
            Detections(rois=p, features=f, cls_prob=c, deltas=d, attr_prob=a)
            for p, (f, c, d, a) in zip(props, outputs, strict=True)
        ]


# detectron2 (MILVLG) names -> ours; torchvision bottlenecks name norms bnK and downsample.0/1
_MILVLG_PREFIXES = (
    ("backbone.stem.conv1.norm.", "backbone.bn1."),
    ("backbone.stem.conv1.", "backbone.conv1."),
    ("proposal_generator.rpn_head.conv.", "rpn.conv."),
    ("proposal_generator.rpn_head.objectness_logits.", "rpn.objectness."),
    ("proposal_generator.rpn_head.anchor_deltas.", "rpn.deltas."),
    ("roi_heads.res5.", "res5."),
    ("roi_heads.box_predictor.attr_linear1.", "attr_fc."),
    ("roi_heads.box_predictor.attr_linear2.", "attr_score."),
    ("roi_heads.box_predictor.", ""),
)
_MILVLG_BLOCK = (
    (re.compile(r"\.shortcut\.norm\."), ".downsample.1."),
    (re.compile(r"\.shortcut\."), ".downsample.0."),
    (re.compile(r"\.conv(\d)\.norm\."), r".bn\1."),
)


def convert_milvlg_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """A MILVLG/detectron2 `GeneralizedBUARCNN` state dict in this module's key names.

    Batch-norm step counters and detectron2's anchor buffers are dropped: they are not weights,
    and the anchors here are caffe's, computed from the config.
    """
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked") or key.startswith("proposal_generator.anchor_"):
            continue
        for old, new in _MILVLG_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        for pattern, repl in _MILVLG_BLOCK:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def load_checkpoint(model: nn.Module, path: Path, ref: str) -> None:
    """Load our own or MILVLG's layout (plain or under "model") into `model`, strictly."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as err:
        raise WeightsError(f"{path} is not a torch state dict for {ref}: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict, for {ref}")
    if any(k.startswith(("backbone.stem.", "roi_heads.")) for k in state):
        state = convert_milvlg_state_dict(state)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise WeightsError(f"{path} does not fit {ref}: {err}") from err
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not fit {ref}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
