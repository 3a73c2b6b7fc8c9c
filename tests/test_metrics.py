import math

import numpy as np
import pytest

from genie import metrics


def _constant_frames(shape, value):
    return np.full(shape, value, np.float64)


def test_psnr_per_frame_of_known_mse():
    target = np.zeros((2, 2, 2, 3))
    prediction = target.copy()
    prediction[0] += 0.1  # MSE 0.01 -> 20 dB
    prediction[1, 0, 0, :] = 0.2  # MSE 0.04 / 4 = 0.01 -> 20 dB as well
    np.testing.assert_allclose(metrics.psnr_per_frame(target, prediction), [20.0, 20.0], atol=1e-4)
    assert metrics.psnr_per_frame(target[0], target[0]) == np.inf


def test_uint8_frames_are_scaled_to_unit_range():
    target = np.zeros((2, 2, 3), np.uint8)
    prediction = np.full((2, 2, 3), 51, np.uint8)  # 51 / 255 = 0.2 -> MSE 0.04
    assert metrics.mse(target, prediction) == pytest.approx(0.04)
    assert metrics.pooled_psnr(target, prediction) == pytest.approx(-10 * math.log10(0.04))


def test_float_frames_outside_unit_range_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.mse(np.zeros((2, 2, 3)), np.full((2, 2, 3), 255.0))


def test_pooled_psnr_averages_mse_before_the_log():
    target = np.zeros((2, 4, 4, 3))
    prediction = np.stack([_constant_frames((4, 4, 3), 0.1), _constant_frames((4, 4, 3), 0.0)])
    # Frame MSEs 0.01 and 0: per-frame PSNRs are 20 dB and inf, pooled is -10 log10(0.005).
    assert metrics.pooled_psnr(target, prediction) == pytest.approx(23.0103, abs=1e-4)
    per_frame = metrics.psnr_per_frame(target, prediction)
    assert per_frame[0] == pytest.approx(20.0, abs=1e-4) and per_frame[1] == np.inf


def test_pooled_psnr_is_below_mean_of_per_frame_psnr():
    target = np.zeros((2, 4, 4, 3))
    prediction = np.stack([_constant_frames((4, 4, 3), 0.1), _constant_frames((4, 4, 3), 0.01)])
    # Per-frame 20 dB and 40 dB average to 30 dB; pooled MSE (0.01 + 0.0001) / 2 gives 22.97 dB.
    assert np.mean(metrics.psnr_per_frame(target, prediction)) == pytest.approx(30.0, abs=1e-3)
    assert metrics.pooled_psnr(target, prediction) == pytest.approx(
        -10 * math.log10(0.00505), abs=1e-9
    )


def test_pooled_psnr_axis_pools_only_the_named_frame_axes():
    target = np.zeros((2, 3, 2, 2, 3))
    prediction = np.zeros_like(target)
    prediction[0, :] = 0.1  # clip 0: MSE 0.01 at every step; clip 1: perfect
    np.testing.assert_allclose(metrics.mse(target, prediction, axis=0), [0.005] * 3)
    np.testing.assert_allclose(metrics.mse(target, prediction, axis=1), [0.01, 0.0])
    assert metrics.mse(target, prediction, axis=()).shape == (2, 3)
    np.testing.assert_allclose(
        metrics.pooled_psnr(target, prediction, axis=-1), [20.0, np.inf], atol=1e-9
    )
    with pytest.raises(ValueError, match="axis 2"):
        metrics.mse(target, prediction, axis=2)


def test_psnr_by_horizon_pools_over_clips():
    target = np.zeros((2, 2, 2, 2, 3))
    prediction = np.zeros_like(target)
    prediction[0, 0] = 0.1  # step 0: MSEs 0.01 and 0 -> mean 0.005
    prediction[:, 1] = 0.1  # step 1: MSEs 0.01 and 0.01
    np.testing.assert_allclose(
        metrics.psnr_by_horizon(target, prediction), [-10 * math.log10(0.005), 20.0]
    )


