"""KID and its jackknife errors against brute-force float64 re-computations and repeated sampling."""
import itertools

import numpy as np
import pytest

from model.kid import KernelReference, kid_with_error, paired_difference


def kid(x, y):
    return KernelReference(y).score(x)[0]


def brute_kid(x, y):
    """The unbiased MMD² written out pair by pair."""
    k = lambda a, b: (float(np.dot(a, b)) / len(a) + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def brute_jackknife_se(values):
    n = len(values)
    return np.sqrt((n - 1) / n * ((values - values.mean()) ** 2).sum())


def test_kid_matches_the_pairwise_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.5, 1.0, (9, 5)), rng.normal(0.0, 1.2, (7, 5))  # sizes may differ
    assert kid(x, y) == pytest.approx(brute_kid(x, y), rel=1e-10)
    assert kid(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(brute_kid(x, y), rel=1e-5)


def test_jackknife_errors_match_deleting_each_pair_and_recomputing():
    rng = np.random.default_rng(1)
    x, y, b = rng.normal(0.3, 1.0, (8, 4)), rng.normal(0.0, 1.0, (8, 4)), rng.normal(0.1, 1.0, (8, 4))
    drop = [np.delete(np.arange(8), i) for i in range(8)]
    value, se = kid_with_error(x, y)
    assert value == pytest.approx(brute_kid(x, y), rel=1e-10)
    assert se == pytest.approx(brute_jackknife_se(np.array([brute_kid(x[d], y[d]) for d in drop])), rel=1e-8)
    reference = KernelReference(y)
    diff, diff_se = paired_difference(reference.score(x), reference.score(b))
    assert diff == pytest.approx(brute_kid(x, y) - brute_kid(b, y), rel=1e-10)
    loo = np.array([brute_kid(x[d], y[d]) - brute_kid(b[d], y[d]) for d in drop])
    assert diff_se == pytest.approx(brute_jackknife_se(loo), rel=1e-8)


def test_kid_is_unbiased_where_the_plug_in_estimate_is_not():
    """Two samples of one distribution: KID averages 0 over many draws; the plug-in (biased) MMD², with
    the kernel's diagonal kept, is positive by more than the sampling error (so this test could fail)."""
    rng = np.random.default_rng(2)
    unbiased, plug_in = [], []
    for _ in range(400):
        x, y = rng.normal(0, 1, (20, 4)), rng.normal(0, 1, (20, 4))
        unbiased.append(kid(x, y))
        k = lambda a, b: (a @ b.T / 4 + 1.0) ** 3  # noqa: E731
        plug_in.append(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    sem = np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * sem
    assert np.mean(plug_in) > 10 * sem


def test_jackknife_error_matches_the_spread_over_repeated_test_sets():
    rng = np.random.default_rng(3)
    values, errors = [], []
    for _ in range(300):
        y = rng.normal(0, 1, (60, 4))
        x = 0.8 * y + rng.normal(0.3, 0.6, (60, 4))  # paired outputs, as a composite is with its ground truth
        value, se = kid_with_error(x, y)
        values.append(value)
        errors.append(se)
    assert np.mean(errors) == pytest.approx(np.std(values), rel=0.25)


def test_unpaired_or_too_small_sets_have_no_error():
    """The jackknife deletes pair i: sets of different sizes, or of fewer than 3 rows, get KID alone."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(6, 3))
    assert kid_with_error(x, y) == (pytest.approx(brute_kid(x, y), rel=1e-10), None)
    assert kid_with_error(x[:2], y[:2])[1] is None
    assert KernelReference(y).score(x)[1] is None
    with pytest.raises(ValueError, match="same test images"):
        paired_difference((0.1, np.zeros(5)), (0.2, np.zeros(6)))
