"""Mask schedules and iterative decoding, with stub and oracle predictors."""
import math

import numpy as np
import pytest
import torch

from model.decoding_order import halton_order
from model.iterative_decode import confidence, gumbel_noise, image_generators, iterative_decode
from model.mask_schedule import mask_schedule

V, MASK = 32, 32


@pytest.mark.parametrize("name, r, expected", [
    ("cosine", 0.0, 1.0), ("cosine", 0.5, math.cos(math.pi / 4)), ("cosine", 1.0, 0.0),
    ("linear", 0.25, 0.75), ("square", 0.5, 0.75), ("square", 1.0, 0.0),
    ("pow3", 0.5, 0.875), ("log", 1.0, 0.0), ("log", 0.0, 1.0), ("exp", 0.0, 1.0), ("exp", 1.0, 0.0),
])
def test_schedule_values(name, r, expected):
    assert mask_schedule(r, name) == pytest.approx(expected, abs=1e-12)


def batch_of_different_masks(seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (6, 256), generator=gen)
    mask = torch.zeros(6, 256, dtype=torch.bool)
    for i, n in enumerate([1, 7, 40, 99, 180, 256]):
        mask[i, torch.randperm(256, generator=gen)[:n]] = True
    return tokens, mask


def stub_predictor(tokens):
    """Random logits: the counts must follow the schedule whatever the model says."""
    return torch.randn(*tokens.shape, V + 1)


@pytest.mark.parametrize("schedule, T", [("cosine", 8), ("linear", 4), ("square", 12), ("cosine", 3)])
def test_masked_counts_follow_the_schedule_per_image(schedule, T):
    tokens, mask = batch_of_different_masks()
    n0 = mask.sum(1).tolist()
    out = iterative_decode(stub_predictor, tokens, mask, T=T, schedule=schedule, mask_token=MASK, num_codes=V,
                           generators=image_generators(0, range(len(tokens)), "cpu"))
    for t in range(T + 1):
        got = out.masks[t].sum(1).tolist()
        prev = out.masks[t - 1].sum(1).tolist() if t else n0
        for i, n in enumerate(n0):
            expected = math.ceil(mask_schedule(t / T, schedule) * n - 1e-9)
            if t > 0:  # never more than before, and at least one token revealed per step
                expected = min(expected, max(prev[i] - 1, 0))
            assert got[i] == expected, (t, i)
        # masked tokens stay a subset of the previous step's and of the holes
        assert not (out.masks[t] & ~mask).any()
        if t:
            assert not (out.masks[t] & ~out.masks[t - 1]).any()
    assert not out.masks[-1].any()
    assert torch.equal(out.tokens[~mask], tokens[~mask])  # known tokens untouched
    assert (out.tokens < V).all()


def test_at_least_one_token_revealed_each_step():
    tokens, mask = batch_of_different_masks()
    out = iterative_decode(stub_predictor, tokens, mask, T=20, schedule="cosine", mask_token=MASK, num_codes=V)
    counts = out.masks.sum(2)  # (T + 1, B)
    for i in range(6):
        for t in range(1, 21):
            if counts[t - 1, i] > 0:
                assert counts[t, i] < counts[t - 1, i]


def test_oracle_predictor_reconstructs_exactly():
    tokens, mask = batch_of_different_masks(1)

    def oracle(current):
        logits = torch.full((*current.shape, V + 1), -10.0)
        logits.scatter_(2, tokens[..., None], 10.0)
        logits[..., MASK] = 50.0  # the mask token must never be predicted
        return logits

    garbage = torch.where(mask, 0, tokens)
    out = iterative_decode(oracle, garbage, mask, T=8, mask_token=MASK, num_codes=V)
    assert torch.equal(out.tokens, tokens)


def test_sweet_spot_stops_early_and_fills_the_rest():
    tokens, mask = batch_of_different_masks()
    full = iterative_decode(stub_predictor, tokens, mask, T=10, mask_token=MASK, num_codes=V,
                            generators=image_generators(0, range(len(tokens)), "cpu"))
    torch.manual_seed(1)
    early = iterative_decode(stub_predictor, tokens, mask, T=10, sweet_spot=4, mask_token=MASK, num_codes=V,
                             generators=image_generators(0, range(len(tokens)), "cpu"))
    assert early.masks.shape[0] == 5 and early.predictions.shape[0] == 4
    assert early.masks[-1].any()  # tokens were still masked when it stopped …
    left = early.masks[-1]
    assert torch.equal(early.tokens[left], early.predictions[-1][left])  # … and took the last prediction
    assert (early.tokens < V).all() and torch.equal(early.tokens[~mask], tokens[~mask])
    assert full.masks.shape[0] == 11


def test_same_seed_same_output_and_sampling():
    tokens, mask = batch_of_different_masks()
    torch.manual_seed(0)
    fixed_logits = torch.randn(6, 256, V + 1)
    predict = lambda cur: fixed_logits  # noqa: E731
    runs = [iterative_decode(predict, tokens, mask, T=6, mask_token=MASK, num_codes=V, temperature=1.0,
                             generators=image_generators(s, range(len(tokens)), "cpu")) for s in (5, 5, 6)]
    assert torch.equal(runs[0].tokens, runs[1].tokens) and torch.equal(runs[0].masks, runs[1].masks)
    assert not torch.equal(runs[0].tokens, runs[2].tokens)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_an_images_decoding_does_not_depend_on_its_batch(temperature):
    """Each image's noise comes from its own generator (seed, serial): decoded alone, in a batch, or among other
    images, image 3 gets the same masks and tokens (the predictor scores each image on its own)."""
    tokens, mask = batch_of_different_masks()
    torch.manual_seed(0)
    fixed_logits = torch.randn(6, 256, V + 1)

    def decode(rows):
        rows = list(rows)
        return iterative_decode(lambda cur: fixed_logits[rows], tokens[rows], mask[rows], T=6, mask_token=MASK,
                                num_codes=V, temperature=temperature, generators=image_generators(7, rows, "cpu"))

    alone, together, reordered = decode([3]), decode(range(6)), decode([5, 3, 0])
    for result, i in ((together, 3), (reordered, 1)):
        assert torch.equal(result.tokens[i], alone.tokens[0]) and torch.equal(result.masks[:, i], alone.masks[:, 0])