def test_ssim_is_one_for_identical_frames_and_lower_otherwise():
    rng = np.random.default_rng(0)
    target = rng.random((2, 2, 16, 16, 3))
    noisy = np.clip(target + 0.2 * rng.standard_normal(target.shape), 0, 1)
    np.testing.assert_allclose(metrics.ssim_by_horizon(target, target), [1.0, 1.0], atol=1e-5)
    per_frame = metrics.ssim_per_frame(target, noisy)
    assert per_frame.shape == (2, 2) and np.all(per_frame < 0.9)
    np.testing.assert_allclose(metrics.ssim_by_horizon(target, noisy), per_frame.mean(0))


def test_delta_psnr_of_identical_predictions_is_exactly_zero():
    rng = np.random.default_rng(0)
    target = rng.random((3, 4, 4, 4, 3))
    prediction = rng.random(target.shape)
    np.testing.assert_array_equal(metrics.delta_psnr(target, prediction, prediction), 0.0)
    # Perfect predictions on both sides: inf - inf would be nan, the difference is still 0.
    np.testing.assert_array_equal(metrics.delta_psnr(target, target, target), 0.0)


def test_delta_psnr_is_difference_of_pooled_psnr():
    target = np.zeros((2, 2, 2, 2, 3))
    inferred = np.full_like(target, 0.01)  # 40 dB
    random = np.full_like(target, 0.1)  # 20 dB
    np.testing.assert_allclose(metrics.delta_psnr(target, inferred, random), [20.0, 20.0])
    np.testing.assert_allclose(metrics.delta_psnr(target, random, inferred), [-20.0, -20.0])


def test_repeat_last_frame_baseline():
    # One clip whose frame t is filled with 0.1 * t: x_{c+h} - x_{c-1} = 0.1 * (h + 1).
    clips = np.stack([_constant_frames((2, 2, 3), 0.1 * t) for t in range(6)])[None]
    context, horizon = 2, 3
    expected = [-10 * math.log10((0.1 * (h + 1)) ** 2) for h in range(horizon)]
    np.testing.assert_allclose(
        metrics.repeat_last_frame_baseline(clips, context, horizon), expected
    )
    targets, predictions = metrics.repeat_last_frame_rollout(clips, context, horizon)
    np.testing.assert_array_equal(targets, clips[:, 2:5])
    np.testing.assert_array_equal(predictions[:, 2], clips[:, 1])
    with pytest.raises(ValueError, match="do not fit"):
        metrics.repeat_last_frame_baseline(clips, context=4, horizon=3)


def test_code_usage():
    usage = metrics.code_usage(np.array([[0, 1], [2, 3]]), num_codes=4)
    np.testing.assert_array_equal(usage.counts, [1, 1, 1, 1])
    np.testing.assert_allclose(usage.fractions, [0.25] * 4)
    assert usage.perplexity == pytest.approx(4.0)

    skewed = metrics.code_usage(np.array([0, 0, 0, 2]), num_codes=5)
    np.testing.assert_array_equal(skewed.counts, [3, 0, 1, 0, 0])
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert skewed.perplexity == pytest.approx(math.exp(entropy))
    assert metrics.code_usage(np.zeros(7, np.int32), 3).perplexity == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        metrics.code_usage(np.array([4]), num_codes=4)


def test_used_codes_keep_codes_of_at_least_the_share():
    # 200 transitions: code 3 has 0.5% (out), code 4 exactly 1% (in), code 5 none.
    codes = np.repeat(np.arange(5), [147, 30, 20, 1, 2])
    np.random.default_rng(0).shuffle(codes)
    used = metrics.used_codes(codes.reshape(40, 5), num_codes=6, min_share=0.01)
    assert used.tolist() == [0, 1, 2, 4] and used.dtype == np.int32
    assert metrics.used_codes(codes, 6, min_share=0.12).tolist() == [0, 1]  # code 2: 10%
    # 200 codes used once each (0.5%): none reaches the share, the most used one is kept.
    assert metrics.used_codes(np.arange(200), 200, min_share=0.01).tolist() == [0]


