"""Greedy and beam search: beam 1 is greedy, beam beats greedy on likelihood, HF agrees."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from vdial.train.features import InputShape
from vdial.train.generate import Decoding, Hypothesis, beam_search, decode, greedy_search
from vdial.train.lm import LMConfig
from vdial.train.lm.prefix import causal_next_logits
from vdial.train.models.base import BuildContext
from vdial.train.models.prefix_lm import PrefixLM, PrefixLMConfig
from vdial.train.tokenizer import Tokenizer

PAD, EOS = 0, 3
VOCAB = 40


class FixedIds(Tokenizer):
    """Token ids without text: what a model needs to be built (pad 0, bos 2, eos 3)."""

    pad_id, bos_id, eos_id, sep_id = PAD, 2, EOS, 4
    vocab_size = VOCAB

    def encode(self, text):
        raise NotImplementedError

    def token_id(self, token):
        raise KeyError(token)

    def add_special_tokens(self, tokens):
        raise NotImplementedError

    def save(self, directory):
        raise NotImplementedError

    def _decode(self, ids):
        return " ".join(map(str, ids))


def tiny_model(seed: int = 0, *, text_segment: bool = True) -> PrefixLM:
    """A random prefix-lm (GPT-2) whose answers end at varied lengths.

    Random tied embeddings make a GPT-2 repeat its last token forever; an untied head and a
    louder <eos> row give answers of a few tokens, so <eos> handling and the length penalty
    matter. Without `text_segment` the text segment vector is zero, which is what HF's
    `generate` sees when it embeds the tokens it generates.
    """
    torch.manual_seed(seed)
    config = PrefixLMConfig(
        lm=LMConfig(d_model=32, n_layers=2, n_heads=2, dropout=0.0),
        frames=1,
        max_context_tokens=8,
        max_answer_tokens=8,
    )
    ctx = BuildContext({"visual": InputShape(6, 3, 1)}, FixedIds(), ("avsd",))
    model = PrefixLM(config, ctx).eval()
    with torch.no_grad():
        model.lm.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32) * 0.6)
        model.lm.lm_head.weight[EOS] *= 2.5
        if not text_segment:
            model.segment[1].zero_()
    return model


def as_batch(visual, ids, lengths, labels=None) -> dict:
    batch = {
        "visual": visual,
        "visual_mask": torch.ones(visual.shape[:2], dtype=torch.bool),
        "input_ids": ids,
        "attention_mask": (torch.arange(ids.shape[1])[None] < lengths[:, None]).long(),
        "context_lengths": lengths,
    }
    if labels is not None:
        batch["labels"] = labels
    return batch


def search(model, visual, ids, lengths, decoding):
    return model.search(as_batch(visual, ids, lengths), decoding)


def next_logits(model, visual):
    mask = torch.ones(visual.shape[:2], dtype=torch.bool)
    return causal_next_logits(model.lm, model._visual({"visual": visual}), mask, model._text)


def batch(n: int = 8, *, ragged: bool = True, seed: int = 1):
    """Visual tokens and right-padded contexts of lengths 2..6 (or all 5)."""
    gen = torch.Generator().manual_seed(seed)
    visual = torch.randn(n, 3, 6, generator=gen)
    ids = torch.randint(4, VOCAB, (n, 6), generator=gen)
    lengths = torch.randint(2, 7, (n,), generator=gen) if ragged else torch.full((n,), 5)
    ids[torch.arange(6)[None] >= lengths[:, None]] = PAD
    return visual, ids[:, : int(lengths.max())], lengths


def answer_log_prob(model: PrefixLM, visual, context: list[int], hyp: Hypothesis) -> float:
    """log p(answer [<eos>] | context) from the training forward (teacher forcing): independent
    of the search code. An answer cut at the length limit has no <eos>."""
    target = hyp.tokens + ([EOS] if len(hyp.tokens) < hyp.length else [])
    ids = torch.tensor([context + target])
    labels = torch.tensor([[-100] * len(context) + target])
    with torch.no_grad():
        batch = as_batch(visual[None], ids, torch.tensor([ids.shape[1]]), labels)
        loss = model(batch, ["response"])["response"]
    return -float(loss.total)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_beam_size_one_is_greedy_exactly(length_penalty):
    model = tiny_model()
    visual, ids, lengths = batch()
    greedy = search(model, visual, ids, lengths, Decoding(beam_size=1, max_length=8))
    with torch.no_grad():
        beam = beam_search(
            next_logits(model, visual),
            ids,
            lengths,
            beam_size=1,
            max_new_tokens=8,
            length_penalty=length_penalty,
            eos_id=EOS,
            pad_id=PAD,
        )
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    # the same sums, up to the last bits: once a dialog ends, beam 1 keeps a running beam, so
    # the padded width of the batch (and with it the kernels' rounding) can differ
    assert [h.log_prob for h in beam] == pytest.approx([h.log_prob for h in greedy], abs=1e-5)
    assert len({len(h.tokens) for h in greedy}) > 1  # answers end at different lengths


def test_batched_search_equals_one_dialog_at_a_time():
    """Right padding never leaks into another row's answer."""
    model = tiny_model()
    visual, ids, lengths = batch(5)
    for decoding in (Decoding(max_length=8), Decoding(beam_size=3, max_length=8)):
        together = [h.tokens for h in search(model, visual, ids, lengths, decoding)]
        alone = [
            search(
                model, visual[i : i + 1], ids[i : i + 1, : lengths[i]], lengths[i : i + 1], decoding
            )[0].tokens
            for i in range(len(ids))
        ]
        assert together == alone


