import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from genie.config import LAMConfig, TransformerConfig
from genie.models.lam import LatentActionModel, lam_loss

TINY = TransformerConfig(width=16, depth=1, heads=2, mlp_ratio=2.0)
CONFIG = LAMConfig(patch_size=4, num_codes=4, code_dim=8, encoder=TINY, decoder=TINY)
B, T = 2, 4


def make_lam(seed=0):
    return LatentActionModel(CONFIG, image_size=8, max_frames=T, rngs=nnx.Rngs(seed))


def make_frames(seed=0, shape=(B, T, 8, 8, 3)):
    return jax.random.randint(jax.random.key(seed), shape, 0, 256).astype(jnp.uint8)


infer_actions = nnx.jit(lambda model, frames: model.infer_actions(frames))
encode = nnx.jit(lambda model, frames: model.encode(frames))
reconstruct = nnx.jit(lambda model, frames, actions: model.reconstruct(frames, actions))


@nnx.jit
def train_step(model, optimizer, frames, key):
    (loss, metrics), grads = nnx.value_and_grad(lam_loss, has_aux=True)(model, frames, key)
    optimizer.update(model, grads)
    metrics["reset"] = model.reset_dead_codes(jax.random.fold_in(key, 1))
    return loss, metrics


def test_actions_shape_and_range():
    model = make_lam()
    assert model.num_actions == 4
    actions = infer_actions(model, make_frames())
    assert actions.shape == (B, T - 1) and actions.dtype == jnp.int32
    assert actions.min() >= 0 and actions.max() < 4
    prediction = reconstruct(model, make_frames(), actions)
    assert prediction.shape == (B, T - 1, 8, 8, 3) and prediction.dtype == jnp.float32
    out = nnx.jit(lambda model, frames: model(frames))(model, make_frames())
    np.testing.assert_array_equal(out["actions"], actions)
    np.testing.assert_allclose(out["reconstruction"], prediction, atol=1e-5)


def test_action_t_depends_only_on_frames_up_to_t_plus_1():
    model = make_lam()
    frames = make_frames()
    base = encode(model, frames)  # (B, T-1, E) continuous latents, before the argmax
    for k in range(2, T):  # change frames k.. : actions 0..k-2 have not seen them
        changed = frames.at[:, k:].set(make_frames(k, (B, T - k, 8, 8, 3)))
        latents = encode(model, changed)
        np.testing.assert_array_equal(latents[:, : k - 1], base[:, : k - 1])
        assert not np.allclose(latents[:, k - 1], base[:, k - 1])  # transition k-1 -> k sees it


def test_prediction_of_frame_t_plus_1_uses_action_t_but_not_later_actions():
    model = make_lam()
    frames = make_frames()
    actions = jnp.zeros((B, T - 1), jnp.int32)
    base = reconstruct(model, frames, actions)
    for t in range(T - 1):
        changed = reconstruct(model, frames, actions.at[:, t].set(1))
        np.testing.assert_array_equal(changed[:, :t], base[:, :t])  # frames <= t unchanged
        assert np.abs(changed[:, t] - base[:, t]).mean() > 1e-3  # frame t+1 follows action t


def test_prediction_never_sees_the_frame_it_predicts():
    model = make_lam()
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    base = reconstruct(model, frames, actions)
    for k in range(1, T):  # output k-1 predicts frame k from frames < k
        changed = reconstruct(model, frames.at[:, k:].set(255 - frames[:, k:]), actions)
        np.testing.assert_array_equal(changed[:, :k], base[:, :k])


def test_reconstruction_gradient_reaches_the_encoder_through_the_quantiser():
    model = make_lam()
    frames = make_frames()

    def reconstruction_mse(model, frames):
        prediction = model(frames, training=False)["reconstruction"]
        return jnp.mean((prediction - frames[:, 1:] / 255.0) ** 2)

    grads = nnx.jit(nnx.grad(reconstruction_mse))(model, frames)
    for name, grad in [
        ("encoder", grads.encoder.input_projection.kernel[...]),
        ("action projection", grads.action_projection.kernel[...]),
    ]:
        assert np.all(np.isfinite(grad)), name
        assert np.abs(grad).max() > 0, name
    assert np.abs(grads.vq.codebook[...]).max() == 0  # codes learn only from the codebook loss


def test_training_is_deterministic_and_reports_metrics():
    frames = make_frames()
    results = []
    for _ in range(2):
        model = make_lam(seed=1)
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        loss, metrics = train_step(model, optimizer, frames, jax.random.key(2))
        results.append((float(loss), metrics, jax.tree.map(np.array, nnx.state(model))))
    assert results[0][0] == results[1][0]
    jax.tree.map(np.testing.assert_array_equal, results[0][2], results[1][2])
    metrics = results[0][1]
    assert set(metrics) >= {"mse", "psnr", "perplexity", "code_usage_max", "action_gain"}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert 0.25 <= float(metrics["code_usage_max"]) <= 1.0
    assert int(results[0][2]["vq"]["training_calls"]) == 1  # counters update in training


