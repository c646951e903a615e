"""Pasting and Poisson blending of the generated holes, against closed forms and a Jacobi iteration."""
import numpy as np

from model.blend import PoissonBlend, harmonic_correction, paste


def brush_masks(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.full((n, size, size), 255, np.uint8)
    for m in mask:
        y, x = rng.integers(0, size, 2)
        for _ in range(25):  # a random walk with a 3x3 brush; may touch the border
            y, x = np.clip([y + rng.integers(-1, 2), x + rng.integers(-1, 2)], 0, size - 1)
            m[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = 0
    return mask


def jacobi_correction(offset, hole, sweeps=50000):
    """The same boundary-value problem by plain Jacobi sweeps, in float64, until they stop moving."""
    h = np.where(hole[..., None], 0.0, offset.astype(np.float64))
    count = np.pad(np.ones(hole.shape), 1)
    n = (count[:-2, 1:-1] + count[2:, 1:-1] + count[1:-1, :-2] + count[1:-1, 2:])[..., None]
    for _ in range(sweeps):
        padded = np.pad(h, ((1, 1), (1, 1), (0, 0)))
        total = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        new = np.where(hole[..., None], total / n, h)
        if np.abs(new - h).max() < 1e-11:
            return new
        h = new
    raise AssertionError("Jacobi did not converge")


def test_correction_matches_an_independent_jacobi_solution():
    rng = np.random.default_rng(1)
    for hole in brush_masks(3, seed=2) == 0:
        offset = rng.normal(0, 20, (16, 16, 3))
        np.testing.assert_allclose(harmonic_correction(offset, hole), jacobi_correction(offset, hole), atol=1e-6)


def test_a_colour_shift_is_removed_exactly_and_known_pixels_kept():
    rng = np.random.default_rng(3)
    known = rng.integers(40, 200, (4, 16, 16, 3)).astype(np.uint8)
    mask = brush_masks(4, seed=4)
    shifted = (known.astype(int) + [25, -30, 10]).astype(np.uint8)  # the decode, off by a constant colour
    assert np.array_equal(PoissonBlend(mask)(shifted, known), known)
    pasted = paste(shifted, known, mask)
    assert np.array_equal(pasted[mask == 255], known[mask == 255])
    assert np.array_equal(pasted[mask == 0], shifted[mask == 0])


def test_blend_keeps_known_pixels_and_leaves_matching_decodes_alone():
    rng = np.random.default_rng(5)
    known = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    generated = rng.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8)
    mask = brush_masks(3, seed=6)
    mask[2] = 0  # a fully masked image has no border to blend to: pasted as generated
    blend = PoissonBlend(mask)
    out = blend(generated, known)
    assert np.array_equal(out[mask == 255], known[mask == 255])
    assert np.array_equal(out[2], generated[2])
    # where the decode agrees with the input on the known pixels, there is nothing to correct
    agree = np.where((mask == 255)[..., None], known, generated)
    assert np.array_equal(blend(agree, known)[:2], agree[:2])
