"""Bottom-up-attention Faster R-CNN: caffe preprocessing, anchors and NMS, region selection, the
RoI feature against a by-hand recomputation, the MILVLG checkpoint layout, and the runner path."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch

from vdial.extract.encoders import WeightsError
from vdial.extract.encoders import faster_rcnn as frcnn
from vdial.extract.encoders.bottom_up import caffe_anchors
from vdial.extract.encoders.faster_rcnn import (
    RegionSelection,
    build_faster_rcnn,
    caffe_preprocess,
    class_max_conf,
    select_regions,
)


def frames(t=1, h=72, w=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def regions(enc, images, **stamps):
    """Rows and extras of one item whose frames are `images`."""
    units = enc.preprocess(images)
    with torch.inference_mode():
        outputs = enc.encode(units)
    t = np.arange(len(images))
    return enc.to_rows(outputs, stamps.get("timestamps", t * 0.5), stamps.get("indices", t))


def sharpened(enc, factor=30.0):
    """Random weights score every box alike; centre and scale the class logits on a reference
    image so that boxes get different, confident classes (and attributes)."""
    (unit,) = enc.preprocess(frames(1, 72, 96, seed=0))
    with torch.no_grad():
        (det,) = enc.model.detect(unit.image[None], [unit.scale], 64)
        for layer, inputs in [(enc.model.cls_score, det.features), (enc.model.attr_score, None)]:
            layer.weight.mul_(factor)
            if inputs is not None:
                layer.bias.copy_(-(layer.weight @ inputs.mean(0)))
    return enc


def caffe_nms(boxes, scores, thresh):
    """py-faster-rcnn's py_cpu_nms (inclusive pixels), in numpy: kept indices."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i = order[0]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        ovr = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return np.array(keep, dtype=np.int64)


def generate_tsv_max_conf(boxes, probs, thresh=0.3):
    """generate_tsv.py's loop: per class NMS, best surviving probability per box."""
    max_conf = np.zeros(len(boxes))
    for c in range(1, probs.shape[1]):
        keep = caffe_nms(boxes, probs[:, c], thresh)
        max_conf[keep] = np.maximum(max_conf[keep], probs[keep, c])
    return max_conf


