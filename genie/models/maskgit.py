"""MaskGIT decoding of the next frame (Chang et al. 2022) with the Genie dynamics model.

A frame starts fully masked. Each of `steps` refinements predicts every still-masked token,
samples it, and keeps the most confident ones: after step s (0-based) exactly
floor(N * gamma((s + 1) / steps)) tokens remain masked, where gamma is the mask schedule, so
the last step unmasks everything. Tokens once kept are never re-masked.

Fixed shapes: the caller holds a buffer of T frame slots and says which slot to generate with a
traced `frame_index`, so one compiled function serves every frame of a rollout. Slots at and
after `frame_index` are ignored (temporal attention is causal).

Key/value cache: the frames before `frame_index` are the same at every MaskGIT step, so their
per-layer temporal keys and values are computed once per frame (`DynamicsModel.prefill`) and each
step runs only the N + 1 tokens of the frame being generated through the blocks.

Keys: one PRNG key for the whole batch, or a batch of keys, one per clip ((B,) typed keys or
(B, 2) raw ones), with which a clip's samples do not depend on the other clips of the batch.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie.models.dynamics import DynamicsModel
from genie.models.lam import check_actions
from genie.models.vq import check_codes

SCHEDULES = ("cosine", "linear")


def mask_schedule(name: str, ratio):
    """Fraction of tokens still masked at progress `ratio` in [0, 1]; gamma(0) = 1, gamma(1) = 0.

    cosine: gamma(r) = cos(pi/2 r), MaskGIT's choice (Chang et al. 2022, section 3.2);
    linear: gamma(r) = 1 - r. Python floats and NumPy arrays give NumPy float64, jax arrays jax.
    """
    xp = jnp if isinstance(ratio, jax.Array) else np
    if name == "cosine":
        return xp.cos(0.5 * math.pi * ratio)
    if name == "linear":
        return 1.0 - xp.asarray(ratio)
    raise ValueError(f"unknown mask schedule {name!r}; choose one of {SCHEDULES}")


def masked_counts(num_tokens: int, steps: int, schedule: str) -> np.ndarray:
    """(steps,) int32: tokens still masked after each MaskGIT step, floor(N * gamma((s+1)/steps)).

    Non-increasing from at most N down to exactly 0 after the last step; computed in float64 on
    the host so that cos(pi/2) rounds to 0 masked tokens, not to -1.
    """
    if steps < 1:
        raise ValueError(f"MaskGIT needs at least one step, got steps={steps}")
    ratios = np.arange(1, steps + 1, dtype=np.float64) / steps
    counts = np.floor(num_tokens * mask_schedule(schedule, ratios) + 1e-9)
    counts = np.clip(counts, 0, num_tokens).astype(np.int32)
    counts[-1] = 0
    return counts


def _per_clip(key: jax.Array) -> bool:
    """True for a batch of keys, one per clip: (B,) typed keys or (B, 2) raw uint32 keys."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    return key.ndim == (1 if typed else 2)


def fold_in(key: jax.Array, data) -> jax.Array:
    """`jax.random.fold_in` of one key or of each key of a per-clip batch."""
    if _per_clip(key):
        return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, data)
    return jax.random.fold_in(key, data)