def _classes(**changes) -> dict:
    metadata = {
        "classes": {"names": ["still", "up", "down"], "of_action": [0, 1, 2, 0]},
        "groups": {"moving": {"names": ["no", "yes"], "of_class": [0, 1, 1]}},
        "keys": {"up": "up", "none": "still"},
    }
    return {**metadata, **changes}


def test_action_classes_read_from_metadata_classify_and_group():
    classes = metrics.ActionClasses.from_metadata(_classes())
    assert classes.names == ("still", "up", "down")
    assert classes.classify(np.array([[3, 2], [1, 0]])).tolist() == [[0, 2], [1, 0]]
    assert classes.group("moving", np.array([0, 1, 2])).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="0..3"):
        classes.classify(np.array([4]))  # no such true action


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"classes": {"names": ["a"], "of_action": [0, 1]}}, "of_action"),
        ({"groups": {"g": {"names": ["x"], "of_class": [0, 0]}}}, "group 'g'"),
        ({"keys": {"up": "jump"}}, "unknown classes"),
        ({"classes": {"of_action": [0]}}, "malformed"),
    ],
)
def test_malformed_action_metadata_is_an_error_naming_the_dataset(changes, message):
    with pytest.raises(ValueError, match=message) as error:
        metrics.ActionClasses.from_metadata(_classes(**changes), source="dataset 'x'")
    assert "dataset 'x'" in str(error.value)


def test_confusion_matrix_counts():
    codes = np.array([0, 0, 1, 2, 2, 2])
    actions = np.array([1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(
        metrics.confusion_matrix(codes, actions, num_codes=4, num_actions=2),
        [[0, 2], [1, 0], [2, 1], [0, 0]],
    )


def test_normalized_mutual_information():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert metrics.normalized_mutual_information(labels, labels) == pytest.approx(1.0)
    # A relabelling carries the same information.
    assert metrics.normalized_mutual_information(labels, 5 - labels) == pytest.approx(1.0)
    # A product distribution: exactly independent.
    codes, actions = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)
    assert metrics.normalized_mutual_information(codes, actions) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    independent = metrics.normalized_mutual_information(
        rng.integers(0, 6, 20_000), rng.integers(0, 6, 20_000)
    )
    assert 0.0 <= independent < 0.005


def test_normalized_mutual_information_hand_computed():
    codes = np.array([0, 0, 1, 1])
    actions = np.array([0, 0, 0, 1])
    # I = H(action) - H(action | code) = H(3/4, 1/4) - 0.5 * ln 2; H(code) = ln 2.
    h_action = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    expected = (h_action - 0.5 * math.log(2)) / (0.5 * (math.log(2) + h_action))
    assert metrics.normalized_mutual_information(codes, actions) == pytest.approx(expected)


def test_probe_accuracy_perfect_and_uninformative_mappings():
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 6, 600)
    perfect = metrics.probe_accuracy((actions + 2) % 6, actions)
    assert perfect.accuracy == 1.0
    assert perfect.code_to_action == {(a + 2) % 6: a for a in range(6)}
    assert perfect.num_train + perfect.num_test == 600

    constant = metrics.probe_accuracy(np.zeros_like(actions), actions)
    assert constant.accuracy == pytest.approx(constant.chance)


def test_probe_accuracy_chance_is_majority_class():
    actions = np.array([0] * 90 + [1] * 10)
    result = metrics.probe_accuracy(np.zeros(100, np.int64), actions, seed=1)
    held_out_zero_fraction = result.chance
    assert result.accuracy == pytest.approx(held_out_zero_fraction)
    assert 0.8 < result.chance < 1.0


def test_jax_and_bfloat16_frames_are_accepted():
    import jax.numpy as jnp

    target = jnp.zeros((2, 4, 4, 3), jnp.bfloat16)
    # bfloat16 holds 0.25 exactly: MSE 0.0625 -> 12.04 dB.
    assert metrics.pooled_psnr(target, target + 0.25) == pytest.approx(-10 * math.log10(0.0625))
