"""MaskGIT schedule and next-frame sampling: counts, determinism, causality, compilation."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genie.config import DynamicsConfig, TransformerConfig
from genie.models import maskgit
from genie.models.dynamics import DynamicsModel
from genie.models.maskgit import mask_schedule, masked_counts, rollout, sample_frame_jit

B, T, N, K, A = 2, 4, 8, 16, 3
CONFIG = DynamicsConfig(transformer=TransformerConfig(width=16, depth=2, heads=2, mlp_ratio=2.0))
SAMPLING = dict(steps=4, temperature=1.0)


@pytest.fixture(scope="module")
def model():
    return DynamicsModel(
        CONFIG, num_codes=K, num_actions=A, num_patches=N, max_frames=T, rngs=nnx.Rngs(0)
    )


def make_clip(seed=0):
    tokens_key, actions_key = jax.random.split(jax.random.key(seed))
    tokens = jax.random.randint(tokens_key, (B, T, N), 0, K, jnp.int32)
    return tokens, jax.random.randint(actions_key, (B, T - 1), 0, A, jnp.int32)


def test_schedule_values():
    assert mask_schedule("cosine", 0.0) == pytest.approx(1.0)
    assert mask_schedule("cosine", 0.5) == pytest.approx(math.sqrt(0.5))
    assert mask_schedule("cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    assert mask_schedule("linear", 0.25) == pytest.approx(0.75)
    traced = jax.jit(lambda r: mask_schedule("cosine", r))(jnp.float32(0.5))
    assert float(traced) == pytest.approx(math.sqrt(0.5), rel=1e-6)
    with pytest.raises(ValueError, match="unknown mask schedule"):
        mask_schedule("square", 0.5)


def test_masked_counts_by_hand():
    # floor(16 cos(pi/8)) = 14, floor(16 cos(pi/4)) = 11, floor(16 cos(3 pi/8)) = 6, then 0.
    np.testing.assert_array_equal(masked_counts(16, 4, "cosine"), [14, 11, 6, 0])
    np.testing.assert_array_equal(masked_counts(16, 4, "linear"), [12, 8, 4, 0])


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("num_tokens,steps", [(16, 1), (16, 8), (16, 25), (256, 25), (7, 3)])
def test_unmasking_counts_sum_to_all_tokens(schedule, num_tokens, steps):
    still_masked = masked_counts(num_tokens, steps, schedule)
    unmasked_per_step = -np.diff(np.concatenate([[num_tokens], still_masked]))
    assert still_masked[-1] == 0
    assert (unmasked_per_step >= 0).all()
    assert unmasked_per_step.sum() == num_tokens


def test_same_key_same_frame_other_key_other_frame(model):
    tokens, actions = make_clip()
    first = sample_frame_jit(model, tokens, actions, 2, jax.random.key(0), **SAMPLING)
    again = sample_frame_jit(model, tokens, actions, 2, jax.random.key(0), **SAMPLING)
    other = sample_frame_jit(model, tokens, actions, 2, jax.random.key(1), **SAMPLING)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == (B, N) and first.dtype == jnp.int32
    assert int(first.min()) >= 0 and int(first.max()) < K


def test_compiles_once_for_every_frame_index(model, monkeypatch):
    traces = []
    traced_sample_frame = maskgit.sample_frame

    def counting_sample_frame(*args, **kwargs):
        traces.append(1)
        return traced_sample_frame(*args, **kwargs)

    monkeypatch.setattr(maskgit, "sample_frame", counting_sample_frame)
    compiled_before = maskgit._sample_frame_compiled._cache_size()
    tokens, actions = make_clip()
    # Options no other test uses, so the first call must trace (and MaskGIT's choice noise runs).
    options = dict(steps=3, temperature=1.0, choice_temperature=4.5)
    for frame_index in (1, 2, 3, 2, 1):
        sample_frame_jit(
            model, tokens, actions, frame_index, jax.random.key(frame_index), **options
        )
    assert len(traces) == 1
    assert maskgit._sample_frame_compiled._cache_size() == compiled_before + 1


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("frame_index", [1, 3])
def test_slots_from_frame_index_on_are_ignored(model, use_cache, frame_index):
    tokens, actions = make_clip()
    other_tokens, other_actions = make_clip(seed=1)
    junk_tokens = tokens.at[:, frame_index:].set(other_tokens[:, frame_index:])
    junk_actions = actions.at[:, frame_index:].set(other_actions[:, frame_index:])
    options = dict(SAMPLING, use_cache=use_cache)
    key = jax.random.key(5)
    clean = sample_frame_jit(model, tokens, actions, frame_index, key, **options)
    junk = sample_frame_jit(model, junk_tokens, junk_actions, frame_index, key, **options)
    np.testing.assert_array_equal(clean, junk)


@pytest.mark.parametrize("copy_logit", [0.0, 3.0])
def test_cached_sampling_equals_uncached(model, copy_logit):
    if copy_logit:
        model = DynamicsModel(
            dataclasses.replace(CONFIG, copy_logit=copy_logit, action_to_patches=True),
            num_codes=K,
            num_actions=A,
            num_patches=N,
            max_frames=T,
            rngs=nnx.Rngs(0),
        )
    tokens, actions = make_clip()
    for frame_index in (1, 2, 3):
        key = jax.random.key(10 + frame_index)
        cached = sample_frame_jit(model, tokens, actions, frame_index, key, **SAMPLING)
        uncached = sample_frame_jit(
            model, tokens, actions, frame_index, key, use_cache=False, **SAMPLING
        )
        np.testing.assert_array_equal(cached, uncached)


def test_one_greedy_step_is_the_argmax_of_the_fully_masked_frame(model):
    tokens, actions = make_clip()
    frame = sample_frame_jit(model, tokens, actions, 2, jax.random.key(0), steps=1, temperature=0.0)
    mask = jnp.zeros((B, T, N), bool).at[:, 2].set(True)
    expected = nnx.jit(lambda model: model(tokens, actions, mask))(model)[:, 2].argmax(-1)
    np.testing.assert_array_equal(frame, expected)
    # Greedy decoding ignores the key.
    other_key = sample_frame_jit(
        model, tokens, actions, 2, jax.random.key(9), steps=1, temperature=0
    )
    np.testing.assert_array_equal(frame, other_key)


def test_the_action_changes_the_sampled_frame(model):
    tokens, actions = make_clip()
    key, frames = jax.random.key(0), []
    for action in range(A):
        chosen = actions.at[:, 1].set(action)  # the action taken at frame 1, producing frame 2
        frames.append(np.asarray(sample_frame_jit(model, tokens, chosen, 2, key, **SAMPLING)))
    assert len({frame.tobytes() for frame in frames}) > 1


def test_rollout_slides_the_window_without_recompiling(model):
    tokens, actions = make_clip()
    prompt, prompt_actions = tokens[:, :2], actions[:, :1]
    horizon = 2 * T  # longer than the window: the context slides
    new_actions = jax.random.randint(jax.random.key(3), (B, horizon), 0, A, jnp.int32)
    compiled_before = maskgit._advance_compiled._cache_size()
    key = jax.random.key(4)
    frames = rollout(model, prompt, new_actions, key, prompt_actions=prompt_actions, **SAMPLING)
    assert frames.shape == (B, horizon, N) and frames.dtype == jnp.int32
    assert int(frames.min()) >= 0 and int(frames.max()) < K
    assert maskgit._advance_compiled._cache_size() <= compiled_before + 1
    # The first new frame is sample_frame on the prompt with the first action.
    buffer = jnp.zeros((B, T, N), jnp.int32).at[:, :2].set(prompt)
    buffer_actions = jnp.zeros((B, T - 1), jnp.int32).at[:, 0].set(prompt_actions[:, 0])
    buffer_actions = buffer_actions.at[:, 1].set(new_actions[:, 0])
    first = sample_frame_jit(
        model, buffer, buffer_actions, 2, jax.random.fold_in(key, 0), **SAMPLING
    )
    np.testing.assert_array_equal(frames[:, 0], first)
    # A late frame sees exactly the last T-1 frames and the actions between them.
    h = horizon - 1
    history = jnp.concatenate([prompt, frames], axis=1)  # frame h is history[:, h + 2]
    all_actions = jnp.concatenate([prompt_actions, new_actions], axis=1)
    window = history[:, h + 2 - (T - 1) : h + 3]
    window_actions = all_actions[:, h + 2 - (T - 1) : h + 2]
    last = sample_frame_jit(
        model, window, window_actions, T - 1, jax.random.fold_in(key, h), **SAMPLING
    )
    np.testing.assert_array_equal(frames[:, h], last)


def test_rollout_demands_the_prompts_actions(model):
    tokens, actions = make_clip()
    with pytest.raises(ValueError, match="prompt_actions"):
        rollout(model, tokens[:, :2], actions[:, :1], jax.random.key(0), **SAMPLING)


def test_rejects_out_of_range_inputs(model):
    tokens, actions = make_clip()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="frame_index 0"):
        sample_frame_jit(model, tokens, actions, 0, key, **SAMPLING)
    with pytest.raises(ValueError, match=r"action 3 is outside the codebook of 3 latent actions"):
        sample_frame_jit(model, tokens, actions.at[0, 0].set(A), 1, key, **SAMPLING)
    with pytest.raises(ValueError, match=r"token 16 is outside the codebook of 16 video tokens"):
        sample_frame_jit(model, tokens.at[1, 0, 0].set(K), actions, 1, key, **SAMPLING)
    with pytest.raises(ValueError, match="action -1 is outside"):
        rollout(model, tokens[:, :1], actions.at[1, 2].set(-1), key, **SAMPLING)
    with pytest.raises(ValueError, match="3 per-clip keys for a batch of 2"):
        rollout(model, tokens[:, :1], actions, jax.random.split(key, 3), **SAMPLING)


def test_rollout_checks_ids_and_splits_the_model_once(model, monkeypatch):
    calls = {"check": 0, "split": 0}
    check, split = maskgit._check_ids, nnx.split

    def counting_check(*args):
        calls["check"] += 1
        return check(*args)

    def counting_split(*args):
        calls["split"] += 1
        return split(*args)

    monkeypatch.setattr(maskgit, "_check_ids", counting_check)
    monkeypatch.setattr(maskgit.nnx, "split", counting_split)
    tokens, actions = make_clip()
    frames = rollout(model, tokens[:, :1], actions, jax.random.key(0), **SAMPLING)
    assert frames.shape == (B, T - 1, N)
    assert calls == {"check": 1, "split": 1}


@pytest.mark.parametrize("options", [SAMPLING, dict(SAMPLING, choice_temperature=4.5)])
def test_per_clip_keys_make_a_clips_sample_independent_of_its_batch(model, options):
    tokens, actions = make_clip()
    keys = jax.random.split(jax.random.key(7), B)
    frame = sample_frame_jit(model, tokens, actions, 2, keys, **options)
    swapped = sample_frame_jit(model, tokens[::-1], actions[::-1], 2, keys[::-1], **options)
    np.testing.assert_array_equal(frame, swapped[::-1])
    # Not one key broadcast: the same clip with two keys samples two frames.
    twins = sample_frame_jit(
        model, tokens[:1].repeat(B, 0), actions[:1].repeat(B, 0), 2, keys, **options
    )
    assert not np.array_equal(twins[0], twins[1])
    generated = rollout(model, tokens[:, :1], actions, keys, **options)
    swapped = rollout(model, tokens[::-1, :1], actions[::-1], keys[::-1], **options)
    np.testing.assert_array_equal(generated, swapped[::-1])


@pytest.fixture(scope="module")
def factorized_model():
    """The factorised head over an FSQ grid of 4 x 4 levels (K = 16), with the copy prior."""
    return DynamicsModel(
        dataclasses.replace(CONFIG, copy_logit=3.0, factorized_head=True),
        num_codes=K,
        num_actions=A,
        num_patches=N,
        max_frames=T,
        code_levels=(4, 4),
        rngs=nnx.Rngs(0),
    )


def test_factorized_head_samples_like_the_plain_one(factorized_model):
    """MaskGIT with the factorised head: cached equals uncached sampling, per-clip keys keep a
    clip's sample independent of its batch, and one greedy step is the head's argmax."""
    tokens, actions = make_clip()
    for frame_index in (1, 3):
        key = jax.random.key(10 + frame_index)
        cached = sample_frame_jit(factorized_model, tokens, actions, frame_index, key, **SAMPLING)
        uncached = sample_frame_jit(
            factorized_model, tokens, actions, frame_index, key, use_cache=False, **SAMPLING
        )
        np.testing.assert_array_equal(cached, uncached)
        assert 0 <= int(cached.min()) and int(cached.max()) < K
    keys = jax.random.split(jax.random.key(7), B)
    frame = sample_frame_jit(factorized_model, tokens, actions, 2, keys, **SAMPLING)
    swapped = sample_frame_jit(
        factorized_model, tokens[::-1], actions[::-1], 2, keys[::-1], **SAMPLING
    )
    np.testing.assert_array_equal(frame, swapped[::-1])
    greedy = sample_frame_jit(
        factorized_model, tokens, actions, 2, jax.random.key(0), steps=1, temperature=0.0
    )
    mask = jnp.zeros((B, T, N), bool).at[:, 2].set(True)
    logits = nnx.jit(lambda model: model(tokens, actions, mask))(factorized_model)[:, 2]
    assert logits.shape == (B, N, 8)
    np.testing.assert_array_equal(greedy, factorized_model.head.sample(logits, None, 0.0))
