"""Each objective against a plain-loop computation on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vdial.train import objectives as obj


def _ce(logits: list[float], target: int, smoothing: float = 0.0) -> float:
    """Cross-entropy of one row with label smoothing, written out."""
    m = max(logits)
    log_z = m + math.log(sum(math.exp(v - m) for v in logits))
    logp = [v - log_z for v in logits]
    k = len(logits)
    return -sum(((1 - smoothing) * (i == target) + smoothing / k) * lp for i, lp in enumerate(logp))


def _cos(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def test_token_cross_entropy_sums_labelled_tokens_only():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1, -100, 4], [-100, -100, 0]])
    loss = obj.token_cross_entropy(logits, labels)
    expected = sum(
        _ce(logits[b, t].tolist(), int(labels[b, t]))
        for b in range(2)
        for t in range(3)
        if labels[b, t] != -100
    )
    assert float(loss.count) == 3 and float(loss.total) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_symmetric_info_nce_against_a_loop(smoothing):
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    t = 0.07
    loss = obj.symmetric_info_nce(a, b, t, label_smoothing=smoothing)
    total = 0.0
    for i in range(4):
        a2b = [_cos(a[i].tolist(), b[j].tolist()) / t for j in range(4)]
        b2a = [_cos(b[i].tolist(), a[j].tolist()) / t for j in range(4)]
        total += 0.5 * (_ce(a2b, i, smoothing) + _ce(b2a, i, smoothing))
    assert float(loss.count) == 4 and float(loss.total) == pytest.approx(total, rel=1e-4)


def test_learnable_temperature_is_clamped_and_trained():
    temp = obj.Temperature(0.07, learnable=True, bounds=(0.01, 0.5))
    assert float(temp().detach()) == pytest.approx(0.07)
    a = torch.randn(3, 4)
    obj.symmetric_info_nce(a, a + 0.1, temp()).total.backward()
    assert temp.log_t.grad is not None and temp.log_t.grad != 0
    fixed = obj.Temperature(0.001, learnable=False, bounds=(0.01, 0.5))
    assert float(fixed()) == pytest.approx(0.01) and not list(fixed.parameters())


def test_max_token_similarity_is_the_best_pair():
    gen = torch.Generator().manual_seed(2)
    a = F.normalize(torch.randn(2, 3, 4, generator=gen), dim=-1)
    b = F.normalize(torch.randn(3, 5, 4, generator=gen), dim=-1)
    sim = obj.max_token_similarity(a, b)
    for n in range(2):
        for m in range(3):
            best = max(float(a[n, i] @ b[m, j]) for i in range(3) for j in range(5))
            assert float(sim[n, m]) == pytest.approx(best, abs=1e-6)


def test_matching_negatives_are_never_the_positive_and_follow_similarity():
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        neg = obj.matching_negatives(5, generator=gen)
        assert (neg != torch.arange(5)).all()
    sim = torch.full((3, 3), -20.0)
    sim[0, 2] = sim[1, 0] = sim[2, 1] = 20.0  # one clear hardest negative per row
    sim.fill_diagonal_(50.0)  # the positive is the most similar, and must never be drawn
    draws = torch.stack(
        [obj.matching_negatives(3, similarity=sim, generator=gen) for _ in range(50)]
    )
    assert (draws == torch.tensor([2, 0, 1])).float().mean() > 0.95


def test_binary_matching_is_two_class_cross_entropy():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]])
    labels = torch.tensor([1, 0, 1])
    loss = obj.binary_matching(logits, labels)
    expected = sum(_ce(logits[i].tolist(), int(labels[i])) for i in range(3))
    assert float(loss.total) == pytest.approx(expected, rel=1e-6) and float(loss.count) == 3


def test_mlm_mask_rates_and_special_tokens():
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(10, 100, (200, 50), generator=gen)
    eligible = torch.ones_like(ids, dtype=torch.bool)
    eligible[:, :2] = False  # e.g. <bos> and a separator: never masked
    masked, labels = obj.mlm_mask(
        ids, eligible=eligible, mask_id=3, random_ids=torch.arange(10, 100), generator=gen
    )
    chosen = labels != -100
    assert not chosen[:, :2].any() and (masked[:, :2] == ids[:, :2]).all()
    assert torch.equal(labels[chosen], ids[chosen]) and (masked[~chosen] == ids[~chosen]).all()
    rate = chosen[:, 2:].float().mean()
    assert 0.135 < rate < 0.165  # 15 % of 9600 tokens, within 4 standard deviations
    to_mask = (masked[chosen] == 3).float().mean()
    kept = (masked[chosen] == ids[chosen]).float().mean()
    assert 0.77 < to_mask < 0.83 and 0.08 < kept < 0.13  # 80 % <mask>, ~10 % kept (+ chance)
    swapped = (masked[chosen] != 3) & (masked[chosen] != ids[chosen])
    assert 0.07 < swapped.float().mean() < 0.12
    assert ((masked[chosen][swapped] >= 10) & (masked[chosen][swapped] < 100)).all()


@pytest.mark.parametrize("kind", ["l1", "mse", "cosine"])
def test_feature_regression_against_a_loop(kind):
    gen = torch.Generator().manual_seed(5)
    pred, target = torch.randn(2, 3, 4, generator=gen), torch.randn(2, 3, 4, generator=gen)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    loss = obj.feature_regression(pred, target, mask, kind=kind)
    total = 0.0
    for i in range(2):
        for j in range(3):
            if not mask[i, j]:
                continue
            p, t = pred[i, j].tolist(), target[i, j].tolist()
            if kind == "l1":
                total += sum(abs(x - y) for x, y in zip(p, t, strict=True)) / 4
            elif kind == "mse":
                total += sum((x - y) ** 2 for x, y in zip(p, t, strict=True)) / 4
            else:
                total += 2 - 2 * _cos(p, t)
    assert float(loss.count) == 4 and float(loss.total) == pytest.approx(total, rel=1e-5)


def test_kl_divergence_against_a_loop():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    q = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    loss = obj.kl_divergence(p.log(), q.log())
    total = sum(
        p[i, k].item() * math.log(p[i, k].item() / q[i, k].item())
        for i in range(2)
        for k in range(3)
    )
    assert float(loss.total) == pytest.approx(total, rel=1e-6)
    assert float(obj.kl_divergence(p.log(), p.log()).total) == pytest.approx(0.0, abs=1e-7)


def test_visdial_options_and_dense_losses():
    scores = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    gt = torch.tensor([1, 0])
    loss = obj.options_cross_entropy(scores, gt)
    assert float(loss.total) == pytest.approx(_ce([1.0, 2.0, 0.5], 1) + _ce([0.0, -1.0, 3.0], 0))
    relevance = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    dense = obj.dense_relevance(scores, relevance, mask=torch.tensor([True, False]))
    # -sum r_i log softmax(s)_i: log softmax is -CE of each option as the target
    expected = 1.0 * _ce([1.0, 2.0, 0.5], 1) + 0.5 * _ce([1.0, 2.0, 0.5], 2)
    assert float(dense.count) == 1 and float(dense.total) == pytest.approx(expected, rel=1e-6)
    mean = obj.dense_relevance(scores[:1], relevance[:1], reduce="mean")
    assert float(mean.total) == pytest.approx(expected / 3, rel=1e-6)