def test_action_gain_is_a_diagnostic_that_never_changes_the_loss():
    """The training step skips the action gain (a second decoder pass); the loss and its
    gradient are the same either way, and the gain is the random-action MSE minus the MSE."""
    frames, key = make_frames(), jax.random.key(3)
    results = {}
    for diagnostics in (True, False):
        model = make_lam(seed=1)  # a fresh one each: the loss updates the VQ's counters

        def loss_fn(model, frames, key, diagnostics=diagnostics):
            return lam_loss(model, frames, key, diagnostics=diagnostics)

        (loss, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, frames, key)
        results[diagnostics] = (float(loss), metrics, jax.tree.map(np.asarray, grads))
    assert results[True][0] == results[False][0]
    jax.tree.map(np.testing.assert_array_equal, results[True][2], results[False][2])
    assert "action_gain" not in results[False][1]
    random_actions = jax.random.randint(jax.random.split(key)[1], (B, T - 1), 0, 4)
    target = frames[:, 1:].astype(np.float32) / 255.0
    random_prediction = np.asarray(reconstruct(make_lam(seed=1), frames, random_actions))
    random_mse = np.mean((random_prediction - target) ** 2)
    gain = float(results[True][1]["action_gain"])
    np.testing.assert_allclose(gain, random_mse - float(results[True][1]["mse"]), atol=1e-6)


@jax.jit
def toy_world_clips(key):
    """A random texture whose brightness goes up or down by 0.1 each step, at random: the past
    cannot predict the direction, so only the latent action can carry it."""
    texture_key, level_key, direction_key = jax.random.split(key, 3)
    texture = 0.2 * jax.random.uniform(texture_key, (B, 1, 8, 8, 3))
    level = jax.random.uniform(level_key, (B, 1, 1, 1, 1), minval=0.35, maxval=0.45)
    steps = jax.random.choice(direction_key, jnp.array([-0.1, 0.1]), (B, T - 1, 1, 1, 1))
    levels = level + jnp.concatenate([jnp.zeros_like(level), jnp.cumsum(steps, axis=1)], axis=1)
    return jnp.round((texture + levels) * 255).astype(jnp.uint8)


def test_learns_to_use_the_action_on_a_toy_world():
    # Fresh clips every step, so the decoder cannot memorise the directions of a fixed batch.
    model = make_lam(seed=0)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    mse, gain = [], []
    for step in range(60):
        key = jax.random.key(step)
        _, metrics = train_step(model, optimizer, toy_world_clips(key), key)
        mse.append(float(metrics["mse"]))
        gain.append(float(metrics["action_gain"]))
    # Without the direction the best guess is the last frame, MSE 0.1² = 0.01.
    assert np.mean(mse[-10:]) < 0.007, mse
    assert np.mean(gain[-10:]) > 0.005, gain


def test_bfloat16_compute_infers_actions_and_float32_predictions():
    model = LatentActionModel(
        CONFIG, image_size=8, max_frames=T, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)
    )
    frames = make_frames()
    actions = infer_actions(model, frames)
    assert actions.shape == (B, T - 1) and int(actions.min()) >= 0 and int(actions.max()) < 4
    prediction = reconstruct(model, frames, actions)
    assert prediction.dtype == jnp.float32 and np.isfinite(np.asarray(prediction)).all()


