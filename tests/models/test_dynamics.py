"""Properties of the MaskGIT dynamics model: action alignment, causality, masking, the loss."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from genie.config import DynamicsConfig, TransformerConfig
from genie.models.dynamics import DynamicsModel, TokenHead, draw_mask, dynamics_loss
from genie.models.fsq import FiniteScalarQuantizer, digit_ids

B, T, N, K, A = 2, 4, 6, 8, 3
CONFIG = DynamicsConfig(transformer=TransformerConfig(width=16, depth=2, heads=2, mlp_ratio=2.0))


LEVELS = (2, 4)  # an FSQ grid of K = 8 ids for the factorised head


def make_model(seed=0, config=CONFIG, code_levels=()):
    return DynamicsModel(
        config,
        num_codes=K,
        num_actions=A,
        num_patches=N,
        max_frames=T,
        code_levels=code_levels,
        rngs=nnx.Rngs(seed),
    )


def make_batch(seed=0):
    tokens_key, actions_key, mask_key = jax.random.split(jax.random.key(seed), 3)
    tokens = jax.random.randint(tokens_key, (B, T, N), 0, K, jnp.int32)
    actions = jax.random.randint(actions_key, (B, T - 1), 0, A, jnp.int32)
    mask = jax.random.bernoulli(mask_key, 0.5, (B, T, N)).at[:, 0].set(False)
    return tokens, actions, mask


@nnx.jit
def forward(model, tokens, actions, mask):
    return model(tokens, actions, mask)


jit_loss = nnx.jit(dynamics_loss)


@pytest.fixture(scope="module")
def model():
    return make_model()


COPY_LOGIT = 3.0


@pytest.fixture(scope="module")
def copy_model():
    """Both options of the model on: the copy prior and the action added to every patch."""
    return make_model(
        config=dataclasses.replace(CONFIG, copy_logit=COPY_LOGIT, action_to_patches=True)
    )


@pytest.fixture(scope="module")
def per_action_model():
    """The copy prior with one learned logit per latent action, set to distinct values."""
    model = make_model(
        config=dataclasses.replace(CONFIG, copy_logit=COPY_LOGIT, copy_per_action=True)
    )
    model.copy_logit[...] = jnp.arange(1.0, A + 1.0)
    return model


@pytest.fixture(scope="module")
def factorized_model():
    """The factorised head over an FSQ grid of 2 x 4 levels, with the copy prior."""
    config = dataclasses.replace(CONFIG, copy_logit=COPY_LOGIT, factorized_head=True)
    return make_model(config=config, code_levels=LEVELS)


# Without the options, with the copy prior and patch actions, with a copy logit per action,
# with the factorised head.
BOTH = pytest.mark.parametrize(
    "which", ["model", "copy_model", "per_action_model", "factorized_model"]
)


def test_logits_shape_and_dtype(model):
    tokens, actions, mask = make_batch()
    logits = forward(model, tokens, actions, mask)
    assert logits.shape == (B, T, N, K) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


def test_bfloat16_compute_gives_float32_logits():
    bf16 = DynamicsModel(
        CONFIG,
        num_codes=K,
        num_actions=A,
        num_patches=N,
        max_frames=T,
        dtype=jnp.bfloat16,
        rngs=nnx.Rngs(0),
    )
    assert bf16.transformer.blocks[0].mlp.up.kernel.dtype == jnp.float32  # params stay fp32
    logits = np.asarray(forward(bf16, *make_batch()))
    assert logits.dtype == np.float32
    # Computed by a float32 output projection, not a bfloat16 one cast up afterwards.
    rounded = logits.astype(jnp.bfloat16).astype(np.float32)
    assert np.mean(logits != rounded) > 0.5


@BOTH
@pytest.mark.parametrize("t", [0, 1, 2])
def test_action_t_conditions_frame_t_plus_1_only(request, which, t):
    model = request.getfixturevalue(which)
    tokens, actions, mask = make_batch()
    changed = actions.at[:, t].set((actions[:, t] + 1) % A)
    before, after = forward(model, tokens, actions, mask), forward(model, tokens, changed, mask)
    # Frames 0..t never see actions[:, t]: bitwise equal.
    np.testing.assert_array_equal(before[:, : t + 1], after[:, : t + 1])
    # Frame t+1 is produced by it: a clear change (the action reaches the output).
    assert float(jnp.abs(before[:, t + 1] - after[:, t + 1]).mean()) > 1e-3


def test_action_token_is_as_strong_as_a_context_token(model):
    """The action has its own token per frame, not a faint additive bias: changing it moves
    the next frame's logits comparably to changing a whole context frame's tokens."""
    tokens, actions, mask = make_batch()
    base = forward(model, tokens, actions, mask)
    other_actions = (actions + 1) % A
    action_effect = jnp.abs(base[:, 1] - forward(model, tokens, other_actions, mask)[:, 1]).mean()
    context = tokens.at[:, 0].set((tokens[:, 0] + 1) % K)
    context_effect = jnp.abs(base[:, 1] - forward(model, context, actions, mask)[:, 1]).mean()
    assert float(action_effect) > 0.1 * float(context_effect)


@BOTH
@pytest.mark.parametrize("t", [0, 1, 2])
def test_future_tokens_do_not_reach_the_past(request, which, t):
    model = request.getfixturevalue(which)
    tokens, actions, mask = make_batch()
    changed = tokens.at[:, t + 1].set((tokens[:, t + 1] + 3) % K)
    before, after = forward(model, tokens, actions, mask), forward(model, changed, actions, mask)
    np.testing.assert_array_equal(before[:, : t + 1], after[:, : t + 1])
    assert not np.array_equal(before[:, t + 1], after[:, t + 1])


@BOTH
def test_masked_tokens_are_hidden(request, which):
    """A masked position's token id must not leak into any logit (the copy prior's included)."""
    model = request.getfixturevalue(which)
    tokens, actions, mask = make_batch()
    scrambled = jnp.where(mask, (tokens + 5) % K, tokens)
    np.testing.assert_array_equal(
        forward(model, tokens, actions, mask), forward(model, scrambled, actions, mask)
    )


def test_draw_mask_matches_the_drawn_rate():
    shape, min_rate = (64, T, 16), 0.5
    key = jax.random.key(3)
    mask = np.asarray(draw_mask(key, shape, min_rate))
    assert not mask[:, 0].any(), "frame 0 is context and must never be masked"
    # Recompute the per-example rate the same way: ceil(r * N) masked tokens in every frame.
    rate_key, _ = jax.random.split(key)
    rate = np.asarray(jax.random.uniform(rate_key, (shape[0],), minval=min_rate, maxval=1.0))
    expected = np.array([math.ceil(r * shape[2]) for r in rate])
    counts = mask[:, 1:].sum(-1)  # (B, T-1)
    np.testing.assert_array_equal(counts, np.repeat(expected[:, None], shape[1] - 1, axis=1))
    assert counts.min() >= math.ceil(min_rate * shape[2])
    assert abs(rate.mean() - 0.75) < 0.06  # U(0.5, 1)
    # Positions differ between frames and examples (not a fixed pattern).
    assert len({mask[i, t].tobytes() for i in range(8) for t in range(1, shape[1])}) > 8


@pytest.mark.parametrize("which", ["model", "factorized_model"])
def test_loss_is_cross_entropy_on_masked_tokens_only(request, which):
    """By hand in float64: the mean of -log p(token) over the masked positions, with p a softmax
    over all K ids (for the factorised head, over the ids' summed digit logits, `expand`)."""
    model = request.getfixturevalue(which)
    tokens, actions, _ = make_batch()
    key = jax.random.key(7)
    loss, metrics = jit_loss(model, tokens, actions, key)
    mask = np.asarray(draw_mask(key, tokens.shape, CONFIG.min_mask_rate))
    logits = np.asarray(forward(model, tokens, actions, jnp.asarray(mask)), np.float64)
    if model.head.factorized:
        logits = expand(model.head, logits)
    assert logits.shape[-1] == K
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.asarray(tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(loss), -picked[mask].mean(), rtol=1e-5)
    accuracy = (logits.argmax(-1) == np.asarray(tokens))[mask].mean()
    np.testing.assert_allclose(float(metrics["masked_accuracy"]), accuracy, rtol=1e-6)
    assert float(metrics["loss"]) == float(loss) == float(metrics["token_nll"])


def test_value_and_grad_under_jit(model):
    tokens, actions, _ = make_batch()

    @nnx.jit
    def grads_of(model, tokens, actions, key):
        return nnx.value_and_grad(dynamics_loss, has_aux=True)(model, tokens, actions, key)

    (loss, metrics), grads = grads_of(model, tokens, actions, jax.random.key(0))
    assert np.isfinite(float(loss)) and set(metrics) == {"loss", "masked_accuracy", "token_nll"}
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert float(jnp.abs(grads.action_embedding.embedding[...]).sum()) > 0
    assert float(jnp.abs(grads.mask_embedding[...]).sum()) > 0


@BOTH
@pytest.mark.parametrize("frame_index", [1, 2, 3])
def test_cached_decode_matches_full_forward(request, which, frame_index):
    model = request.getfixturevalue(which)
    tokens, actions, mask = make_batch()
    frame_mask = mask[:, frame_index]
    only_this_frame = jnp.zeros_like(mask).at[:, frame_index].set(frame_mask)
    full = forward(model, tokens, actions, only_this_frame)
    # Slots from frame_index on are irrelevant to the cache: fill them with other tokens.
    junk = tokens.at[:, frame_index:].set((tokens[:, frame_index:] + 1) % K)

    @nnx.jit
    def decode(model, frame_index):
        cache = model.prefill(junk, actions)
        previous = tokens[:, frame_index - 1]
        return model.decode_frame(
            tokens[:, frame_index], frame_mask, actions, frame_index, cache, previous
        )

    decoded = decode(model, jnp.int32(frame_index))
    np.testing.assert_allclose(decoded, full[:, frame_index], atol=1e-5, rtol=1e-5)


def test_copy_prior_adds_the_learned_logit_on_visible_previous_tokens(copy_model):
    """By hand: logits with the prior minus those of the same model with c = 0 are c exactly at
    (frame t >= 1, position n, token id tokens[t-1, n]) where tokens[t-1, n] is not masked, and 0
    everywhere else (frame 0 has no previous frame)."""
    tokens, actions, mask = make_batch()
    with_prior = np.asarray(forward(copy_model, tokens, actions, mask))
    without = nnx.clone(copy_model)  # a deep copy: the fixture keeps its copy logit
    without.copy_logit[...] = jnp.zeros(())
    plain = np.asarray(forward(without, tokens, actions, mask))
    expected = np.zeros((B, T, N, K), np.float32)
    tokens_np, mask_np = np.asarray(tokens), np.asarray(mask)
    for b in range(B):
        for t in range(1, T):
            for n in range(N):
                if not mask_np[b, t - 1, n]:
                    expected[b, t, n, tokens_np[b, t - 1, n]] = COPY_LOGIT
    np.testing.assert_allclose(with_prior - plain, expected, atol=1e-5)
    assert expected.sum() > 0  # the batch has visible previous tokens


def test_the_copy_logit_per_action_is_that_of_the_action_leading_to_the_frame(
    per_action_model,
):
    tokens, actions, mask = make_batch()
    with_prior = np.asarray(forward(per_action_model, tokens, actions, mask))
    without = nnx.clone(per_action_model)
    without.copy_logit[...] = jnp.zeros((A,))
    plain = np.asarray(forward(without, tokens, actions, mask))
    expected = np.zeros((B, T, N, K), np.float32)
    tokens_np, mask_np, actions_np = map(np.asarray, (tokens, mask, actions))
    for b in range(B):
        for t in range(1, T):
            for n in range(N):
                if not mask_np[b, t - 1, n]:
                    expected[b, t, n, tokens_np[b, t - 1, n]] = 1.0 + actions_np[b, t - 1]
    np.testing.assert_allclose(with_prior - plain, expected, atol=1e-5)
    np.testing.assert_array_equal(per_action_model.copy_logit[...], np.arange(1.0, A + 1.0))
    assert len(set(actions_np.reshape(-1).tolist())) > 1  # several actions, several logits
    # Weights over the actions (co-training's straight-through one-hot) give the same logits.
    one_hot = jax.nn.one_hot(actions, A)
    np.testing.assert_allclose(
        forward(per_action_model, tokens, one_hot, mask), with_prior, rtol=1e-5, atol=1e-5
    )


def test_copy_logit_is_learned(copy_model):
    tokens, actions, _ = make_batch()
    grads = nnx.grad(lambda m: dynamics_loss(m, tokens, actions, jax.random.key(0))[0])(copy_model)
    assert float(jnp.abs(grads.copy_logit[...])) > 0


def test_without_the_option_there_is_no_copy_parameter(model):
    assert model.copy_logit is None


def test_action_to_patches_adds_the_action_to_every_patch_token(model, copy_model):
    tokens, actions, mask = make_batch()
    plain = model.embed(tokens, actions, mask)
    added = copy_model.embed(tokens, actions, mask)
    patches = copy_model.embed_tokens(tokens, mask)
    action_tokens = copy_model.embed_actions(actions)  # (B, T, 1, D), frame 0: no action
    np.testing.assert_allclose(added[:, :, :N], patches + action_tokens, rtol=1e-6)
    np.testing.assert_array_equal(added[:, :, N:], action_tokens)
    assert plain.shape == added.shape


def test_overfits_a_tiny_batch():
    shallow = dataclasses.replace(CONFIG.transformer, depth=1)  # compiles faster, learns as well
    model = make_model(seed=1, config=dataclasses.replace(CONFIG, transformer=shallow))
    tokens, actions, _ = make_batch(seed=1)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, key):
        grad_fn = nnx.value_and_grad(dynamics_loss, has_aux=True)
        (loss, _), grads = grad_fn(model, tokens, actions, key)
        optimizer.update(model, grads)
        return loss

    eval_key = jax.random.key(123)
    initial = float(jit_loss(model, tokens, actions, eval_key)[0])
    for step in range(50):
        train_step(model, optimizer, jax.random.fold_in(jax.random.key(0), step))
    final = float(jit_loss(model, tokens, actions, eval_key)[0])
    assert final < 0.5 * initial, (initial, final)