def test_anchors_are_py_faster_rcnn_anchors():
    """generate_anchors() with its default scales 8/16/32 prints these nine boxes."""
    expected = [
        [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
        [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
        [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359],
    ]  # fmt: skip
    assert caffe_anchors((8, 16, 32), (0.5, 1, 2)).tolist() == expected
    assert len(build_faster_rcnn("tiny", random_init=True).model.cell_anchors) == 9


def caffe_proposals(logits, deltas, cell_anchors, im_info, cfg):
    """proposal_layer.py's forward (TEST) in numpy, from the RPN head's two outputs."""
    a, (h, w) = len(cell_anchors), logits.shape[-2:]
    reshaped = logits.reshape(2, a * h, w)  # rpn_cls_score_reshape, softmax over bg/fg
    probs = (np.exp(reshaped) / np.exp(reshaped).sum(0)).reshape(2 * a, h, w)
    scores = probs[a:].transpose(1, 2, 0).reshape(-1)
    deltas = deltas.transpose(1, 2, 0).reshape(-1, 4)
    shift_x, shift_y = np.meshgrid(np.arange(w) * 16, np.arange(h) * 16)
    shifts = np.vstack([shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel()]).T
    anchors = (cell_anchors[None] + shifts[:, None]).reshape(-1, 4)
    widths, heights = anchors[:, 2] - anchors[:, 0] + 1, anchors[:, 3] - anchors[:, 1] + 1
    cx = deltas[:, 0] * widths + anchors[:, 0] + 0.5 * widths
    cy = deltas[:, 1] * heights + anchors[:, 1] + 0.5 * heights
    pw, ph = np.exp(deltas[:, 2]) * widths, np.exp(deltas[:, 3]) * heights
    boxes = np.stack([cx - 0.5 * pw, cy - 0.5 * ph, cx + 0.5 * pw, cy + 0.5 * ph], axis=1)
    limits = [im_info[1] - 1, im_info[0] - 1] * 2
    boxes = np.maximum(np.minimum(boxes, limits), 0)
    ws, hs = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    keep = np.where((ws >= cfg.rpn_min_size * im_info[2]) & (hs >= cfg.rpn_min_size * im_info[2]))
    boxes, scores = boxes[keep], scores[keep]
    order = scores.argsort()[::-1][: cfg.pre_nms_top_n]
    boxes, scores = boxes[order], scores[order]
    return boxes[caffe_nms(boxes, scores, cfg.rpn_nms)[: cfg.post_nms_top_n]]


def test_rpn_proposals_equal_caffe_proposal_layer():
    enc = build_faster_rcnn("tiny", random_init=True, seed=4)
    net = enc.model
    with torch.no_grad():  # random heads barely move the anchors; make the deltas matter
        net.rpn.objectness.weight.mul_(30)
        net.rpn.deltas.weight.mul_(10)
    (unit,) = enc.preprocess(frames(1, 90, 120, seed=13))
    height, width = unit.image.shape[-2:]
    with torch.inference_mode():
        res4 = net.backbone(unit.image[None])[0]
        ours = net.propose(res4, height, width, unit.scale).numpy()
        logits, deltas = (t[0].double().numpy() for t in net.rpn(res4[None]))
    anchors = net.cell_anchors.double().numpy()
    ref = caffe_proposals(logits, deltas, anchors, (height, width, unit.scale), enc.cfg.net)
    assert 10 < len(ours) <= enc.cfg.net.post_nms_top_n
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


SCALED = [(300, 500, (600, 1000)), (400, 1000, (400, 1000)), (90, 60, (900, 600)),
          (2000, 1000, (1000, 500))]  # fmt: skip


@pytest.mark.parametrize(("h", "w", "out"), SCALED)
def test_preprocess_scales_like_caffe_and_subtracts_bgr_means(h, w, out):
    img = np.zeros((1, h, w, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 200, 100, 10  # R, G, B
    (unit,) = caffe_preprocess(img, 600, 1000)
    assert tuple(unit.image.shape) == (3, *out) and unit.source_size == (h, w)
    assert unit.scale == pytest.approx(out[0] / h, rel=1e-2)
    expected = torch.tensor([10 - 102.9801, 100 - 115.9465, 200 - 122.7717]).view(3, 1, 1)
    torch.testing.assert_close(unit.image, expected.expand(3, *out))


def test_preprocess_matches_cv2_resize_of_the_mean_subtracted_image():
    cv2 = pytest.importorskip("cv2")
    img = frames(1, 45, 70, seed=3)[0]
    (unit,) = caffe_preprocess(img[None], 96, 160)
    # tools/test.py _get_blobs: BGR float minus means, cv2.resize by fx = fy = scale
    blob = img[..., ::-1].astype(np.float32) - np.array(frcnn.PIXEL_MEANS_BGR, dtype=np.float32)
    ref = cv2.resize(blob, None, None, fx=unit.scale, fy=unit.scale, interpolation=cv2.INTER_LINEAR)
    ours = unit.image.permute(1, 2, 0).numpy()
    assert ours.shape == ref.shape == (96, 149, 3)
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_class_max_conf_equals_per_class_caffe_nms_for_padded_batches():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 80, (2, 60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 40, (2, 60, 2))], axis=2).astype(np.float32)
    probs = rng.dirichlet(np.full(8, 0.3), size=(2, 60)).astype(np.float32)
    probs[1, 45:] = -1  # the second image has 45 boxes: padding
    ours = class_max_conf(torch.from_numpy(boxes), torch.from_numpy(probs), 0.3).numpy()
    np.testing.assert_allclose(ours[0], generate_tsv_max_conf(boxes[0], probs[0]), rtol=1e-6)
    ref = generate_tsv_max_conf(boxes[1, :45], probs[1, :45])
    np.testing.assert_allclose(ours[1, :45], ref, rtol=1e-6)


def test_selection_rule_of_generate_tsv():
    conf = torch.tensor([0.1, 0.5, 0.05, 0.9, 0.3, 0.25])
    pick = lambda lo, hi: select_regions(conf, RegionSelection(min_regions=lo, max_regions=hi))  # noqa: E731
    assert pick(2, 10).tolist() == [1, 3, 4, 5]  # confident ones, in proposal order
    assert pick(5, 10).tolist() == [3, 1, 4, 5, 0]  # too few: the top 5 by confidence
    assert pick(1, 2).tolist() == [3, 1]  # too many: the top 2
    assert pick(3, 3).tolist() == [3, 1, 4]  # fixed K


def test_region_count_follows_confidence_within_bounds_and_boxes_inside_images():
    enc = sharpened(build_faster_rcnn("tiny", random_init=True, min_regions=4, max_regions=13))
    images = [frames(1, 72, 96, seed=s) for s in (1, 2)] + [frames(1, 130, 50), frames(1, 40, 300)]
    counts = set()
    for img in images:
        units = enc.preprocess(img)
        with torch.inference_mode():
            (det,) = enc.model.detect(units[0].image[None], [units[0].scale], 64)
            rows, extras = enc.to_rows(enc.encode(units), np.zeros(1), np.zeros(1, np.int64))
        boxes = (det.rois / units[0].scale).numpy()
        confident = (generate_tsv_max_conf(boxes, det.cls_prob.numpy()) >= 0.2).sum()
        assert len(rows) == min(max(confident, 4), 13, len(boxes))
        counts.add(len(rows))
        h, w = img.shape[1:3]
        x1, y1, x2, y2 = extras["boxes"].T
        assert (0 <= x1).all() and (x1 <= x2).all() and (x2 <= w).all()
        assert (0 <= y1).all() and (y1 <= y2).all() and (y2 <= h).all()
    assert len(counts) > 1  # the count adapts to the image
    assert enc.spec.max_regions == 13 and enc.item_shape == (enc.spec.dim,) == (128,)


def test_regressed_boxes_stay_inside_the_source_image():
    enc = build_faster_rcnn("tiny", random_init=True, boxes="regressed")
    with torch.no_grad():
        enc.model.bbox_pred.weight.normal_(std=0.5)  # large refinements, clipped to the image
    _, extras = regions(enc, frames(1, 72, 96, seed=4))
    assert extras["boxes"].min() >= 0
    assert (extras["boxes"][:, [0, 2]] <= 95).all() and (extras["boxes"][:, [1, 3]] <= 71).all()
    _, plain = regions(build_faster_rcnn("tiny", random_init=True), frames(1, 72, 96, seed=4))
    assert not np.allclose(plain["boxes"], extras["boxes"])


def test_fixed_k_gives_exactly_k_regions_per_frame_stamped_with_their_frame():
    enc = sharpened(build_faster_rcnn("tiny", random_init=True, regions=7, frames=3))
    rows, extras = regions(
        enc, frames(3, seed=5), timestamps=np.array([0.5, 1.5, 2.5]), indices=np.array([4, 9, 14])
    )
    assert rows.shape == (21, 128) and enc.spec.max_regions == 7
    assert extras["frame_indices"].tolist() == [4] * 7 + [9] * 7 + [14] * 7
    assert extras["timestamps"].tolist() == [0.5] * 7 + [1.5] * 7 + [2.5] * 7
    assert "7 regions per frame" in enc.spec.layer


def test_deterministic_and_independent_of_mixed_size_batching():
    a = build_faster_rcnn("tiny", random_init=True, seed=2)
    b = build_faster_rcnn("tiny", random_init=True, seed=2)
    small, tall = a.preprocess(frames(2, seed=6)), a.preprocess(frames(1, 120, 60, seed=7))
    with torch.inference_mode():
        mixed = a.encode(small + tall)  # units of several items, as the runner batches them
        alone = b.encode(small) + b.encode(tall)
    for x, y in zip(mixed, alone, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key], rtol=1e-5, atol=1e-5)


def caffe_roi_pool(fmap, box, pooled=14, scale=1 / 16):
    """Caffe's ROIPoolingLayer forward for one RoI, written out with loops."""
    c, height, width = fmap.shape
    x1, y1, x2, y2 = (math.floor(v * scale + 0.5) for v in box)  # C round(), coords >= 0
    bin_h, bin_w = max(y2 - y1 + 1, 1) / pooled, max(x2 - x1 + 1, 1) / pooled
    out = torch.zeros(c, pooled, pooled)
    for ph in range(pooled):
        hs = min(max(math.floor(ph * bin_h) + y1, 0), height)
        he = min(max(math.ceil((ph + 1) * bin_h) + y1, 0), height)
        for pw in range(pooled):
            ws = min(max(math.floor(pw * bin_w) + x1, 0), width)
            we = min(max(math.ceil((pw + 1) * bin_w) + x1, 0), width)
            if he > hs and we > ws:
                out[:, ph, pw] = fmap[:, hs:he, ws:we].amax(dim=(1, 2))
    return out


def test_region_feature_and_labels_equal_a_by_hand_recomputation():
    enc = sharpened(build_faster_rcnn("tiny", random_init=True, seed=1))
    net = enc.model
    with torch.no_grad():  # background wins for some regions: it still feeds the attribute head
        net.cls_score.bias[0] += 2.0
        net.cls_embed.weight.normal_(std=1.0)  # the class embedding sways the attributes
        net.attr_fc.weight.normal_(std=0.3)
    img = frames(1, 80, 110, seed=8)
    rows, extras = regions(enc, img)
    (unit,) = enc.preprocess(img)
    winners = set()
    with torch.inference_mode():
        res4 = net.backbone(unit.image[None])[0]
        for r in range(len(rows)):
            pooled = caffe_roi_pool(res4, extras["boxes"][r] * unit.scale)
            feat = net.res5(pooled[None]).mean(dim=(2, 3))[0]
            torch.testing.assert_close(torch.from_numpy(rows[r]), feat, rtol=1e-4, atol=1e-5)
            logits = net.cls_score.weight @ feat + net.cls_score.bias
            probs = logits.softmax(0)
            assert extras["class_id"][r] == probs[1:].argmax()
            assert extras["score"][r] == pytest.approx(probs[1:].max().item(), rel=1e-4)
            winners.add(logits.argmax().item())
            joint = torch.cat([feat, net.cls_embed.weight[logits.argmax()]])
            hidden = (net.attr_fc.weight @ joint + net.attr_fc.bias).relu()
            attr = net.attr_score.weight @ hidden + net.attr_score.bias
            assert extras["attribute_id"][r] == attr[1:].argmax()
    assert 0 in winners and len(winners) > 1


def to_milvlg(state):
    """Our state dict in MILVLG's detectron2 names (FrozenBN up to res3: no step counters)."""
    renames = [
        (r"^backbone\.conv1\.", "backbone.stem.conv1."),
        (r"^backbone\.bn1\.", "backbone.stem.conv1.norm."),
        (r"^rpn\.conv\.", "proposal_generator.rpn_head.conv."),
        (r"^rpn\.objectness\.", "proposal_generator.rpn_head.objectness_logits."),
        (r"^rpn\.deltas\.", "proposal_generator.rpn_head.anchor_deltas."),
        (r"^res5\.", "roi_heads.res5."),
        (r"^attr_fc\.", "roi_heads.box_predictor.attr_linear1."),
        (r"^attr_score\.", "roi_heads.box_predictor.attr_linear2."),
        (r"^(cls_score|bbox_pred|cls_embed)\.", r"roi_heads.box_predictor.\1."),
        (r"\.bn(\d)\.", r".conv\1.norm."),
        (r"\.downsample\.0\.", ".shortcut."),
        (r"\.downsample\.1\.", ".shortcut.norm."),
    ]
    out = {}
    for key, value in state.items():
        if re.match(r"backbone\.(bn1|res2|res3)\..*num_batches_tracked", key):
            continue
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


@pytest.mark.parametrize("wrapped", [False, True])
def test_milvlg_checkpoint_round_trip(tmp_path, wrapped):
    ref = sharpened(build_faster_rcnn("tiny", random_init=True, seed=9))
    state = to_milvlg(ref.model.state_dict())
    for key in [
        "backbone.stem.conv1.weight", "backbone.stem.conv1.norm.running_var",
        "backbone.res2.0.shortcut.norm.bias", "backbone.res4.0.conv2.norm.running_mean",
        "proposal_generator.rpn_head.anchor_deltas.bias", "roi_heads.res5.0.conv3.weight",
        "roi_heads.box_predictor.cls_embed.weight", "roi_heads.box_predictor.attr_linear2.bias",
    ]:  # fmt: skip
        assert key in state, key
    path = tmp_path / "bua-caffe-frcn-r101_with_attributes.pth"
    torch.save({"model": state, "iteration": 0} if wrapped else state, path)
    loaded = build_faster_rcnn("tiny", weights=path)
    img = frames(2, seed=10)
    rows, extras = regions(loaded, img)
    ref_rows, ref_extras = regions(ref, img)
    np.testing.assert_array_equal(rows, ref_rows)
    for key in extras:
        np.testing.assert_array_equal(extras[key], ref_extras[key])
    assert loaded.weights.startswith("sha256:") and ref.weights == "random:9"


def test_missing_checkpoint_names_the_expected_files(tmp_path, monkeypatch):
    monkeypatch.setenv("VDIAL_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        build_faster_rcnn()
    message = str(err.value)
    assert "bua-caffe-frcn-r101_with_attributes.pth" in message and "MILVLG" in message
    assert str(tmp_path / "faster-rcnn") in message and "--random-init" in message


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    state = to_milvlg(build_faster_rcnn("tiny", random_init=True).model.state_dict())
    del state["roi_heads.box_predictor.cls_embed.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=r"does not fit faster-rcnn:tiny: 1 missing"):
        build_faster_rcnn("tiny", weights=tmp_path / "partial.pth")
    state["roi_heads.box_predictor.cls_embed.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match="does not fit faster-rcnn:tiny"):
        build_faster_rcnn("tiny", weights=tmp_path / "shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="is not a torch state dict for faster-rcnn:tiny"):
        build_faster_rcnn("tiny", weights=tmp_path / "junk.pth")


def test_runner_writes_regions_of_differently_sized_videos(tmp_path):
    from tests.conftest import write_video
    from vdial.cache import FeatureStore
    from vdial.extract import runner
    from vdial.manifests import read_folder

    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "wide.mp4", frames(6, 48, 64, seed=11))
    write_video(root / "tall.mp4", frames(5, 64, 48, seed=12))

    config = runner.ExtractConfig(
        encoders=("faster-rcnn:tiny",),
        random_init=True,
        frames=2,
        options={"faster-rcnn": {"regions": 5}},
    )
    summary = runner.run_extraction(
        read_folder(root, name="v"), tmp_path / "s", config, progress=False
    )
    assert summary.done == {"faster-rcnn": 2} and not summary.failed
    feature = FeatureStore.open(tmp_path / "s")["faster-rcnn"]
    assert feature.item_shape == (128,)
    item = feature.item("tall")
    assert item["data"].shape == (10, 128) and item["boxes"].shape == (10, 4)
    assert item["frame_indices"].tolist() == [1] * 5 + [3] * 5  # 5 frames, 2 segment middles
    assert (item["boxes"][:, [0, 2]] <= 48).all() and (item["boxes"][:, [1, 3]] <= 64).all()
    assert feature.spec["max_regions"] == 5 and feature.spec["weights"] == "random:0"


@pytest.mark.slow
def test_paper_size_builds_and_gives_2048_d_regions(monkeypatch):
    r101 = frcnn.SIZES["r101"]  # the real network; 20 proposals keep res5 affordable on a CPU
    net = dataclasses.replace(r101.net, post_nms_top_n=20)
    monkeypatch.setitem(frcnn.SIZES, "r101", dataclasses.replace(r101, net=net))
    enc = build_faster_rcnn(random_init=True)
    assert sum(p.numel() for p in enc.model.parameters()) > 60_000_000
    rows, extras = regions(enc, frames(1, 60, 80))
    assert rows.shape == (10, 2048) and np.isfinite(rows).all()
    assert enc.spec.input_size == 600 and enc.spec.max_regions == 100
    assert extras["class_id"].max() < 1600 and extras["attribute_id"].max() < 400