def _split(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    if _per_clip(key):
        pair = jax.vmap(jax.random.split)(key)
        return pair[:, 0], pair[:, 1]
    pair = jax.random.split(key)
    return pair[0], pair[1]


def _check_key(key: jax.Array, batch: int) -> None:
    if _per_clip(key) and key.shape[0] != batch:
        raise ValueError(f"got {key.shape[0]} per-clip keys for a batch of {batch} clips")


def sample_frame(
    model: DynamicsModel,
    tokens: jax.Array,
    actions: jax.Array,
    frame_index: jax.Array,
    key: jax.Array,
    *,
    steps: int,
    temperature: float,
    schedule: str = "cosine",
    choice_temperature: float = 0.0,
    use_cache: bool = True,
) -> jax.Array:
    """(B, T, N) token buffer, (B, T-1) actions, scalar frame_index >= 1 -> (B, N) int32 tokens.

    Generates frame `frame_index` given the frames before it and actions[:, :frame_index]
    (actions[:, frame_index - 1] is the action taken at the last context frame). Traceable; use
    `sample_frame_jit` for the compiled entry point. temperature 0 samples the argmax.
    choice_temperature > 0 adds MaskGIT's annealed Gumbel noise, choice_temperature *
    (1 - (s+1)/steps) * Gumbel, to the log-confidences that choose which tokens to keep
    (Chang et al. 2022 use 4.5); the default 0 ranks by the model's confidence alone, as the
    sampled tokens are random already at temperature 1. `key` is one key or one per clip.
    """
    batch, frames, patches = tokens.shape
    _check_key(key, batch)
    per_clip = _per_clip(key)
    frame_index = jnp.asarray(frame_index, jnp.int32)
    counts = jnp.asarray(masked_counts(patches, steps, schedule))
    head = model.head

    if use_cache:
        cache = model.prefill(tokens, actions)
        previous = jax.lax.dynamic_index_in_dim(tokens, frame_index - 1, axis=1, keepdims=False)

        def predict(frame_tokens, frame_mask):
            return model.decode_frame(
                frame_tokens, frame_mask, actions, frame_index, cache, previous_tokens=previous
            )

    else:
        clip_mask = jnp.zeros(tokens.shape, bool)

        def predict(frame_tokens, frame_mask):
            clip = jax.lax.dynamic_update_index_in_dim(tokens, frame_tokens, frame_index, axis=1)
            mask = jax.lax.dynamic_update_index_in_dim(clip_mask, frame_mask, frame_index, axis=1)
            logits = model(clip, actions, mask)
            return jax.lax.dynamic_index_in_dim(logits, frame_index, axis=1, keepdims=False)

    def refine(step, carry):
        frame_tokens, frame_mask = carry
        logits = predict(frame_tokens, frame_mask)  # (B, N, V)
        sample_key, choice_key = _split(fold_in(key, step))
        if temperature == 0:
            sampled = head.sample(logits, None, 0.0)
        elif per_clip:
            sampled = jax.vmap(lambda k, x: head.sample(x, k, temperature))(sample_key, logits)
        else:
            sampled = head.sample(logits, sample_key, temperature)
        confidence = head.log_probs(logits, sampled)
        if choice_temperature > 0:
            anneal = choice_temperature * (1.0 - (step + 1) / steps)
            if per_clip:
                gumbel = jax.vmap(lambda k: jax.random.gumbel(k, (patches,)))(choice_key)
            else:
                gumbel = jax.random.gumbel(choice_key, confidence.shape)
            confidence = confidence + anneal * gumbel
        # Tokens kept earlier stay kept: infinitely confident.
        confidence = jnp.where(frame_mask, confidence, jnp.inf)
        sampled = jnp.where(frame_mask, sampled, frame_tokens)
        rank = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)  # 0 = least confident
        return sampled, rank < counts[step]

    start = (jnp.zeros((batch, patches), jnp.int32), jnp.ones((batch, patches), bool))
    frame_tokens, _ = jax.lax.fori_loop(0, steps, refine, start)
    return frame_tokens


_STATIC = ("graphdef", "steps", "temperature", "schedule", "choice_temperature", "use_cache")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _sample_frame_compiled(graphdef, state, tokens, actions, frame_index, key, **options):
    return sample_frame(nnx.merge(graphdef, state), tokens, actions, frame_index, key, **options)


def _check_ids(model: DynamicsModel, tokens, actions) -> None:
    """Token and latent action ids in range; copies concrete device arrays to the host, so
    `rollout` calls it once, not per frame."""
    check_codes(tokens, model.num_codes, name="token", codebook="video tokens")
    check_actions(actions, model.num_actions)


def _options(steps, temperature, schedule, choice_temperature, use_cache) -> dict:
    """The static arguments of `_sample_frame_compiled`, normalised so that equal options hit
    the same compiled function."""
    return dict(
        steps=steps,
        temperature=float(temperature),
        schedule=schedule,
        choice_temperature=float(choice_temperature),
        use_cache=use_cache,
    )


def sample_frame_jit(
    model: DynamicsModel,
    tokens: jax.Array,
    actions: jax.Array,
    frame_index,
    key: jax.Array,
    *,
    steps: int,
    temperature: float,
    schedule: str = "cosine",
    choice_temperature: float = 0.0,
    use_cache: bool = True,
) -> jax.Array:
    """Compiled `sample_frame`: compiles once per (model structure, buffer shape, options), not
    per frame index, which is a traced argument."""
    frames = tokens.shape[1]
    if isinstance(frame_index, int) and not 1 <= frame_index < frames:
        raise ValueError(
            f"frame_index {frame_index} must be in 1..{frames - 1}: frame 0 has no action"
        )
    _check_ids(model, tokens, actions)
    graphdef, state = nnx.split(model)
    return _sample_frame_compiled(
        graphdef,
        state,
        jnp.asarray(tokens, jnp.int32),
        jnp.asarray(actions, jnp.int32),
        jnp.asarray(frame_index, jnp.int32),
        key,
        **_options(steps, temperature, schedule, choice_temperature, use_cache),
    )


