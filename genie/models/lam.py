"""Latent action model (Genie, Bruce et al. 2024, section 2.1).

From the pixels of a clip x_1..x_T, infer one discrete latent action a_t per transition
x_t -> x_{t+1}, with no access to the true actions. Training is a reconstruction game: a decoder
that sees only the past x_1..x_t and the quantised a_t must predict x_{t+1}, so whatever the past
cannot explain about the next frame has to pass through a codebook of |A| codes (6 for CoinRun),
a bottleneck of log2 |A| bits that is far too small to smuggle the frame itself.

Design:
- Encoder: causal ST transformer over the patches of x_1..x_T. Frame t+1's outputs have seen
  x_1..x_{t+1}; mean-pooled over patches and projected to code_dim, they are the continuous
  latent of transition t, which the VQ turns into the action id. So actions[:, t] depends only on
  frames[:, :t+2]. With `encoder_lookahead` L > 0 the latent is read at frame min(t+1+L, T-1)
  instead, so it also sees where the action leads (it then depends on frames[:, :t+2+L]).
- Decoder: ST transformer over the patches of x_1..x_{T-1}. Every patch token of frame t
  receives the quantised a_t (concatenated to the patch before the input projection, i.e. a
  learned projection of a_t added to every token, scaled (LAMConfig.action_scale) to the
  pixels' order of magnitude; with `action_injection="every_block"` also added before every
  block), and frame t's outputs predict the change x_{t+1} - x_t. With `decoder_context="all"`
  the decoder is causal over time, so its prediction of x_{t+1} depends on x_1..x_t and
  a_1..a_t; with "last" it reads x_t and a_t only, each frame on its own (plus, with
  `decoder_motion`, the cost volume of x_{t-1} -> x_t: the motion so far, or with
  `decoder_motion_axes="vertical"` only its vertical part); with "rollout" it is causal over
  time but sees only the first `rollout_seen_frames` frames and feeds each later step its own
  prediction of the frame before, so from there on it carries the motion forward from the
  codes alone. With `decoder_screen_motion` every token is also told how the whole screen moves
  from x_t to x_{t+1} (the cost volume of that step averaged over the patches), so the code is
  left what that motion does not explain. With
  `decoder_output="kernels"` each output token also holds a softmax kernel that resamples its
  patch of x_t (`resample`), so the prediction is x_t moved plus a change (with
  `decoder_mirror` the kernel can also take from x_t mirrored left-right). With
  `decoder_hide_center` the decoder sees x_t with its central square (where a camera-centred
  game draws the agent) greyed out.
- Encoder inputs: the patches of each frame, optionally with their difference from the
  previous frame (`encoder_differences`) and a local cost volume of small shifts between the
  two (`motion_size`, `motion_costs`).
- Loss: pixel MSE (optionally weighted toward changed or central pixels, or divided by the
  repeat-the-last-frame error: `reconstruction_loss="relative"`, per transition with
  "relative_capped") plus the VQ terms; with `held_action_weight` also the same error of a_t
  predicting x_{t+2} from x_{t+1}, as if the action were held one step more.

Which of these options make the latent follow what moves in random-play CoinRun, and why
Genie's own choices collapse to one code at CPU scale, is measured in docs/ablations/lam.md.

Axes: B batch, T time, H W C pixels, N patches per frame, P patch size, D width, E code_dim.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange, repeat
from flax import nnx

from genie.config import LAMConfig
from genie.models.st_transformer import (
    STTransformer,
    patches_per_frame,
    patchify,
    unpatchify,
)
from genie.models.tokenizer import CHANNELS, check_frames, frames_to_unit, psnr, shrink_output
from genie.models.vq import check_codes, l2_normalize, quantizer_from_config

# A pixel counts as changed between x_t and x_{t+1} when a channel moves by more than this
# (about 13 of 255 levels), well above compression noise.
_CHANGED_PIXEL_THRESHOLD = 0.05


# Initial logit of the centre tap of a kernel decoder's kernels: softmax puts about 0.7 of the
# weight there against 24 zero logits (5x5), so training starts near "repeat the last frame"
# (plus a little blur) while the other taps keep gradients big enough to learn to move: at 7
# (0.98 at the centre) the softmax saturates and the kernels never leave the centre.
_CENTRE_TAP_LOGIT = 4.0
# Initial logit of every tap on the mirrored frame (`decoder_mirror`): their 25 weights together
# start at about 0.04 of the kernel, so the centre tap keeps about 0.67 and the decoder starts
# where the one without a mirror does, while each mirrored tap can still grow.
_MIRROR_TAP_LOGIT = -2.0


def _offsets(size: int) -> list[tuple[int, int]]:
    """The S x S offsets (dy, dx) in -S//2..S//2, row-major, as indices into a frame padded by
    S//2: the order of the last axis of `shifted_copies`, of kernels and of cost volumes."""
    return [(dy, dx) for dy in range(size) for dx in range(size)]