def test_beam_finds_a_more_likely_answer_than_greedy():
    model = tiny_model()
    visual, ids, lengths = batch()
    greedy = search(model, visual, ids, lengths, Decoding(max_length=8))
    beam = search(
        model, visual, ids, lengths, Decoding(beam_size=4, length_penalty=0.0, max_length=8)
    )
    better = 0
    for i, (g, b) in enumerate(zip(greedy, beam, strict=True)):
        context = ids[i, : lengths[i]].tolist()
        lp_g = answer_log_prob(model, visual[i], context, g)
        lp_b = answer_log_prob(model, visual[i], context, b)
        # the searches' own sums agree with teacher forcing
        assert g.log_prob == pytest.approx(lp_g, abs=1e-4)
        assert b.log_prob == pytest.approx(lp_b, abs=1e-4)
        assert lp_b >= lp_g - 1e-5
        better += lp_b > lp_g + 1e-3
    assert better >= 1


def markov(table: dict[int, dict[int, float]], vocab: int = 6):
    """A bigram LM given as {last token: {next token: probability}} (context: one token)."""

    def next_logits(seq, lengths):
        last = seq[torch.arange(len(seq)), lengths - 1].tolist()
        out = torch.full((len(seq), vocab), -1e4)
        for row, token in enumerate(last):
            for nxt, p in table.get(token, {}).items():
                out[row, nxt] = math.log(p)
        return out

    return next_logits


# 5 = start; 1 = eos. Greedy takes A (0.5) then C (0.34): 0.17; beam finds B <eos>: 0.396.
TABLE = {
    5: {2: 0.5, 3: 0.4, 1: 0.1},
    2: {4: 0.34, 0: 0.33, 1: 0.33},
    3: {1: 0.99, 4: 0.01},
    4: {1: 0.9, 4: 0.1},
    0: {1: 1.0},
}


def test_beam_beats_greedy_on_a_bigram_model():
    fn, start = markov(TABLE), torch.tensor([[5]])
    one = torch.tensor([1])
    greedy = greedy_search(fn, start, one, max_new_tokens=4, eos_id=1, pad_id=0)[0]
    beam = beam_search(
        fn, start, one, beam_size=2, max_new_tokens=4, length_penalty=0.0, eos_id=1, pad_id=0
    )[0]
    assert greedy.tokens == [2, 4] and greedy.log_prob == pytest.approx(math.log(0.5 * 0.34 * 0.9))
    assert beam.tokens == [3] and beam.log_prob == pytest.approx(math.log(0.4 * 0.99))


