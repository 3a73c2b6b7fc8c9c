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
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie.models.dynamics import DynamicsModel

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
    sampled tokens are random already at temperature 1.
    """
    batch, frames, patches = tokens.shape
    frame_index = jnp.asarray(frame_index, jnp.int32)
    counts = jnp.asarray(masked_counts(patches, steps, schedule))

    if use_cache:
        cache = model.prefill(tokens, actions)

        def predict(frame_tokens, frame_mask):
            return model.decode_frame(frame_tokens, frame_mask, actions, frame_index, cache)

    else:
        clip_mask = jnp.zeros(tokens.shape, bool)

        def predict(frame_tokens, frame_mask):
            clip = jax.lax.dynamic_update_index_in_dim(tokens, frame_tokens, frame_index, axis=1)
            mask = jax.lax.dynamic_update_index_in_dim(clip_mask, frame_mask, frame_index, axis=1)
            logits = model(clip, actions, mask)
            return jax.lax.dynamic_index_in_dim(logits, frame_index, axis=1, keepdims=False)

    def refine(step, carry):
        frame_tokens, frame_mask = carry
        logits = predict(frame_tokens, frame_mask)  # (B, N, K)
        sample_key, choice_key = jax.random.split(jax.random.fold_in(key, step))
        if temperature == 0:
            sampled = logits.argmax(-1).astype(jnp.int32)
        else:
            sampled = jax.random.categorical(sample_key, logits / temperature).astype(jnp.int32)
        log_probs = jax.nn.log_softmax(logits)
        confidence = jnp.take_along_axis(log_probs, sampled[..., None], axis=-1)[..., 0]
        if choice_temperature > 0:
            anneal = choice_temperature * (1.0 - (step + 1) / steps)
            confidence = confidence + anneal * jax.random.gumbel(choice_key, confidence.shape)
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


def _check_ids(name: str, ids, count: int) -> None:
    if isinstance(ids, jax.core.Tracer) or np.size(ids) == 0:
        return
    ids = np.asarray(ids)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= count:
        bad = low if low < 0 else high
        raise ValueError(
            f"{name} {bad} is outside the codebook of {count} ({name}s 0..{count - 1})"
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
    _check_ids("token", tokens, model.num_codes)
    _check_ids("latent action", actions, model.num_actions)
    graphdef, state = nnx.split(model)
    return _sample_frame_compiled(
        graphdef,
        state,
        jnp.asarray(tokens, jnp.int32),
        jnp.asarray(actions, jnp.int32),
        jnp.asarray(frame_index, jnp.int32),
        key,
        steps=steps,
        temperature=float(temperature),
        schedule=schedule,
        choice_temperature=float(choice_temperature),
        use_cache=use_cache,
    )


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
    The context is a sliding window of the model's max_frames (the newest max_frames - 1 frames
    plus the one being generated); every frame reuses one compiled `sample_frame_jit`.
    """
    batch, prompt_frames, patches = tokens.shape
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
    history = jnp.asarray(tokens, jnp.int32)
    history_actions = jnp.asarray(prompt_actions, jnp.int32)
    new_frames = []
    for step in range(actions.shape[1]):
        history_actions = jnp.concatenate([history_actions, actions[:, step : step + 1]], axis=1)
        context = history[:, -(window - 1) :]
        frame_index = context.shape[1]
        # Fixed-shape buffers: window frame slots, window - 1 action slots, zero padding after.
        buffer = jnp.zeros((batch, window, patches), jnp.int32).at[:, :frame_index].set(context)
        buffer_actions = jnp.zeros((batch, window - 1), jnp.int32)
        buffer_actions = buffer_actions.at[:, :frame_index].set(history_actions[:, -frame_index:])
        frame = sample_frame_jit(
            model,
            buffer,
            buffer_actions,
            jnp.int32(frame_index),
            jax.random.fold_in(key, step),
            steps=steps,
            temperature=temperature,
            schedule=schedule,
            choice_temperature=choice_temperature,
            use_cache=use_cache,
        )
        new_frames.append(frame)
        history = jnp.concatenate([history[:, -(window - 1) :], frame[:, None]], axis=1)
        history_actions = history_actions[:, -(window - 1) :]
    return jnp.stack(new_frames, axis=1)