def test_rejects_misaligned_actions(model):
    tokens, actions, mask = make_batch()
    with pytest.raises(ValueError, match="need 3 actions"):
        forward(model, tokens, jnp.concatenate([actions, actions[:, :1]], axis=1), mask)


def test_action_weights_embed_like_ids_and_pass_gradients(model):
    """(B, T-1, A) weights (co-training's straight-through one-hot) give exactly the logits of
    the ids they are one-hot on, and a gradient to the weights, which ids cannot have."""
    tokens, actions, mask = make_batch(3)
    one_hot = jax.nn.one_hot(actions, A, dtype=jnp.float32)
    np.testing.assert_array_equal(
        forward(model, tokens, one_hot, mask), forward(model, tokens, actions, mask)
    )

    def loss(weights):
        return dynamics_loss(model, tokens, weights, jax.random.key(0))[0]

    gradient = jax.grad(loss)(one_hot)
    assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0


def test_copy_per_action_without_the_copy_prior_is_refused():
    with pytest.raises(ValueError, match="copy_per_action needs the copy prior"):
        make_model(config=dataclasses.replace(CONFIG, copy_per_action=True))


def expand(head: TokenHead, logits: np.ndarray) -> np.ndarray:
    """(..., V) factorised logits -> (..., K): each id's logit is the sum of its digits' logits,
    written out id by id (a softmax over these is the product of the digits' softmaxes)."""
    out = np.zeros(logits.shape[:-1] + (head.num_codes,), np.float64)
    offsets = np.cumsum((0,) + head.levels[:-1])
    for k in range(head.num_codes):
        digits = np.asarray(head.digits(jnp.int32(k)))
        out[..., k] = sum(logits[..., offsets[f] + d] for f, d in enumerate(digits))
    return out