def _all_answers(table, max_len):
    """Every finished answer (ending in <eos>, or cut at max_len) with its log-probability."""
    out = []
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(6), repeat=n):
            last, logp, ok = 5, 0.0, True
            for k, token in enumerate(seq):
                p = table[last].get(token)
                if p is None or (token == 1 and k != n - 1):
                    ok = False
                    break
                logp, last = logp + math.log(p), token
            if ok and (seq[-1] == 1 or n == max_len):
                out.append((list(seq), logp))
    return out


@pytest.mark.parametrize("length_penalty", [0.0, 3.0])
def test_wide_beam_finds_the_best_normalised_answer(length_penalty):
    """With more beams than answers, beam search is exhaustive: it returns the argmax of
    log p / len**alpha over all answers, enumerated here by brute force."""
    fn, start, one = markov(TABLE), torch.tensor([[5]]), torch.tensor([1])
    best = max(_all_answers(TABLE, 3), key=lambda a: a[1] / len(a[0]) ** length_penalty)
    got = decode(
        fn,
        start,
        one,
        Decoding(beam_size=30, length_penalty=length_penalty, max_length=3),
        eos_id=1,
        pad_id=0,
    )[0]
    expected = best[0][:-1] if best[0][-1] == 1 else best[0]
    assert got.tokens == expected and got.log_prob == pytest.approx(best[1])
    assert (length_penalty == 0.0) == (expected == [3])  # a large alpha prefers a long answer


def test_eos_and_length_limit():
    always_eos = markov({5: {1: 0.9, 2: 0.1}, 2: {1: 1.0}})
    stop = greedy_search(
        always_eos, torch.tensor([[5]]), torch.tensor([1]), max_new_tokens=4, eos_id=1, pad_id=0
    )[0]
    assert stop.tokens == [] and stop.length == 1
    never_eos = markov({5: {2: 1.0}, 2: {2: 0.9, 1: 0.1}})
    for k in (1, 3):
        h = decode(
            never_eos,
            torch.tensor([[5]]),
            torch.tensor([1]),
            Decoding(beam_size=k, length_penalty=0.0, max_length=3),
            eos_id=1,
            pad_id=0,
        )[0]
        assert h.tokens == [2, 2, 2] and h.length == 3


@pytest.mark.parametrize(("beam_size", "length_penalty"), [(1, 1.0), (2, 0.0), (2, 1.0), (4, 2.0)])
def test_same_tokens_as_transformers_generate(beam_size, length_penalty):
    """HF's generate on the GPT-2 with the visual prefix as inputs_embeds gives our tokens."""
    model = tiny_model(text_segment=False)
    visual, ids, lengths = batch(ragged=False)
    ours = search(
        model,
        visual,
        ids,
        lengths,
        Decoding(beam_size=beam_size, length_penalty=length_penalty, max_length=8),
    )
    with torch.no_grad():
        embeds = torch.cat([model._visual({"visual": visual}), model._text(ids)], 1)
        hf = model.lm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            max_new_tokens=8,
            num_beams=beam_size,
            length_penalty=length_penalty,
            do_sample=False,
            early_stopping=False,
            eos_token_id=EOS,
            pad_token_id=PAD,
        )
    for row, hyp in zip(hf.tolist(), ours, strict=True):
        expected = hyp.tokens + ([EOS] if len(hyp.tokens) < hyp.length else [])
        assert row[: len(expected)] == expected
        # HF fills finished beams with `pad_token_id or eos_token_id`: <eos> when pad is 0
        assert set(row[len(expected) :]) <= {PAD, EOS}
    if length_penalty <= 1.0:  # (a strong length bonus keeps every beam to the limit)
        assert any(len(h.tokens) < 8 for h in ours)  # some answers end at <eos>


def test_decoding_is_validated():
    with pytest.raises(ValueError, match="beam_size"):
        Decoding(beam_size=0)
    with pytest.raises(ValueError, match="max_length"):
        Decoding(max_length=0)
    assert Decoding().resolved(12).max_length == 12
    assert Decoding(beam_size=3).to_dict()["search"] == "beam"


def test_a_model_without_an_option_head_says_so():
    from vdial.train.models.base import Unsupported

    model = tiny_model()
    visual, ids, lengths = batch(2)
    with pytest.raises(Unsupported, match="no option head"):
        model.score_options(as_batch(visual, ids, lengths))