def test_input_checks():
    model = make_lam()
    with pytest.raises(ValueError, match=r"action 4 is outside the codebook of 4 latent actions"):
        model.reconstruct(make_frames(), jnp.full((B, T - 1), 4, jnp.int32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        model.infer_actions(make_frames(shape=(B, 1, 8, 8, 3)))


def test_patch_action_scale_makes_the_action_count_as_much_as_the_patch():
    frames = make_frames()
    effects = {}
    for scale in ("entry", "patch"):
        config = LAMConfig(
            patch_size=4, num_codes=4, code_dim=8, encoder=TINY, decoder=TINY, action_scale=scale
        )
        model = LatentActionModel(config, image_size=8, max_frames=T, rngs=nnx.Rngs(0))
        zeros = jnp.zeros((B, T - 1), jnp.int32)
        moved = reconstruct(model, frames, zeros.at[:, 0].set(1)) - reconstruct(
            model, frames, zeros
        )
        effects[scale] = float(jnp.abs(moved[:, 0]).mean())
    # Same parameters (same seed); a 4x4x3 patch has 48 values against 8 code entries.
    assert effects["patch"] > 1.2 * effects["entry"]


@pytest.mark.parametrize("weight", [0.0, 9.0])
def test_changed_pixel_weight_scales_the_error_only_where_the_frame_changed(weight):
    config = LAMConfig(
        patch_size=4,
        num_codes=4,
        code_dim=8,
        encoder=TINY,
        decoder=TINY,
        changed_pixel_weight=weight,
    )
    model = LatentActionModel(config, image_size=8, max_frames=T, rngs=nnx.Rngs(0))
    key = jax.random.key(0)
    static = jnp.broadcast_to(make_frames()[:, :1], (B, T, 8, 8, 3))
    flicker = jnp.where(jnp.arange(T)[None, :, None, None, None] % 2, 255, 0).astype(jnp.uint8)
    flicker = jnp.broadcast_to(flicker, (B, T, 8, 8, 3))
    for frames, factor in ((static, 1.0), (flicker, 1.0 + weight)):
        loss, metrics = lam_loss(model, frames, key)
        reconstruction = loss - metrics["codebook_loss"] - metrics["commitment_loss"]
        np.testing.assert_allclose(reconstruction, factor * metrics["mse"], rtol=1e-5)


def make_variant(seed=0, **options):
    """The test LAM (CONFIG) with some LAMConfig fields changed."""
    config = dataclasses.replace(CONFIG, **options)
    return LatentActionModel(config, image_size=8, max_frames=T, rngs=nnx.Rngs(seed))


def test_lookahead_encoder_reads_transition_t_at_frame_t_plus_1_plus_l():
    model = make_variant(encoder_lookahead=1)
    frames = make_frames()
    base = encode(model, frames)
    # Latent t is read at frame min(t + 2, T - 1): it sees frames[:, :t+3] and nothing later.
    for k in range(2, T):
        changed = frames.at[:, k:].set(make_frames(k, (B, T - k, 8, 8, 3)))
        latents = encode(model, changed)
        unaffected = max(k - 2, 0)
        np.testing.assert_array_equal(latents[:, :unaffected], base[:, :unaffected])
        assert not np.allclose(latents[:, unaffected], base[:, unaffected])


def test_history_free_decoder_reads_only_the_last_frame_and_its_action():
    model = make_variant(decoder_context="last")
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    base = reconstruct(model, frames, actions)
    # Changing frame 0 or action 0 changes only the prediction of frame 1.
    changed = reconstruct(model, frames.at[:, 0].set(255 - frames[:, 0]), actions)
    np.testing.assert_array_equal(changed[:, 1:], base[:, 1:])
    assert np.abs(changed[:, 0] - base[:, 0]).max() > 0
    changed = reconstruct(model, frames, actions.at[:, 0].set(3 - actions[:, 0]))
    np.testing.assert_array_equal(changed[:, 1:], base[:, 1:])
    assert np.abs(changed[:, 0] - base[:, 0]).max() > 0
    # Same prediction for a transition wherever it sits in the clip: no temporal position.
    shifted = reconstruct(model, jnp.roll(frames, 1, axis=1), jnp.roll(actions, 1, axis=1))
    np.testing.assert_allclose(shifted[:, 2], base[:, 1], atol=1e-6)


def test_every_block_injection_adds_the_action_before_each_decoder_block():
    two_blocks = TransformerConfig(width=16, depth=2, heads=2, mlp_ratio=2.0)
    model = make_variant(decoder=two_blocks, action_injection="every_block")
    assert len(model.decoder.condition_projections) == 2
    frames = make_frames()
    zeros = jnp.zeros((B, T - 1), jnp.int32)
    base = reconstruct(model, frames, zeros)
    # Silencing the per-block projections must change what an action does.
    graphdef, state = nnx.split(model)
    silent = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))
    for projection in silent.decoder.condition_projections:
        projection.kernel[...] = jnp.zeros_like(projection.kernel[...])
    effect = reconstruct(model, frames, zeros.at[:, 1].set(2))[:, 1] - base[:, 1]
    silent_base = reconstruct(silent, frames, zeros)
    silent_effect = reconstruct(silent, frames, zeros.at[:, 1].set(2))[:, 1] - silent_base[:, 1]
    assert not np.allclose(effect, silent_effect)
    # Causality holds with per-block injection: action 1 leaves the prediction of frame 1 alone.
    np.testing.assert_array_equal(
        reconstruct(model, frames, zeros.at[:, 1].set(2))[:, 0], base[:, 0]
    )


def test_center_weights_match_a_hand_computed_map():
    from genie.models.lam import center_weights

    weights = center_weights(8, 2, 4.0)[..., 0]
    expected = np.ones((8, 8), np.float32)
    expected[3:5, 3:5] = 5.0
    np.testing.assert_array_equal(weights, expected)
    # The loss on a uniform error is the mean of the weight map times that error.
    model = make_variant(center_weight=4.0, center_size=4)
    frames = make_frames()
    loss, metrics = lam_loss(model, frames, jax.random.key(0))
    reconstruction = loss - metrics["codebook_loss"] - metrics["commitment_loss"]
    # The weighted error is at least the plain one (all weights >= 1) and at most 5x it.
    assert float(metrics["mse"]) < float(reconstruction) < 5.0 * float(metrics["mse"])