def test_token_head_digits_follow_the_fsq_numbering():
    """The head's digits of an id are the FSQ quantiser's level indices for that id."""
    levels = (3, 4, 2)
    head, fsq = TokenHead(24, levels), FiniteScalarQuantizer(levels)
    ids = jnp.arange(24, dtype=jnp.int32)
    digits = np.asarray(head.digits(ids))
    np.testing.assert_array_equal(digits[13], [1, 0, 1])  # 13 = 1 + 0 * 3 + 1 * 12
    np.testing.assert_array_equal(digit_ids(jnp.asarray(digits), levels), ids)
    # FSQ's values rise with each level index: the digits order the code values per dimension.
    values = np.asarray(fsq.lookup(ids))
    for f in range(len(levels)):
        for a, b in [(i, j) for i in range(24) for j in range(24)]:
            if digits[a, f] < digits[b, f]:
                assert values[a, f] < values[b, f]
    with pytest.raises(ValueError, match="make 24 token ids"):
        TokenHead(25, levels)


def test_factorized_log_probs_are_a_softmax_over_all_ids():
    """log p(id) of the factorised head equals a K-way log-softmax of the expanded logits, so
    the probabilities of all K ids sum to 1; temperature 0 picks that softmax's argmax."""
    head = TokenHead(24, (3, 4, 2))
    logits = jax.random.normal(jax.random.key(0), (5, head.width)) * 2.0
    full = expand(head, np.asarray(logits, np.float64))
    expected = full - np.log(np.exp(full).sum(-1, keepdims=True))
    ids = jnp.broadcast_to(jnp.arange(24, dtype=jnp.int32), (5, 24))
    got = np.asarray(head.log_probs(logits[:, None, :], ids))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(head.cross_entropy(logits[:, None], ids), -got, rtol=1e-6)
    np.testing.assert_array_equal(head.sample(logits, None, 0.0), expected.argmax(-1))