def _pad_edges(frames: jax.Array, size: int) -> jax.Array:
    radius = size // 2
    return jnp.pad(
        frames, ((0, 0), (0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge"
    )


def shifted_copies(frames: jax.Array, size: int) -> jax.Array:
    """(B, T, H, W, C) -> (B, T, H, W, C, S*S): copy k is frames[y+dy, x+dx] for the k-th
    row-major offset (dy, dx) in -S//2..S//2, the frame extended by its edge pixels."""
    height, width = frames.shape[2], frames.shape[3]
    padded = _pad_edges(frames, size)
    copies = [padded[:, :, dy : dy + height, dx : dx + width] for dy, dx in _offsets(size)]
    return jnp.stack(copies, axis=-1)


def _per_patch(pixels: jax.Array, patch_size: int) -> jax.Array:
    """(B, T, H, W, C) -> (B, T, H/P, P, W/P, P, C): a view in which a patch's pixels share
    the indices of axes 2 and 4 (a reshape: no data moves)."""
    b, t, h, w, c = pixels.shape
    p = patch_size
    return pixels.reshape(b, t, h // p, p, w // p, p, c)


def resample(frames: jax.Array, kernels: jax.Array, patch_size: int) -> jax.Array:
    """Moves pixels with one kernel per patch (CDNA, Finn et al. 2016).

    frames (B, T, H, W, C) float, kernels (B, T, N, S*S) weights summing to 1 over an S x S
    neighbourhood (the offsets of `shifted_copies`), one per patch of `patch_size` -> (B, T, H,
    W, C): out[y, x] = sum over (dy, dx) of kernel[patch of (y, x)][dy, dx] * frames[y+dy, x+dx].
    A one-hot kernel at offset (0, -1) shifts the patch's content one pixel to the right.

    One weighted sum over the S*S shifted views, which XLA fuses into one pass: the S*S
    shifted copies (25x the frames) are never stored, here or in the gradient.
    """
    size = math.isqrt(kernels.shape[-1])
    b, t, height, width, c = frames.shape
    p = patch_size
    grid = kernels.reshape(b, t, height // p, 1, width // p, 1, 1, size * size)
    padded = _pad_edges(frames, size)
    out = jnp.zeros(_per_patch(frames, p).shape, jnp.result_type(frames, kernels))
    for k, (dy, dx) in enumerate(_offsets(size)):
        moved = _per_patch(padded[:, :, dy : dy + height, dx : dx + width], p)
        out = out + moved * grid[..., k]
    return out.reshape(frames.shape)


def motion_costs(pixels: jax.Array, patch_size: int, size: int) -> jax.Array:
    """Local cost volume (FlowNet's correlation layer, Dosovitskiy et al. 2015, in its simplest
    form): (B, T, H, W, C) float -> (B, T, N, S*S), for frame t >= 1 and each offset (dy, dx)
    of `shifted_copies`, the mean squared error of x_{t-1} moved by that offset against x_t
    over each patch, standardised over the offsets; zero for frame 0. Motion becomes an input
    the encoder reads instead of something it must learn to compute. Each offset's error is
    reduced over its patches as it is computed (no S*S copies of the frames are stored)."""
    previous, following = pixels[:, :-1], pixels[:, 1:]
    b, t, height, width, _ = following.shape
    padded = _pad_edges(previous, size)
    errors = []
    for dy, dx in _offsets(size):
        moved = padded[:, :, dy : dy + height, dx : dx + width]
        error = _per_patch((moved - following) ** 2, patch_size).mean(axis=(3, 5, 6))
        errors.append(error.reshape(b, t, -1))
    scaled = _standardize(jnp.stack(errors, axis=-1))  # (B, T-1, N, S*S)
    return jnp.concatenate([jnp.zeros_like(scaled[:, :1]), scaled], axis=1)


def _standardize(costs: jax.Array) -> jax.Array:
    """Cost volumes (..., S*S) centred and scaled to unit RMS over their offsets: which shift
    fits, not how much the frame changed."""
    centred = costs - costs.mean(-1, keepdims=True)
    return centred / (jnp.sqrt(jnp.mean(centred**2, -1, keepdims=True)) + 1e-6)


def check_actions(actions, num_actions: int) -> None:
    """Raises "action 7 is outside the codebook of 6 latent actions (0..5)" for a concrete id
    outside 0..num_actions-1; traced actions pass unchecked."""
    check_codes(actions, num_actions, name="action", codebook="latent actions")


class LatentActionModel(nnx.Module):
    def __init__(
        self,
        config: LAMConfig,
        *,
        image_size: int,
        max_frames: int,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if max_frames < 2:
            raise ValueError(f"a latent action needs two frames; max_frames is {max_frames}")
        self.image_size, self.patch_size = image_size, config.patch_size
        self.num_patches = patches_per_frame(image_size, config.patch_size)
        self.num_actions = config.num_codes
        self.code_dim = config.code_dim
        self.changed_pixel_weight = config.changed_pixel_weight
        self.decoder_context = config.decoder_context
        self.reconstruction_loss = config.reconstruction_loss
        self.bottleneck = config.bottleneck
        uses_center = config.center_weight or config.decoder_hide_center
        if uses_center and not 0 < config.center_size <= image_size:
            raise ValueError(f"center_size {config.center_size} must be in 1..{image_size}")
        self.center_weight, self.center_size = config.center_weight, config.center_size
        self.decoder_hide_center = config.decoder_hide_center
        self.encoder_lookahead = config.encoder_lookahead
        if config.held_action_weight and max_frames < 3:
            raise ValueError(
                f"held_action_weight needs clips of 3 frames; max_frames is {max_frames}"
            )
        self.held_action_weight = config.held_action_weight
        self.rollout_seen_frames = config.rollout_seen_frames
        if config.decoder_context == "rollout":
            if config.rollout_seen_frames < 1:
                raise ValueError(
                    f"rollout_seen_frames must be >= 1, got {config.rollout_seen_frames}"
                )
            if config.held_action_weight:
                raise ValueError(
                    'held_action_weight re-decodes from x_{t+1}: it needs decoder_context "last" '
                    'or "all", not "rollout"'
                )
        if config.encoder_lookahead < 0:
            raise ValueError(f"encoder_lookahead must be >= 0, got {config.encoder_lookahead}")
        patch_dim = config.patch_size**2 * CHANNELS
        scaled_dim = config.code_dim if config.action_scale == "entry" else patch_dim
        self.action_input_scale = math.sqrt(scaled_dim)
        kw = dict(num_patches=self.num_patches, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        width = config.encoder.width
        self.encoder_differences = config.encoder_differences
        self.motion_size = config.motion_size
        if config.decoder_motion and not config.motion_size:
            raise ValueError("decoder_motion reads the motion cost volume: set motion_size > 0")
        self.decoder_motion = config.decoder_motion
        self.decoder_motion_axes = config.decoder_motion_axes
        if config.decoder_screen_motion and not config.motion_size:
            raise ValueError("decoder_screen_motion averages the cost volume: set motion_size > 0")
        self.decoder_screen_motion = config.decoder_screen_motion
        motion_features = config.motion_size ** (2 if config.decoder_motion_axes == "both" else 1)
        decoder_motion_in = motion_features if config.decoder_motion else 0
        decoder_motion_in += config.motion_size**2 if config.decoder_screen_motion else 0
        encoder_in = 2 * patch_dim if config.encoder_differences else patch_dim
        encoder_in += config.motion_size**2
        self.encoder = STTransformer(encoder_in, width, config.encoder, max_frames=max_frames, **kw)
        self.action_projection = nnx.Linear(
            width, config.code_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.vq = quantizer_from_config(config, rngs=rngs)
        every_block = config.action_injection == "every_block"
        self.kernel_size = config.kernel_size if config.decoder_output == "kernels" else 0
        if config.decoder_output == "kernels" and config.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {config.kernel_size}")
        if config.decoder_mirror and not self.kernel_size:
            raise ValueError('decoder_mirror adds kernel taps: set decoder_output="kernels"')
        self.decoder_mirror = config.decoder_mirror
        taps = self.kernel_size**2 * (2 if config.decoder_mirror else 1)
        self.decoder = STTransformer(
            patch_dim + decoder_motion_in + config.code_dim,
            patch_dim + taps,
            config.decoder,
            max_frames=1 if config.decoder_context == "last" else max_frames - 1,
            condition_features=config.code_dim if every_block else 0,
            **kw,
        )
        # Start close to "repeat the last frame" instead of adding unit-scale noise to it: a
        # small change and, for kernels, most of the weight on the centre tap.
        shrink_output(self.decoder)
        if self.kernel_size:
            bias = self.decoder.output_projection.bias
            bias[...] = bias[...].at[patch_dim + self.kernel_size**2 // 2].set(_CENTRE_TAP_LOGIT)
            if self.decoder_mirror:
                mirrored = patch_dim + self.kernel_size**2
                bias[...] = bias[...].at[mirrored:].set(_MIRROR_TAP_LOGIT)

    def _check(self, frames: jax.Array) -> None:
        check_frames(frames, self.image_size, "the latent action model")
        if frames.shape[1] < 2:
            raise ValueError(f"inferring actions needs at least 2 frames, got {frames.shape[1]}")

    def motion(self, frames: jax.Array) -> jax.Array | None:
        """(B, T, H, W, C) uint8 -> (B, T, N, S*S) cost volume of each frame against the one
        before (`motion_costs`; zero for frame 0), or None without `motion_size`. Frame t's
        costs depend on x_{t-1} and x_t only, so the encoder's costs for a clip, cut before its
        last frame, are the decoder's: `__call__` computes them once for both."""
        if not self.motion_size:
            return None
        pixels = frames_to_unit(frames) * 2.0 - 1.0
        return motion_costs(pixels, self.patch_size, self.motion_size)

    def encode(self, frames: jax.Array, motion: jax.Array | None = None) -> jax.Array:
        """(B, T, H, W, C) uint8 -> (B, T-1, E) continuous latent actions. `motion`: the
        clip's `self.motion(frames)` where already computed."""
        self._check(frames)
        pixels = frames_to_unit(frames) * 2.0 - 1.0
        patches = patchify(pixels, self.patch_size)  # (B, T, N, P*P*C)
        if self.encoder_differences:
            change = jnp.diff(patches, axis=1, prepend=patches[:, :1])  # frame 0: zero change
            patches = jnp.concatenate([patches, change], axis=-1)
        if self.motion_size:
            costs = self.motion(frames) if motion is None else motion
            patches = jnp.concatenate([patches, costs.astype(patches.dtype)], axis=-1)
        features = self.encoder(patches)  # (B, T, N, D)
        # Transition t -> t+1 is read at frame t+1+L (capped), whose outputs have seen
        # x_1..x_{t+1+L}. The mean over N patches accumulates in float32 whatever the dtype.
        frames_count = frames.shape[1]
        read_at = np.minimum(np.arange(1, frames_count) + self.encoder_lookahead, frames_count - 1)
        pooled = features[:, read_at].astype(jnp.float32).mean(axis=2)
        return self.action_projection(pooled)

    def decode(
        self, frames: jax.Array, latent_actions: jax.Array, motion: jax.Array | None = None
    ) -> jax.Array:
        """Frames (B, T, H, W, C) uint8 and (B, T-1, E) unit-norm actions -> (B, T-1, H, W, C).

        Output t predicts frames[:, t+1] from frames[:, :t+1] and latent_actions[:, :t+1]
        (decoder_context "all"), from frames[:, t] and latent_actions[:, t] alone ("last"), or
        from frames[:, :min(t+1, S)] (S = rollout_seen_frames), output t-1 and
        latent_actions[:, :t+1] ("rollout").
        `motion`: the clip's `self.motion(frames)` where already computed.
        """
        context = frames_to_unit(frames[:, :-1])
        if self.decoder_hide_center:
            # Mid-grey where the agent is drawn: its next look has to come from the action.
            hidden = center_weights(self.image_size, self.center_size, 1.0) > 1.0
            context = jnp.where(hidden, 0.5, context)
        patches = patchify(context * 2.0 - 1.0, self.patch_size)  # (B, T-1, N, P*P*C)
        if self.decoder_motion:
            # Frame t's costs compare x_{t-1} with x_t (zero for the first frame): the motion
            # so far, never the motion to come.
            costs = self.motion(frames[:, :-1]) if motion is None else motion[:, :-1]
            if self.decoder_motion_axes == "vertical":
                # Offsets are (dy, dx) row-major: each row's best horizontal match.
                costs = costs.reshape(*costs.shape[:-1], self.motion_size, -1).min(axis=-1)
            patches = jnp.concatenate([patches, costs.astype(patches.dtype)], axis=-1)
        if self.decoder_screen_motion:
            # Frame t+1's costs, x_t -> x_{t+1}, averaged over the patches and scaled again.
            following = self.motion(frames)[:, 1:] if motion is None else motion[:, 1:]
            screen = _standardize(following.astype(jnp.float32).mean(axis=2, keepdims=True))
            screen = jnp.broadcast_to(screen, (*patches.shape[:3], screen.shape[-1]))
            patches = jnp.concatenate([patches, screen.astype(patches.dtype)], axis=-1)
        steps = patches.shape[1]
        if self.decoder_context == "rollout":
            # The frames after the seen ones (and their motion) are hidden: zero, mid-grey.
            seen = np.arange(steps) < self.rollout_seen_frames
            patches = patches * seen[None, :, None, None]
        # Unit-norm codes have per-entry RMS 1/sqrt(E); scale them to the pixels' order of
        # magnitude (per entry, or as a whole against the P*P*C pixel values: action_scale) so
        # the action is not a faint whisper next to the pixels.
        action = latent_actions.astype(jnp.float32) * self.action_input_scale
        tokens = repeat(action, "b t e -> b t n e", n=self.num_patches)
        inputs = jnp.concatenate([patches, tokens], axis=-1)  # (B, T-1, N, P*P*C+E)
        condition = action[:, :, None, :] if self.decoder.condition_projections else None
        if self.decoder_context == "last":
            # Each transition on its own: (B, T-1, ...) -> (B*(T-1), 1, ...), no history.
            inputs = rearrange(inputs, "b t n f -> (b t) 1 n f")
            if condition is not None:
                condition = rearrange(condition, "b t n e -> (b t) 1 n e")
            delta = self.decoder(inputs, condition)
            delta = rearrange(delta, "(b t) 1 n f -> b t n f", t=steps)
        else:
            delta = self.decoder(inputs, condition)
        delta = delta.astype(jnp.float32)
        if self.decoder_context != "rollout":
            return self._move(context, delta)
        # Open loop: from the last seen frame on, each step moves the step before's prediction
        # (clipped to the pixel range, so an early mistake cannot blow up the later ones).
        predictions, frame = [], context[:, :1]
        for t in range(steps):
            if t < self.rollout_seen_frames:
                frame = context[:, t : t + 1]
            predictions.append(self._move(frame, delta[:, t : t + 1]))
            frame = jnp.clip(predictions[-1], 0.0, 1.0)
        return jnp.concatenate(predictions, axis=1)

    def _move(self, context: jax.Array, delta: jax.Array) -> jax.Array:
        """Frames (B, T', H, W, C) in [0, 1] and the decoder's outputs for them (B, T', N, F)
        -> the next frames: the frames plus a change, or with kernels resampled plus a change."""
        size = self.image_size
        if not self.kernel_size:
            return context + unpatchify(delta, self.patch_size, size, size)
        taps = self.kernel_size**2
        patch_dim = self.patch_size**2 * CHANNELS
        change, logits = delta[..., :patch_dim], delta[..., patch_dim:]
        weights = jax.nn.softmax(logits, axis=-1)
        moved = resample(context, weights[..., :taps], self.patch_size)
        if self.decoder_mirror:
            # The same kernel's other taps read x_t mirrored left-right (axis 3: width).
            moved = moved + resample(context[:, :, :, ::-1], weights[..., taps:], self.patch_size)
        return moved + unpatchify(change, self.patch_size, size, size)

    def infer_actions(self, frames: jax.Array) -> jax.Array:
        """(B, T, H, W, C) uint8 -> (B, T-1) int32; actions[:, t] explains frame t -> t+1."""
        _, actions, _ = self.vq(self.encode(frames), training=False)
        return actions

    def reconstruct(
        self, frames: jax.Array, actions: jax.Array, motion: jax.Array | None = None
    ) -> jax.Array:
        """(B, T, H, W, C) uint8 frames, (B, T-1) int32 actions -> predictions of frames[:, 1:].
        `motion`: the clip's `self.motion(frames)` where already computed."""
        self._check(frames)
        expected = (frames.shape[0], frames.shape[1] - 1)
        if actions.shape != expected:
            raise ValueError(f"expected actions of shape {expected}, got {tuple(actions.shape)}")
        check_actions(actions, self.num_actions)
        return self.decode(frames, self.vq.lookup(actions), motion)

    def __call__(
        self, frames: jax.Array, *, training: bool = False, key: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """(B, T, H, W, C) uint8 -> reconstruction (B, T-1, H, W, C), actions (B, T-1), VQ aux."""
        motion = self.motion(frames)
        latent = self.encode(frames, motion)
        quantized, actions, aux = self.vq(latent, training=training, key=key)
        if self.bottleneck == "continuous":
            quantized = l2_normalize(latent.astype(jnp.float32))
        reconstruction = self.decode(frames, quantized, motion)
        return {
            "reconstruction": reconstruction,
            "actions": actions,
            "quantized": quantized,
            "motion": motion,
            **aux,
        }

    def reset_dead_codes(self, key: jax.Array) -> jax.Array:
        return self.vq.reset_dead_codes(key)


def center_weights(image_size: int, center_size: int, center_weight: float) -> np.ndarray:
    """(H, W, 1) float32: 1 + center_weight inside the central center_size square, 1 outside."""
    low = (image_size - center_size) // 2
    weights = np.ones((image_size, image_size, 1), np.float32)
    weights[low : low + center_size, low : low + center_size] += center_weight
    return weights


def _reconstruction_term(
    model: LatentActionModel, prediction: jax.Array, target: jax.Array, before: jax.Array
) -> jax.Array:
    """The reconstruction loss of float `prediction` of uint8 frames `target`, each predicted
    from the uint8 frame in `before` (all (B, T', H, W, C)): pixel MSE weighted as the model's
    options say (changed pixels, the centre), in repeat-the-last-frame units unless "mse"."""
    target, before = frames_to_unit(target), frames_to_unit(before)
    squared_error = (prediction - target) ** 2
    # Most pixels repeat x_t; weighting the ones that change keeps the action's small share of
    # the error from vanishing in the mean (LAMConfig.changed_pixel_weight).
    change = jnp.abs(target - before).max(axis=-1, keepdims=True)
    weight = 1.0 + model.changed_pixel_weight * (change > _CHANGED_PIXEL_THRESHOLD)
    weight = weight * center_weights(target.shape[2], model.center_size, model.center_weight)
    reconstruction = jnp.mean(weight * squared_error)
    if model.reconstruction_loss == "mse":
        return reconstruction
    # In units of the batch's own change: 1 is no better than repeating x_t. Raw pixel MSE is
    # about 0.01 here, so its gradient would be a whisper next to the VQ terms (about 0.1-1),
    # which then decide alone where the encoder's latents go.
    repeat = weight * (target - before) ** 2
    unit = jnp.maximum(jnp.mean(repeat), 1e-6)
    if model.reconstruction_loss == "relative_capped":
        # Each transition in its own units where it changes more than the batch's mean.
        pixel_axes = (2, 3, 4)
        unit = jnp.maximum(jnp.mean(repeat, axis=pixel_axes), unit)  # (B, T')
        error = jnp.mean(weight * squared_error, axis=pixel_axes)
        return jnp.mean(error / jax.lax.stop_gradient(unit))
    return reconstruction / jax.lax.stop_gradient(unit)


def lam_loss(
    model: LatentActionModel, frames: jax.Array, key: jax.Array, diagnostics: bool = True
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MSE of the predicted next frames + VQ terms on a (B, T, H, W, C) uint8 batch (training).

    With `diagnostics`, also 'action_gain': the MSE under uniformly random actions minus the
    MSE under the inferred ones (no gradient); above 0 means the decoder uses the action. It
    costs a second decoder pass (the `coinrun_tiny` LAM trains at 532 frames/s without it,
    477 with it, on a 2-core CPU), so the training step leaves it to validation; the loss is
    the same either way.
    """
    vq_key, action_key = jax.random.split(key)
    out = model(frames, training=True, key=vq_key)
    target = frames_to_unit(frames[:, 1:])
    mse = jnp.mean((out["reconstruction"] - target) ** 2)
    if model.decoder_context == "rollout":
        # Each step in units of repeating the last frame the decoder saw, so that the far
        # steps, whose error grows with the horizon, count no more than the near ones.
        steps = frames.shape[1] - 1
        last_seen = np.minimum(np.arange(steps), model.rollout_seen_frames - 1)
        terms = [
            _reconstruction_term(
                model,
                out["reconstruction"][:, t : t + 1],
                frames[:, t + 1 : t + 2],
                frames[:, last_seen[t] : last_seen[t] + 1],
            )
            for t in range(steps)
        ]
        reconstruction = jnp.mean(jnp.stack(terms))
    else:
        reconstruction = _reconstruction_term(
            model, out["reconstruction"], frames[:, 1:], frames[:, :-1]
        )
    if model.held_action_weight:
        # a_t on x_{t+1} -> x_{t+2}: the clip from x_{t+1} on with the actions moved one step
        # later (its first frame keeps its real motion so far, x_t -> x_{t+1}).
        motion = None if out["motion"] is None else out["motion"][:, 1:]
        held = model.decode(frames[:, 1:], out["quantized"][:, :-1], motion)
        held_term = _reconstruction_term(model, held, frames[:, 2:], frames[:, 1:-1])
        reconstruction = reconstruction + model.held_action_weight * held_term
    loss = reconstruction + out["codebook_loss"] + out["commitment_loss"]
    usage = out["usage"]
    metrics = {
        "loss": loss,
        "mse": mse,
        "psnr": psnr(mse),
        "codebook_loss": out["codebook_loss"],
        "commitment_loss": out["commitment_loss"],
        "perplexity": out["perplexity"],
        "code_usage_max": jnp.max(usage) / jnp.maximum(jnp.sum(usage), 1),
    }
    if diagnostics:
        shape, count = out["actions"].shape, model.num_actions
        random_actions = jax.random.randint(action_key, shape, 0, count)
        random_prediction = model.reconstruct(frames, random_actions, out["motion"])
        random_mse = jnp.mean((jax.lax.stop_gradient(random_prediction) - target) ** 2)
        metrics["action_gain"] = random_mse - jax.lax.stop_gradient(mse)
    return loss, metrics