def test_continuous_bottleneck_passes_the_unquantised_latent_to_the_decoder():
    model = make_variant(bottleneck="continuous")
    frames = make_frames()
    out = nnx.jit(lambda model, frames: model(frames))(model, frames)
    from genie.models.vq import l2_normalize

    latent = l2_normalize(encode(model, frames))
    direct = nnx.jit(lambda model, frames, latent: model.decode(frames, latent))(
        model, frames, latent
    )
    np.testing.assert_allclose(out["reconstruction"], direct, atol=1e-6)
    quantised = reconstruct(model, frames, out["actions"])
    assert not np.allclose(out["reconstruction"], quantised)  # not the code's prediction


def test_encoder_differences_see_motion_and_stay_causal():
    model = make_variant(encoder_differences=True)
    assert model.encoder.input_projection.in_features == 2 * 4 * 4 * 3
    frames = make_frames()
    base = encode(model, frames)
    changed = encode(model, frames.at[:, 2:].set(make_frames(2, (B, T - 2, 8, 8, 3))))
    np.testing.assert_array_equal(changed[:, :1], base[:, :1])


def test_resample_moves_each_patch_by_its_own_kernel():
    from genie.models.lam import resample

    frames = jnp.arange(1 * 1 * 8 * 8 * 3, dtype=jnp.float32).reshape(1, 1, 8, 8, 3)
    kernels = np.zeros((1, 1, 4, 9), np.float32)
    kernels[:, :, 0, 3] = 1.0  # top-left patch: offset (0, -1), content moves one pixel right
    kernels[:, :, 1:, 4] = 1.0  # the other three patches: the centre tap, unchanged
    out = np.asarray(resample(frames, jnp.asarray(kernels), 4))
    expected = np.asarray(frames).copy()
    expected[:, :, :4, 1:4] = np.asarray(frames)[:, :, :4, 0:3]  # reads its left neighbour
    # The leftmost column reads past the edge: the edge pixel itself.
    np.testing.assert_array_equal(out, expected)
    # A kernel split between two taps blends them (a sub-pixel shift).
    half = np.zeros((1, 1, 4, 9), np.float32)
    half[..., 4] = half[..., 5] = 0.5
    blended = np.asarray(resample(frames, jnp.asarray(half), 4))
    right = np.concatenate([np.asarray(frames)[:, :, :, 1:], np.asarray(frames)[:, :, :, -1:]], 3)
    np.testing.assert_allclose(blended, 0.5 * (np.asarray(frames) + right))


def test_kernel_decoder_starts_near_repeating_the_last_frame_and_stays_causal():
    model = make_variant(decoder_output="kernels", kernel_size=3)
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    prediction = reconstruct(model, frames, actions)
    last = frames[:, :-1] / 255.0
    # Within the initial change's noise (about 0.08) of x_t; an even 3x3 blur of these random
    # frames would be about 0.2 away.
    assert float(jnp.abs(prediction - last).mean()) < 0.1
    for k in range(1, T):  # output k-1 predicts frame k from frames < k
        changed = reconstruct(model, frames.at[:, k:].set(255 - frames[:, k:]), actions)
        np.testing.assert_array_equal(changed[:, :k], prediction[:, :k])
    with pytest.raises(ValueError, match="odd"):
        make_variant(decoder_output="kernels", kernel_size=4)


def test_motion_costs_find_the_shift_between_frames():
    from genie.models.lam import motion_costs

    texture = jax.random.uniform(jax.random.key(0), (1, 1, 16, 16, 3))
    moved = jnp.roll(texture, 1, axis=3)  # content one pixel to the right
    costs = np.asarray(motion_costs(jnp.concatenate([texture, moved], 1), 8, 3))
    assert costs.shape == (1, 2, 4, 9)
    np.testing.assert_array_equal(costs[:, 0], 0.0)  # the first frame has no predecessor
    # x_1[y, x] = x_0[y, x - 1]: offset (0, -1), tap 3 of the row-major 3x3, is the cheapest
    # wherever the roll did not wrap around (the patches away from the left edge).
    assert (costs[0, 1, [1, 3]].argmin(-1) == 3).all()
    np.testing.assert_allclose(costs[0, 1].mean(-1), 0.0, atol=1e-5)  # standardised
    np.testing.assert_allclose(costs[0, 1].std(-1), 1.0, atol=1e-3)


def test_motion_inputs_keep_the_encoder_causal():
    model = make_variant(motion_size=3)
    frames = make_frames()
    base = encode(model, frames)
    for k in range(2, T):
        changed = encode(model, frames.at[:, k:].set(make_frames(k, (B, T - k, 8, 8, 3))))
        np.testing.assert_array_equal(changed[:, : k - 1], base[:, : k - 1])


