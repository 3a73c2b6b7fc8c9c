import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genie.models.vq import VectorQuantizer, first_argmax


def make_vq(codebook, *, commitment_weight=0.25, dead_code_steps=2):
    codebook = jnp.asarray(codebook, jnp.float32)
    vq = VectorQuantizer(
        codebook.shape[0],
        codebook.shape[1],
        commitment_weight=commitment_weight,
        dead_code_steps=dead_code_steps,
        rngs=nnx.Rngs(0),
    )
    vq.codebook[...] = codebook
    return vq


def test_nearest_code_is_chosen_by_cosine_distance():
    vq = make_vq([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # [0.1, 0.09] is closer in Euclidean distance to [0, 1]*0.1 scale, but its direction is
    # nearest to [1, 0] (cos 0.74 vs 0.67): inputs are normalised before the lookup.
    z = jnp.array([[2.0, 0.5], [0.1, 3.0], [-1.0, -0.2], [0.1, 0.09]])
    quantized, indices, _ = vq(z, training=False)
    np.testing.assert_array_equal(indices, [0, 1, 2, 0])
    assert indices.dtype == jnp.int32
    np.testing.assert_allclose(quantized, [[1, 0], [0, 1], [-1, 0], [1, 0]], atol=1e-6)


def test_losses_usage_and_perplexity_match_hand_computed_values():
    vq = make_vq([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], commitment_weight=0.25)
    z = jnp.array([[3.0, 4.0], [4.0, -3.0]])  # unit: [.6, .8] -> code 1, [.8, -.6] -> code 0
    _, indices, aux = vq(z, training=False)
    np.testing.assert_array_equal(indices, [1, 0])
    # ||[.6, .8] - [0, 1]||² = .36 + .04 = .4 ; ||[.8, -.6] - [1, 0]||² = .04 + .36 = .4
    np.testing.assert_allclose(aux["codebook_loss"], 0.4, rtol=1e-5)
    np.testing.assert_allclose(aux["commitment_loss"], 0.25 * 0.4, rtol=1e-5)
    np.testing.assert_array_equal(aux["usage"], [1, 1, 0])
    np.testing.assert_allclose(aux["perplexity"], 2.0, rtol=1e-5)
    assert aux["codebook_loss"].dtype == jnp.float32


def test_straight_through_gradient_reaches_the_input():
    vq = make_vq(jax.random.normal(jax.random.key(0), (8, 4)))
    z = jax.random.normal(jax.random.key(1), (5, 4))
    weights = jax.random.normal(jax.random.key(2), (5, 4))

    def downstream(z):
        quantized, _, _ = vq(z, training=False)
        return jnp.sum(quantized * weights)

    grad = jax.grad(downstream)(z)
    assert np.all(np.isfinite(grad))
    assert np.all(np.abs(grad).sum(-1) > 1e-4)  # every input row receives gradient


def test_codebook_loss_trains_codes_and_commitment_trains_inputs():
    vq = make_vq(jax.random.normal(jax.random.key(0), (8, 4)))
    z = jax.random.normal(jax.random.key(1), (5, 4))

    def codebook_loss(vq, z):
        return vq(z, training=False)[2]["codebook_loss"]

    def commitment_loss(vq, z):
        return vq(z, training=False)[2]["commitment_loss"]

    code_grad, z_grad = nnx.grad(codebook_loss, argnums=(0, 1))(vq, z)
    assert np.abs(code_grad.codebook[...]).sum() > 0 and np.abs(z_grad).sum() == 0
    code_grad, z_grad = nnx.grad(commitment_loss, argnums=(0, 1))(vq, z)
    assert np.abs(code_grad.codebook[...]).sum() == 0 and np.abs(z_grad).sum() > 0


def test_statistics_change_only_when_training():
    vq = make_vq(jnp.eye(4))
    z = jnp.array([[1.0, 0.2, 0.0, 0.0], [0.1, 1.0, 0.0, 0.0]])
    before = jax.tree.map(np.array, nnx.state(vq, nnx.Not(nnx.Param)))
    vq(z, training=False)
    after = jax.tree.map(np.array, nnx.state(vq, nnx.Not(nnx.Param)))
    jax.tree.map(np.testing.assert_array_equal, before, after)

    vq(z, training=True, key=jax.random.key(0))
    np.testing.assert_array_equal(vq.unused_steps[...], [0, 0, 1, 1])
    assert int(vq.training_calls[...]) == 1
    recent = np.asarray(vq.recent_inputs[...])
    z_unit = np.asarray(z) / np.linalg.norm(z, axis=-1, keepdims=True)
    # Every buffered row is one of this batch's normalised encoder outputs.
    assert all(np.abs(z_unit - row).max(-1).min() < 1e-6 for row in recent)


def test_dead_code_is_revived_from_recent_encoder_outputs_and_live_codes_are_untouched():
    vq = make_vq(jnp.eye(4), dead_code_steps=2)
    # Encoder outputs near (but not equal to) codes 0 and 1; codes 2 and 3 are never used.
    z = jnp.array([[1.0, 0.5, 0.0, 0.1], [0.3, 1.0, 0.2, 0.0], [1.0, -0.4, 0.0, 0.3]])
    z_unit = np.asarray(z) / np.linalg.norm(z, axis=-1, keepdims=True)
    vq(z, training=True, key=jax.random.key(0))
    assert int(vq.reset_dead_codes(jax.random.key(1))) == 0  # not dead for long enough yet
    vq(z, training=True, key=jax.random.key(2))
    np.testing.assert_array_equal(vq.unused_steps[...], [0, 0, 2, 2])

    reset = nnx.jit(lambda vq, key: vq.reset_dead_codes(key))
    assert int(reset(vq, jax.random.key(3))) == 2
    codebook = np.asarray(vq.codebook[...])
    np.testing.assert_array_equal(codebook[:2], np.eye(4)[:2])  # live codes bitwise unchanged
    np.testing.assert_array_equal(vq.unused_steps[...], [0, 0, 0, 0])
    for revived in codebook[2:]:
        unit = revived / np.linalg.norm(revived)
        assert np.abs(unit - np.eye(4)[:2]).max(-1).min() > 0.1  # not a copy of a live code
        assert np.max(z_unit @ unit) > 0.99  # near one of the recent encoder outputs
        assert np.abs(unit - np.eye(4)[2:]).max(-1).min() > 0.1  # and no longer the old code
    assert int(reset(vq, jax.random.key(4))) == 0


def test_statistics_update_is_deterministic_under_a_fixed_key():
    z = jax.random.normal(jax.random.key(0), (32, 4))
    results = []
    for _ in range(2):
        vq = make_vq(jnp.eye(4), dead_code_steps=1)
        vq(z[:, :4] * jnp.array([1.0, 1.0, 0.0, 0.0]), training=True, key=jax.random.key(7))
        vq.reset_dead_codes(jax.random.key(8))
        results.append((np.asarray(vq.recent_inputs[...]), np.asarray(vq.codebook[...])))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_wrong_code_dim_is_a_clear_error():
    vq = make_vq(jnp.eye(4))
    with pytest.raises(ValueError, match="code_dim 4"):
        vq(jnp.ones((2, 3)), training=False)


def test_first_argmax_is_argmax_with_ties_to_the_first_and_nan_in_range():
    scores = jnp.array(
        [
            [0.1, 0.9, 0.3, 0.9],  # tie: the first maximum
            [-2.0, -1.0, -3.0, -1.5],
            [5.0, 5.0, 5.0, 5.0],
            [0.0, 0.0, 0.0, 7.0],
        ]
    )
    np.testing.assert_array_equal(first_argmax(scores), [1, 1, 0, 3])
    random = jax.random.normal(jax.random.key(0), (3, 50, 17))
    np.testing.assert_array_equal(first_argmax(random), jnp.argmax(random, axis=-1))
    assert first_argmax(random).dtype == jnp.int32
    # A row with NaN still names a code that exists (the last), not one past the end.
    assert int(first_argmax(jnp.array([[0.0, jnp.nan, 1.0]]))[0]) == 2