def test_greedy_mean_digits_pick_the_level_nearest_each_digits_mean_level():
    """greedy "mean": at temperature 0 each digit is the level nearest its expected level, by
    hand here, where the mode would split a belief shared by two far levels; at temperature > 0
    and for a head without digits nothing changes."""
    levels = (3, 4)
    mean_head, mode_head = TokenHead(12, levels, greedy="mean"), TokenHead(12, levels)
    # Digit 0: p = (0.45, 0.10, 0.45): mean level 1.0, mode 0. Digit 1: p = (0.1, 0.2, 0.3,
    # 0.4): mean level 2.0, mode 3.
    logits = jnp.log(jnp.asarray([[0.45, 0.10, 0.45, 0.1, 0.2, 0.3, 0.4]]))
    np.testing.assert_array_equal(mean_head.sample(logits, None, 0.0), [1 + 2 * 3])
    np.testing.assert_array_equal(mode_head.sample(logits, None, 0.0), [0 + 3 * 3])
    np.testing.assert_array_equal(mean_head.mode(logits), [0 + 3 * 3])
    # Random logits against a NumPy hand computation, in many positions at once.
    rng = np.random.default_rng(0)
    many = rng.normal(size=(50, 7)) * 3.0
    expected = []
    for row in many:
        digits = []
        for start, n in ((0, 3), (3, 4)):
            p = np.exp(row[start : start + n]) / np.exp(row[start : start + n]).sum()
            digits.append(int(np.clip(np.round(p @ np.arange(n)), 0, n - 1)))
        expected.append(digits[0] + 3 * digits[1])
    np.testing.assert_array_equal(mean_head.sample(jnp.asarray(many), None, 0.0), expected)
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        mean_head.sample(jnp.asarray(many), key, 1.0), mode_head.sample(jnp.asarray(many), key, 1.0)
    )
    plain = jnp.asarray(rng.normal(size=(5, 12)))
    np.testing.assert_array_equal(
        TokenHead(12, greedy="mean").sample(plain, None, 0.0), plain.argmax(-1)
    )
    with pytest.raises(ValueError, match="greedy digits"):
        TokenHead(12, levels, greedy="median")