def test_relative_reconstruction_is_the_error_in_units_of_repeating_the_last_frame():
    model = make_variant(reconstruction_loss="relative")
    frames = make_frames()
    loss, metrics = lam_loss(model, frames, jax.random.key(0))
    reconstruction = loss - metrics["codebook_loss"] - metrics["commitment_loss"]
    unit = np.asarray(frames, np.float64) / 255.0
    repeat_error = np.mean((unit[:, 1:] - unit[:, :-1]) ** 2)
    np.testing.assert_allclose(reconstruction, float(metrics["mse"]) / repeat_error, rtol=1e-4)


def test_capped_relative_reconstruction_puts_big_changes_in_their_own_units():
    frames = make_frames()
    frames = frames.at[0, 2].set(255 - frames[0, 1])  # transition 1 of clip 0 changes most
    key = jax.random.key(0)
    loss, metrics = lam_loss(make_variant(reconstruction_loss="relative_capped"), frames, key)
    reconstruction = loss - metrics["codebook_loss"] - metrics["commitment_loss"]
    # The same model's prediction, recomputed: lam_loss draws its VQ key first.
    twin = make_variant(reconstruction_loss="relative_capped")
    predicted = twin(frames, training=True, key=jax.random.split(key)[0])["reconstruction"]
    unit = np.asarray(frames, np.float64) / 255.0
    error = np.mean((np.asarray(predicted, np.float64) - unit[:, 1:]) ** 2, axis=(2, 3, 4))
    repeat = np.mean((unit[:, 1:] - unit[:, :-1]) ** 2, axis=(2, 3, 4))  # (B, T-1)
    expected = np.mean(error / np.maximum(repeat, repeat.mean()))
    np.testing.assert_allclose(reconstruction, expected, rtol=1e-4)
    # The big transition counts in its own units, not the batch's: not what "relative" gives.
    assert repeat[0, 1] > 1.5 * repeat.mean()
    assert abs(expected - error.mean() / repeat.mean()) > 0.01 * expected


def test_decoder_motion_reads_the_motion_so_far_and_never_the_frame_it_predicts():
    model = make_variant(decoder_context="last", motion_size=3, decoder_motion=True)
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    base = reconstruct(model, frames, actions)
    # Output t predicts x_{t+1} from x_t, a_t and the motion x_{t-1} -> x_t: a new frame 1
    # leaves output 0 (x_0 alone) as it was, and reaches output 1 (x_1) and output 2 (the
    # motion x_1 -> x_2), which a decoder without the motion input would not read.
    changed = reconstruct(model, frames.at[:, 1].set(255 - frames[:, 1]), actions)
    np.testing.assert_array_equal(changed[:, 0], base[:, 0])
    assert np.abs(changed[:, 1] - base[:, 1]).max() > 0
    assert np.abs(changed[:, 2] - base[:, 2]).max() > 0
    plain = make_variant(decoder_context="last", motion_size=3)
    plain_changed = reconstruct(plain, frames.at[:, 1].set(255 - frames[:, 1]), actions)
    np.testing.assert_array_equal(plain_changed[:, 2], reconstruct(plain, frames, actions)[:, 2])
    for k in range(1, T):  # output k-1 predicts frame k from frames < k only
        later = reconstruct(model, frames.at[:, k:].set(255 - frames[:, k:]), actions)
        np.testing.assert_array_equal(later[:, :k], base[:, :k])
    with pytest.raises(ValueError, match="motion_size"):
        make_variant(decoder_motion=True)


def test_vertical_decoder_motion_reads_each_rows_best_cost_and_not_the_horizontal_shift():
    """decoder_motion_axes="vertical": the decoder reads, per vertical offset, the lowest cost
    over the horizontal ones, so costs mirrored left-right (a scroll the other way) predict the
    same frame, which a decoder reading the whole volume tells apart; raising a row's costs
    (a different vertical motion) still reaches the prediction."""
    options = dict(decoder_context="last", motion_size=3, decoder_motion=True)
    vertical = make_variant(decoder_motion_axes="vertical", **options)
    both = make_variant(**options)
    frames = make_frames()
    decode = nnx.jit(lambda m, f, a, c: m.decode(f, m.vq.lookup(a), c))
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    costs = jax.random.normal(jax.random.key(1), (*frames.shape[:2], vertical.num_patches, 9))
    rows = costs.reshape(*costs.shape[:-1], 3, 3)
    mirrored = rows[..., ::-1].reshape(costs.shape)  # dx -> -dx within each dy
    base = decode(vertical, frames, actions, costs)
    np.testing.assert_allclose(decode(vertical, frames, actions, mirrored), base, atol=1e-6)
    assert (
        np.abs(decode(both, frames, actions, mirrored) - decode(both, frames, actions, costs)).max()
        > 1e-4
    )
    risen = rows.at[..., 0, :].add(1.0).reshape(costs.shape)  # row dy = -1 fits worse
    assert np.abs(decode(vertical, frames, actions, risen) - base).max() > 1e-4
    assert (
        vertical.decoder.input_projection.kernel.shape[0]
        == both.decoder.input_projection.kernel.shape[0] - 6
    )


