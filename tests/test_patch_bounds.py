"""The model-free tokenizer references of experiments/ablations/patch_bounds.py against cases
whose answer is known by hand."""

import numpy as np

from experiments.ablations import patch_bounds


def test_patches_cut_each_frame_into_row_major_blocks():
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(1, 2, 4, 4, 3)
    rows = patch_bounds.patches(frames, 2)
    assert rows.shape == (2 * 4, 2 * 2 * 3)
    # The second patch of the first frame: rows 0-1, columns 2-3.
    np.testing.assert_allclose(rows[1] * 255, frames[0, 0, 0:2, 2:4].reshape(-1))


def test_linear_bound_is_exact_at_the_data_rank_and_the_variance_below_it():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(6, 2)))[0].T  # two orthonormal directions
    weights = rng.normal(size=(5000, 2)) * np.array([0.3, 0.1])
    x = 0.5 + weights @ basis
    bounds = patch_bounds.linear_bounds(x, [0, 1, 2])
    assert bounds[2] > 100  # rank 2 reconstructs rank-2 data exactly
    # Rank 1 leaves the second direction's variance, 0.1^2, spread over 6 numbers per row.
    np.testing.assert_allclose(bounds[1], -10 * np.log10(0.01 / 6), atol=0.1)
    np.testing.assert_allclose(bounds[0], -10 * np.log10((0.09 + 0.01) / 6), atol=0.1)


def test_kmeans_bound_finds_separated_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]])
    noise = 0.01

    def sample(n):
        return (centres[rng.integers(0, 3, n)] + rng.normal(0, noise, (n, 2))).astype(np.float32)

    found = patch_bounds.kmeans_bound(sample(3000), sample(1000), 3, iterations=20, seed=0)
    # The nearest true centre leaves the noise: mean squared error noise^2 per number.
    np.testing.assert_allclose(found, -10 * np.log10(noise**2), atol=0.3)
    assert patch_bounds.kmeans_bound(sample(3000), sample(1000), 1, 20, 0) < found - 10