def test_factorized_sampling_draws_ids_with_their_probabilities():
    head = TokenHead(8, LEVELS)
    logits = jnp.asarray([0.5, -0.5, 1.0, 0.0, -1.0, 2.0])
    draws = np.asarray(head.sample(jnp.broadcast_to(logits, (40000, 6)), jax.random.key(1), 1.0))
    frequencies = np.bincount(draws, minlength=8) / draws.size
    probabilities = np.exp(
        np.asarray(head.log_probs(jnp.broadcast_to(logits, (8, 6)), jnp.arange(8)))
    )
    np.testing.assert_allclose(frequencies, probabilities, atol=0.01)
    # Temperature sharpens: at 0.1 almost every draw is the most likely id.
    cold = np.asarray(head.sample(jnp.broadcast_to(logits, (2000, 6)), jax.random.key(2), 0.1))
    assert np.mean(cold == probabilities.argmax()) > 0.95


def test_factorized_model_outputs_one_group_per_digit(factorized_model):
    tokens, actions, mask = make_batch()
    logits = forward(factorized_model, tokens, actions, mask)
    assert logits.shape == (B, T, N, sum(LEVELS)) and logits.dtype == jnp.float32
    assert factorized_model.token_embedding.embedding.shape == (
        sum(LEVELS),
        CONFIG.transformer.width,
    )
    # A token's embedding is the sum of its digits' rows.
    table = np.asarray(factorized_model.token_embedding.embedding[...])
    embedded = np.asarray(factorized_model.embed_tokens(tokens, jnp.zeros_like(mask)))
    digits = np.asarray(factorized_model.head.digits(tokens))
    np.testing.assert_allclose(
        embedded, table[digits[..., 0]] + table[2 + digits[..., 1]], rtol=1e-6
    )


