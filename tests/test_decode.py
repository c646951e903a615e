"""Mask schedules and iterative decoding, with stub and oracle predictors."""
import math

import pytest
import torch

from model.iterative_decode import iterative_decode
from model.mask_schedule import mask_schedule

V, MASK = 32, 32


@pytest.mark.parametrize("name, r, expected", [
    ("cosine", 0.0, 1.0), ("cosine", 0.5, math.cos(math.pi / 4)), ("cosine", 1.0, 0.0),
    ("linear", 0.25, 0.75), ("square", 0.5, 0.75), ("square", 1.0, 0.0),
    ("pow3", 0.5, 0.875), ("log", 1.0, 0.0), ("log", 0.0, 1.0), ("exp", 0.0, 1.0), ("exp", 1.0, 0.0),
])
def test_schedule_values(name, r, expected):
    assert mask_schedule(r, name) == pytest.approx(expected, abs=1e-12)


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ValueError, match="cosine.*linear.*square"):
        mask_schedule(0.5, "zigzag")


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
                           generator=torch.Generator().manual_seed(0))
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
                            generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    early = iterative_decode(stub_predictor, tokens, mask, T=10, sweet_spot=4, mask_token=MASK, num_codes=V,
                             generator=torch.Generator().manual_seed(0))
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
                             generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(runs[0].tokens, runs[1].tokens) and torch.equal(runs[0].masks, runs[1].masks)
    assert not torch.equal(runs[0].tokens, runs[2].tokens)


@pytest.mark.parametrize("kwargs, message", [
    ({"T": 0}, "T must be"), ({"T": 2.5}, "T must be"), ({"T": 4, "sweet_spot": 5}, "sweet_spot"),
    ({"T": 4, "sweet_spot": -1}, "sweet_spot"), ({"T": 4, "schedule": "bogus"}, "unknown mask schedule"),
])
def test_invalid_arguments_fail_before_work(kwargs, message):
    calls = []
    tokens, mask = batch_of_different_masks()
    with pytest.raises(ValueError, match=message):
        iterative_decode(lambda c: calls.append(1), tokens, mask, mask_token=MASK, num_codes=V,
                         **{"schedule": "cosine", **kwargs})
    assert calls == []