def test_resample_and_motion_costs_equal_their_definitions_by_hand():
    """The fused per-offset sums against plain loops over pixels and offsets (NumPy)."""
    from genie.models.lam import motion_costs, resample

    rng = np.random.default_rng(0)
    frames = rng.uniform(-1, 1, (2, 3, 8, 8, 3)).astype(np.float32)
    kernels = rng.dirichlet(np.ones(9), (2, 3, 4)).astype(np.float32)  # 3x3, 2x2 patches of 4
    padded = np.pad(frames, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    offsets = [(dy, dx) for dy in range(3) for dx in range(3)]
    expected = np.zeros_like(frames)
    for y in range(8):
        for x in range(8):
            patch = (y // 4) * 2 + x // 4
            for k, (dy, dx) in enumerate(offsets):
                expected[:, :, y, x] += kernels[:, :, patch, k, None] * padded[:, :, y + dy, x + dx]
    out = resample(jnp.asarray(frames), jnp.asarray(kernels), 4)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # d(sum out * g)/d kernel[patch, k] = sum over the patch of g * the k-th shifted copy.
    g = rng.normal(size=frames.shape).astype(np.float32)
    grad = jax.grad(lambda k: jnp.sum(resample(jnp.asarray(frames), k, 4) * g))(
        jnp.asarray(kernels)
    )
    expected_grad = np.zeros_like(kernels)
    for k, (dy, dx) in enumerate(offsets):
        product = (g * padded[:, :, dy : dy + 8, dx : dx + 8]).sum(-1)
        expected_grad[..., k] = product.reshape(2, 3, 2, 4, 2, 4).sum((3, 5)).reshape(2, 3, 4)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-5)

    costs = np.asarray(motion_costs(jnp.asarray(frames), 4, 3))
    error = np.zeros((2, 2, 4, 9))
    for k, (dy, dx) in enumerate(offsets):
        squared = (padded[:, :-1, dy : dy + 8, dx : dx + 8] - frames[:, 1:]) ** 2
        error[..., k] = squared.mean(-1).reshape(2, 2, 2, 4, 2, 4).mean((3, 5)).reshape(2, 2, 4)
    centred = error - error.mean(-1, keepdims=True)
    standardised = centred / (np.sqrt((centred**2).mean(-1, keepdims=True)) + 1e-6)
    np.testing.assert_allclose(costs[:, 1:], standardised, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(costs[:, 0], 0.0)


def test_training_forward_shares_one_cost_volume_with_the_decoder():
    """`__call__` computes the clip's motion once; the decoder's slice of it must be what the
    decoder computes on its own from x_0..x_{T-2}, or the prediction would read x_{T-1}."""
    model = make_variant(decoder_context="last", motion_size=3, decoder_motion=True)
    frames = make_frames()
    out = nnx.jit(lambda m, f: m(f))(model, frames)
    alone = reconstruct(model, frames, out["actions"])
    np.testing.assert_allclose(out["reconstruction"], alone, rtol=1e-6, atol=1e-6)
    changed = frames.at[:, -1].set(255 - frames[:, -1])
    moved = nnx.jit(lambda m, f, a: m.decode(f, m.vq.lookup(a), m.motion(f)))(
        model, changed, out["actions"]
    )
    np.testing.assert_allclose(moved, alone, rtol=1e-6, atol=1e-6)


def test_hidden_centre_decoder_never_reads_the_centre_of_x_t_but_the_encoder_does():
    """decoder_hide_center: the central center_size square of x_t (where a camera-centred game
    draws the agent) is invisible to the decoder, in its input and in what its kernels move,
    so new pixels there change no prediction; the same change moves a decoder that sees it,
    and the encoder (which names the action) still reads it."""
    hidden = make_variant(
        decoder_context="last", decoder_output="kernels", decoder_hide_center=True, center_size=4
    )
    seeing = make_variant(decoder_context="last", decoder_output="kernels", center_size=4)
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    centre = frames.at[:, :, 2:6, 2:6].set(255 - frames[:, :, 2:6, 2:6])
    np.testing.assert_array_equal(
        reconstruct(hidden, centre, actions), reconstruct(hidden, frames, actions)
    )
    assert (
        np.abs(reconstruct(seeing, centre, actions) - reconstruct(seeing, frames, actions)).max()
        > 0
    )
    outside = frames.at[:, :, 0, 0].set(255 - frames[:, :, 0, 0])
    assert (
        np.abs(reconstruct(hidden, outside, actions) - reconstruct(hidden, frames, actions)).max()
        > 0
    )
    assert np.abs(encode(hidden, centre) - encode(hidden, frames)).max() > 0
    with pytest.raises(ValueError, match="center_size 9"):
        make_variant(decoder_hide_center=True, center_size=9)


def test_mirror_taps_draw_x_t_mirrored_left_right_and_start_near_repeating_it():
    """decoder_mirror: a kernel whose weight sits on the mirrored frame's centre tap draws x_t
    flipped left-right (the width axis, not the height), a patch at a time; at initialisation the
    mirrored taps hold little weight, so the decoder still starts near repeating x_t."""
    options = dict(decoder_context="last", decoder_output="kernels", kernel_size=3)
    mirror = make_variant(decoder_mirror=True, **options)
    plain = make_variant(**options)
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    last = np.asarray(frames[:, :-1]) / 255.0
    start = np.asarray(reconstruct(mirror, frames, actions))
    assert np.abs(start - last).mean() < 0.1
    assert (
        np.abs(start - last).mean()
        < 1.5 * np.abs(reconstruct(plain, frames, actions) - last).mean()
    )
    # Outputs: 4*4*3 pixel changes, then 9 taps on x_t, then 9 on the mirror (centre: index 4).
    projection = mirror.decoder.output_projection
    projection.kernel[...] = jnp.zeros_like(projection.kernel[...])
    bias = np.full(projection.bias[...].shape, -30.0, np.float32)
    bias[:48] = 0.0
    bias[48 + 9 + 4] = 30.0
    projection.bias[...] = jnp.asarray(bias)
    np.testing.assert_allclose(
        np.asarray(reconstruct(mirror, frames, actions)), last[:, :, :, ::-1], atol=1e-6
    )
    with pytest.raises(ValueError, match="decoder_mirror"):
        make_variant(decoder_mirror=True)


def test_held_action_term_scores_each_action_on_the_next_transition_too():
    """held_action_weight w: the loss adds w times the relative error of predicting x_{t+2} from
    x_{t+1} with a_t (the actions moved one step later), computed here by hand from the
    decoder's predictions; everything else in the loss is unchanged."""
    options = dict(decoder_context="last", decoder_output="kernels", kernel_size=3, motion_size=3)
    options.update(decoder_motion=True, reconstruction_loss="relative")
    plain = make_variant(**options)
    held = make_variant(held_action_weight=0.5, **options)
    frames = make_frames()
    key = jax.random.key(0)
    plain_loss, plain_metrics = lam_loss(plain, frames, key)
    held_loss, held_metrics = lam_loss(held, frames, key)
    np.testing.assert_allclose(held_metrics["mse"], plain_metrics["mse"])
    actions = infer_actions(held, frames)
    motion = held.motion(frames)
    prediction = np.asarray(
        held.decode(frames[:, 1:], held.vq.lookup(actions[:, :-1]), motion[:, 1:])
    )
    unit = np.asarray(frames, np.float64) / 255.0
    by_hand = np.mean((prediction - unit[:, 2:]) ** 2) / np.mean((unit[:, 2:] - unit[:, 1:-1]) ** 2)
    np.testing.assert_allclose(float(held_loss - plain_loss), 0.5 * by_hand, rtol=1e-4)
    # That by-hand prediction gave the first held step x_1's real motion so far (x_0 -> x_1),
    # and that motion matters, so the equality above fails if the loss read zeros there.
    changed = frames.at[:, 0].set(255 - frames[:, 0])
    moved = held.decode(
        changed[:, 1:], held.vq.lookup(actions[:, :-1]), held.motion(changed)[:, 1:]
    )
    assert np.abs(np.asarray(moved) - prediction)[:, 0].max() > 0
    with pytest.raises(ValueError, match="held_action_weight"):
        LatentActionModel(
            dataclasses.replace(CONFIG, held_action_weight=1.0),
            image_size=8,
            max_frames=2,
            rngs=nnx.Rngs(0),
        )


ROLLOUT = dict(decoder_context="rollout", decoder_output="kernels", kernel_size=3, motion_size=3)


def test_rollout_decoder_reads_only_the_seen_frames_and_carries_the_codes_forward():
    """decoder_context "rollout" with one seen frame: every prediction depends on x_0 and the
    actions so far, never on a later frame; the prediction of x_{t+1} is the decoder's kernel
    applied to its own prediction of x_t, so an early action reaches every later frame."""
    model = make_variant(rollout_seen_frames=1, decoder_motion=True, **ROLLOUT)
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    base = reconstruct(model, frames, actions)
    changed = reconstruct(model, frames.at[:, 1:].set(255 - frames[:, 1:]), actions)
    np.testing.assert_array_equal(changed, base)
    for t in range(T - 1):
        other = reconstruct(model, frames, actions.at[:, t].set((actions[:, t] + 1) % 4))
        np.testing.assert_array_equal(other[:, :t], base[:, :t])  # before the change
        for later in range(t, T - 1):  # the change reaches every later prediction
            assert np.abs(other[:, later] - base[:, later]).max() > 1e-4
    model_two = make_variant(rollout_seen_frames=2, **ROLLOUT)
    two = reconstruct(model_two, frames, actions)
    # With two seen frames, output 1 reads x_1 itself: a new x_1 changes it, a new x_2 does not.
    new_x1 = reconstruct(model_two, frames.at[:, 1].set(255 - frames[:, 1]), actions)
    assert np.abs(new_x1[:, 1] - two[:, 1]).max() > 0
    new_x2 = reconstruct(model_two, frames.at[:, 2:].set(255 - frames[:, 2:]), actions)
    np.testing.assert_array_equal(new_x2, two)


def test_rollout_steps_move_the_previous_prediction_not_the_true_frame():
    """Output t >= S moves clip(output t-1), not x_t: the frames each step's kernels are
    applied to, recorded, are x_0 and then the previous predictions."""
    model = make_variant(rollout_seen_frames=1, **ROLLOUT)
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    rolled = np.asarray(reconstruct(model, frames, actions))
    quantized = model.vq.lookup(actions)
    captured = {}
    original = model._move

    def recording(context, delta):
        captured.setdefault("calls", []).append((np.asarray(context), np.asarray(delta)))
        return original(context, delta)

    model._move = recording
    model.decode(frames, quantized)
    model._move = original
    calls = captured["calls"]
    assert len(calls) == T - 1
    np.testing.assert_allclose(calls[0][0][:, 0], np.asarray(frames[:, 0], np.float32) / 255.0)
    for t in range(1, T - 1):
        np.testing.assert_allclose(calls[t][0][:, 0], np.clip(rolled[:, t - 1], 0, 1), atol=1e-6)


def test_rollout_loss_puts_each_step_in_units_of_repeating_the_last_seen_frame():
    model = make_variant(rollout_seen_frames=1, reconstruction_loss="relative", **ROLLOUT)
    frames = make_frames()
    key = jax.random.key(0)
    loss, metrics = lam_loss(model, frames, key)
    reconstruction = loss - metrics["codebook_loss"] - metrics["commitment_loss"]
    twin = make_variant(rollout_seen_frames=1, reconstruction_loss="relative", **ROLLOUT)
    predicted = twin(frames, training=True, key=jax.random.split(key)[0])["reconstruction"]
    unit = np.asarray(frames, np.float64) / 255.0
    error = np.mean((np.asarray(predicted, np.float64) - unit[:, 1:]) ** 2, axis=(0, 2, 3, 4))
    repeat = np.mean((unit[:, 1:] - unit[:, :1]) ** 2, axis=(0, 2, 3, 4))  # x_0, seen last
    np.testing.assert_allclose(reconstruction, np.mean(error / repeat), rtol=1e-4)
    with pytest.raises(ValueError, match="rollout_seen_frames"):
        make_variant(rollout_seen_frames=0, **ROLLOUT)
    with pytest.raises(ValueError, match="held_action_weight"):
        make_variant(held_action_weight=1.0, **ROLLOUT)


def test_screen_motion_tells_the_decoder_the_mean_cost_volume_of_the_step_it_predicts():
    """decoder_screen_motion: output t reads x_{t+1} only through the S x S costs of x_t ->
    x_{t+1} averaged over the patches: a new x_{t+1} with the same mean costs leaves output t
    bitwise as it was, while a new x_{t+1} reaches output t (without the option it would not)."""
    options = dict(decoder_context="last", decoder_output="kernels", kernel_size=3, motion_size=3)
    model = make_variant(decoder_screen_motion=True, **options)
    frames = make_frames()
    actions = jnp.array([[0, 1, 2], [3, 2, 1]], jnp.int32)
    base = reconstruct(model, frames, actions)
    new_x2 = frames.at[:, 2].set(255 - frames[:, 2])
    changed = reconstruct(model, new_x2, actions)
    np.testing.assert_array_equal(changed[:, 0], base[:, 0])  # x_0 -> x_1 did not change
    assert np.abs(changed[:, 1] - base[:, 1]).max() > 0  # reads the costs of x_1 -> x_2
    plain = make_variant(**options)
    np.testing.assert_array_equal(
        reconstruct(plain, new_x2, actions)[:, 1], reconstruct(plain, frames, actions)[:, 1]
    )
    # Only the mean over patches counts: frame 2's costs with the patches reversed give the
    # same output 1, its costs at other offsets do not.
    motion = model.motion(frames)
    quantized = model.vq.lookup(actions)
    reversed_patches = motion.at[:, 2].set(motion[:, 2, ::-1])
    np.testing.assert_allclose(
        model.decode(frames, quantized, reversed_patches), base, rtol=1e-5, atol=1e-5
    )
    other_offsets = motion.at[:, 2].set(jnp.roll(motion[:, 2], 1, axis=-1))
    assert np.abs(model.decode(frames, quantized, other_offsets)[:, 1] - base[:, 1]).max() > 1e-4
    with pytest.raises(ValueError, match="decoder_screen_motion"):
        make_variant(decoder_screen_motion=True)