@pytest.mark.parametrize("form", ["lab", "maskgit"])
def test_confidence_forms_against_a_float64_recomputation(form):
    """lab: p + s·g (the lab template); maskgit: log p + s·g (google-research/maskgit's parallel_decode),
    g = -log(-log u), recomputed in float64 from the same uniforms."""
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(4, 256, generator=gen) * 0.999 + 1e-3
    noise = gumbel_noise(image_generators(3, range(4), "cpu"), 1, 256, "cpu")[0]
    u = torch.stack([torch.rand(1, 256, generator=g)[0] for g in image_generators(3, range(4), "cpu")]).double()
    g = -torch.log(-torch.log(u))
    base = p.double() if form == "lab" else torch.log(p.double())
    torch.testing.assert_close(noise.double(), g, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(confidence(p, noise, 2.25, form).double(), base + 2.25 * g, rtol=1e-5, atol=1e-5)
    # the forms rank differently: the log spreads low probabilities apart, so the noise reorders them less
    assert not torch.equal(confidence(p, noise, 2.25, "lab").argsort(), confidence(p, noise, 2.25, "maskgit").argsort())


def test_maskgit_confidence_commits_the_most_probable_tokens_first_under_small_noise():
    """With the noise scaled down, both forms keep the least probable tokens masked: the ranking is the
    probabilities' (log is monotone)."""
    tokens, mask = batch_of_different_masks()
    torch.manual_seed(0)
    fixed_logits = torch.randn(6, 256, V + 1) * 3
    probs = torch.softmax(fixed_logits[..., :V], -1).max(-1).values
    for form in ("lab", "maskgit"):
        out = iterative_decode(lambda cur: fixed_logits, tokens, mask, T=4, mask_token=MASK, num_codes=V,
                               choice_temperature=1e-9, confidence_form=form,
                               generators=image_generators(0, range(6), "cpu"))
        still = out.masks[1]
        for i in range(6):
            if still[i].any() and (mask[i] & ~still[i]).any():
                assert probs[i][still[i]].max() <= probs[i][mask[i] & ~still[i]].min()


def base_digits_reversed(i: int, base: int) -> float:
    """The radical inverse, computed another way: i written in `base` (numpy's base_repr), its digits read
    backwards after the radix point, in exact fractions."""
    from fractions import Fraction

    digits = np.base_repr(i, base)
    return float(sum(Fraction(int(d), base ** (k + 1)) for k, d in enumerate(reversed(digits))))


def test_the_halton_order_is_the_first_visit_order_of_radical_inverses_in_bases_2_and_3():
    expected, i = [], 0
    while len(expected) < 256:
        i += 1
        cell = (math.floor(base_digits_reversed(i, 3) * 16), math.floor(base_digits_reversed(i, 2) * 16))
        if cell not in expected:
            expected.append(cell)
    order = halton_order(16).tolist()
    assert order == [row * 16 + col for row, col in expected]
    # by hand: i=1 is (x, y) = (1/2, 1/3) → row 5, column 8; i=2 is (1/4, 2/3) → row 10, column 4
    assert order[:2] == [5 * 16 + 8, 10 * 16 + 4] and sorted(order) == list(range(256))


@pytest.mark.parametrize("schedule, T", [("cosine", 8), ("linear", 5)])
def test_halton_decoding_commits_the_earliest_halton_positions_still_masked(schedule, T):
    tokens, mask = batch_of_different_masks(3)
    rank = {pos: k for k, pos in enumerate(halton_order(16).tolist())}
    confident = iterative_decode(stub_predictor, tokens, mask, T=T, schedule=schedule, mask_token=MASK, num_codes=V,
                                 generators=image_generators(0, range(len(tokens)), "cpu"))
    out = iterative_decode(stub_predictor, tokens, mask, T=T, schedule=schedule, mask_token=MASK, num_codes=V,
                           order="halton", generators=image_generators(0, range(len(tokens)), "cpu"))
    assert torch.equal(out.masks.sum(2), confident.masks.sum(2))  # the schedule's counts, unchanged
    for t in range(1, T + 1):
        for i in range(len(tokens)):
            before, after = out.masks[t - 1, i].nonzero().flatten().tolist(), out.masks[t, i]
            committed = sorted(before, key=rank.get)[:len(before) - int(after.sum())]
            assert set(committed) == set(before) - set(after.nonzero().flatten().tolist()), (t, i)
    # no noise enters the order: other generators, the same masks
    again = iterative_decode(stub_predictor, tokens, mask, T=T, schedule=schedule, mask_token=MASK, num_codes=V,
                             order="halton", generators=image_generators(7, range(len(tokens)), "cpu"))
    assert torch.equal(again.masks, out.masks)