def test_factorized_copy_prior_adds_the_logit_on_each_digit_of_the_previous_token(
    factorized_model,
):
    tokens, actions, mask = make_batch()
    with_prior = np.asarray(forward(factorized_model, tokens, actions, mask))
    without = nnx.clone(factorized_model)
    without.copy_logit[...] = jnp.zeros(())
    plain = np.asarray(forward(without, tokens, actions, mask))
    expected = np.zeros((B, T, N, sum(LEVELS)), np.float32)
    tokens_np, mask_np = np.asarray(tokens), np.asarray(mask)
    for b in range(B):
        for t in range(1, T):
            for n in range(N):
                if not mask_np[b, t - 1, n]:
                    previous = tokens_np[b, t - 1, n]
                    expected[b, t, n, previous % 2] = COPY_LOGIT  # digit 0: 2 levels
                    expected[b, t, n, 2 + previous // 2] = COPY_LOGIT  # digit 1: 4 levels
    np.testing.assert_allclose(with_prior - plain, expected, atol=1e-5)


def test_factorized_head_needs_an_fsq_tokenizer():
    with pytest.raises(ValueError, match="needs an FSQ tokenizer"):
        make_model(config=dataclasses.replace(CONFIG, factorized_head=True))


def test_soft_digit_targets_match_a_hand_computed_gaussian_over_levels():
    """Digit targets exp(-(j - d)^2 / 2 sigma^2), normalised per digit, and the loss
    -sum_j q_j log softmax_j, by hand in float64 for LEVELS = (2, 4) with sigma 0.8."""
    sigma = 0.8
    head = TokenHead(K, LEVELS, target_sigma=sigma)
    ids = jnp.arange(K, dtype=jnp.int32)
    logits = jax.random.normal(jax.random.key(5), (K, sum(LEVELS)))
    targets, losses = np.asarray(head.digit_targets(ids)), np.asarray(head.loss(logits, ids))
    for k in range(K):
        digits = (k % 2, (k // 2) % 4)
        expected_loss = 0.0
        for f, (digit, levels, start) in enumerate(zip(digits, LEVELS, (0, 2), strict=True)):
            weights = np.exp(-((np.arange(levels) - digit) ** 2) / (2 * sigma**2))
            weights /= weights.sum()
            np.testing.assert_allclose(targets[k, start : start + levels], weights, rtol=1e-6)
            group = np.asarray(logits[k, start : start + levels], np.float64)
            log_softmax = group - np.log(np.exp(group).sum())
            expected_loss -= (weights * log_softmax).sum()
            assert targets[k, start + digit] == targets[k, start : start + levels].max(), f
        np.testing.assert_allclose(losses[k], expected_loss, rtol=1e-5)


def test_soft_digit_targets_narrow_to_the_cross_entropy():
    """A tiny sigma puts (almost) all weight on the true level: the loss is -log p(id)."""
    ids = jnp.arange(K, dtype=jnp.int32)
    logits = jax.random.normal(jax.random.key(6), (K, sum(LEVELS)))
    narrow = TokenHead(K, LEVELS, target_sigma=0.05).loss(logits, ids)
    np.testing.assert_allclose(narrow, TokenHead(K, LEVELS).cross_entropy(logits, ids), rtol=1e-5)
    # A wide sigma scores a near miss (one level off) better than a far one.
    wide = TokenHead(K, LEVELS, target_sigma=1.0)
    near, far = jnp.zeros((1, 6)).at[0, 2 + 1].set(5.0), jnp.zeros((1, 6)).at[0, 2 + 3].set(5.0)
    truth = digit_ids(jnp.array([[0, 0]]), LEVELS)
    assert float(wide.loss(near, truth)[0]) < float(wide.loss(far, truth)[0])


def test_dynamics_loss_with_soft_digit_targets_reports_the_token_nll_beside_it():
    config = dataclasses.replace(CONFIG, factorized_head=True, digit_target_sigma=1.0)
    model = make_model(config=config, code_levels=LEVELS)
    tokens, actions, _ = make_batch()
    key = jax.random.key(7)
    loss, metrics = jit_loss(model, tokens, actions, key)
    mask = jnp.asarray(draw_mask(key, tokens.shape, CONFIG.min_mask_rate))
    logits = forward(model, tokens, actions, mask)
    weight = np.asarray(mask, np.float64)
    for name, values in [("loss", model.head.loss), ("token_nll", model.head.cross_entropy)]:
        expected = (np.asarray(values(logits, tokens)) * weight).sum() / weight.sum()
        np.testing.assert_allclose(float(metrics[name]), expected, rtol=1e-5)
    # The model trains on the soft targets, not on -log p(id).
    assert abs(float(metrics["loss"]) - float(metrics["token_nll"])) > 1e-3


def test_soft_digit_targets_need_the_factorised_head():
    with pytest.raises(ValueError, match="factorised head"):
        make_model(config=dataclasses.replace(CONFIG, digit_target_sigma=1.0))
    with pytest.raises(ValueError, match=">= 0"):
        TokenHead(K, LEVELS, target_sigma=-1.0)