def advance(
    model: DynamicsModel,
    tokens: jax.Array,
    actions: jax.Array,
    count: jax.Array,
    action: jax.Array,
    key: jax.Array,
    **options,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """One step of a sliding-window rollout on fixed-shape buffers; traceable.

    `tokens` (B, T, N) holds `count` (traced, 1..T) filled frame slots and `actions` (B, T-1) the
    latent actions between them (actions[:, t] turned slot t into slot t+1; later slots are
    zero). `action` (B,) is taken at the newest frame. A full buffer first drops its oldest
    frame and the action leaving it (the freed slots are zeroed), so the model always sees at
    most T-1 frames of context. Returns the new buffers, the new count and the new frame's
    (B, N) tokens, sampled by `sample_frame` with `options` (steps, temperature, ...).

    This is the only rollout step of genie: `rollout` below loops it, and `genie.inference`
    compiles it (with decoding) for worlds stepped one frame at a time.
    """
    full = count == tokens.shape[1]
    shifted = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)
    shifted_actions = jnp.concatenate([actions[:, 1:], jnp.zeros_like(actions[:, :1])], axis=1)
    tokens = jnp.where(full, shifted, tokens)
    actions = jnp.where(full, shifted_actions, actions)
    index = jnp.where(full, count - 1, count)  # the slot to generate
    # The action leaving the newest frame (slot index - 1) turns it into frame `index`.
    actions = jax.lax.dynamic_update_index_in_dim(actions, action, index - 1, axis=1)
    frame = sample_frame(model, tokens, actions, index, key, **options)
    tokens = jax.lax.dynamic_update_index_in_dim(tokens, frame, index, axis=1)
    return tokens, actions, index + 1, frame


@functools.partial(jax.jit, static_argnames=_STATIC)
def _advance_compiled(graphdef, state, tokens, actions, count, action, key, **options):
    return advance(nnx.merge(graphdef, state), tokens, actions, count, action, key, **options)


def start_buffers(
    tokens: jax.Array, prompt_actions: jax.Array, window: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A (B, T0, N) prompt and its (B, T0-1) actions -> the fixed-shape buffers of `advance`:
    tokens (B, window, N) and actions (B, window-1) holding the prompt's last min(T0, window)
    frames and the actions between them, zero after, and the count of filled slots."""
    batch, prompt_frames, patches = tokens.shape
    kept = min(prompt_frames, window)
    buffer = jnp.zeros((batch, window, patches), jnp.int32)
    buffer = buffer.at[:, :kept].set(jnp.asarray(tokens[:, prompt_frames - kept :], jnp.int32))
    buffer_actions = jnp.zeros((batch, window - 1), jnp.int32)
    if kept > 1:
        kept_actions = jnp.asarray(prompt_actions[:, prompt_frames - kept :], jnp.int32)
        buffer_actions = buffer_actions.at[:, : kept - 1].set(kept_actions)
    return buffer, buffer_actions, jnp.int32(kept)


def rollout(
    model: DynamicsModel,
    tokens: jax.Array,
    actions: jax.Array,
    key: jax.Array,
    *,
    steps: int,
    temperature: float,
    schedule: str = "cosine",
    prompt_actions: jax.Array | None = None,
    choice_temperature: float = 0.0,
    use_cache: bool = True,
) -> jax.Array:
    """(B, T0, N) prompt, (B, H) actions -> (B, H, N) int32: H new frames, autoregressively.

    actions[:, h] is the action taken at the last frame so far, producing new frame h.
    prompt_actions (B, T0-1) are the latent actions between the prompt's frames (e.g. inferred by
    the LAM) and are required when T0 > 1: the model was trained with them.
    The context is a sliding window of the model's max_frames (`advance`: the newest
    max_frames - 1 frames plus the one being generated); every frame reuses one compiled
    `advance`, and new frame h is sampled with fold_in(key, h). The ids are checked and the
    model split once, before the first frame; `key` is one key or one per clip.
    """
    batch, prompt_frames, _ = tokens.shape
    window = model.max_frames
    if prompt_actions is None:
        if prompt_frames > 1:
            raise ValueError(
                f"a prompt of {prompt_frames} frames needs prompt_actions of shape "
                f"({batch}, {prompt_frames - 1}): the latent actions between its frames"
            )
        prompt_actions = jnp.zeros((batch, 0), jnp.int32)
    if prompt_actions.shape[1] != prompt_frames - 1:
        raise ValueError(
            f"prompt of {prompt_frames} frames needs {prompt_frames - 1} prompt_actions, "
            f"got {prompt_actions.shape[1]}"
        )
    if window < 2:
        raise ValueError(f"rollout needs a model with max_frames >= 2, got {window}")
    _check_key(key, batch)
    # Generated tokens are in range by construction: only the inputs need checking.
    _check_ids(model, tokens, jnp.concatenate([prompt_actions, actions], axis=1))
    graphdef, state = nnx.split(model)
    options = _options(steps, temperature, schedule, choice_temperature, use_cache)
    buffer, buffer_actions, count = start_buffers(tokens, prompt_actions, window)
    actions = jnp.asarray(actions, jnp.int32)
    new_frames = []
    for step in range(actions.shape[1]):
        buffer, buffer_actions, count, frame = _advance_compiled(
            graphdef,
            state,
            buffer,
            buffer_actions,
            count,
            actions[:, step],
            fold_in(key, step),
            **options,
        )
        new_frames.append(frame)
    return jnp.stack(new_frames, axis=1)
