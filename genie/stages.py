"""The three training stages: what each one builds, reads, optimises and draws.

The training loop in `genie.train` is shared; a `Stage` supplies only its model, the frozen
models it reads (the dynamics stage reads the tokenizer and the LAM), how a batch of frames
becomes the loss inputs, the loss itself and the pictures saved during training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie import plots
from genie.config import Config
from genie.models.dynamics import DynamicsModel, dynamics_loss
from genie.models.lam import LatentActionModel, lam_loss
from genie.models.maskgit import rollout
from genie.models.st_transformer import patches_per_frame
from genie.models.tokenizer import VideoTokenizer, tokenizer_loss, unit_to_uint8


def build_model(config: Config, stage: str, rngs: nnx.Rngs) -> nnx.Module:
    """The freshly initialised model of `stage`, sized from `config`."""
    data = config.data
    precision = dict(dtype=config.compute_dtype, param_dtype=config.param_dtype, rngs=rngs)
    if stage == "tokenizer":
        return VideoTokenizer(
            config.tokenizer, image_size=data.image_size, max_frames=data.clip_frames, **precision
        )
    if stage == "lam":
        return LatentActionModel(
            config.lam, image_size=data.image_size, max_frames=data.clip_frames, **precision
        )
    if stage == "dynamics":
        return DynamicsModel(
            config.dynamics,
            num_codes=config.tokenizer.num_codes,
            num_actions=config.lam.num_codes,
            num_patches=patches_per_frame(data.image_size, config.tokenizer.patch_size),
            max_frames=data.clip_frames,
            **precision,
        )
    raise ValueError(f"unknown stage {stage!r}")


@dataclass(frozen=True)
class Stage:
    name: str
    # (model, inputs, key) -> (scalar loss, dict of scalar metrics)
    loss: Callable
    # (frozen models, uint8 frames (B,T,H,W,3)) -> loss inputs; runs inside the jitted step
    prepare: Callable = lambda frozen, frames: frames
    # (model, frozen models, uint8 frames, key) -> uint8 image (H, W, 3)
    images: Callable = None
    frozen: tuple[str, ...] = ()


def _dynamics_inputs(frozen, frames):
    tokenizer, lam = frozen["tokenizer"], frozen["lam"]
    return tokenizer.tokenize(frames), lam.infer_actions(frames)


def _dynamics_loss(model, inputs, key):
    tokens, actions = inputs
    return dynamics_loss(model, tokens, actions, key)


# Pictures saved during training: rows of frames, each under a caption saying what it is.


def captioned_rows(rows: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """(caption, uint8 (T, H, W, 3) frames) pairs -> one uint8 image: each row of frames drawn
    by `plots.image_grid` under its caption (`plots.label_image`), rows stacked top to bottom."""
    drawn = [plots.label_image(plots.image_grid(frames[None]), text) for text, frames in rows]
    width = max(image.shape[1] for image in drawn)
    padded = [
        np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=255)
        for image in drawn
    ]
    return np.concatenate(padded, axis=0)


@nnx.jit
def _reconstruct(tokenizer: VideoTokenizer, frames: jax.Array) -> jax.Array:
    return unit_to_uint8(tokenizer.decode(tokenizer.tokenize(frames)))


def tokenizer_images(model, frozen, frames, key, *, clips: int = 4, max_frames: int = 8):
    """Per clip two captioned rows: the real frames, then decode(tokenize(frames))."""
    frames = jnp.asarray(frames[:clips, :max_frames])
    reconstruction = np.asarray(_reconstruct(model, frames))
    rows = []
    for clip, (real, decoded) in enumerate(zip(np.asarray(frames), reconstruction, strict=True)):
        rows += [(f"clip {clip + 1}: real", real), (f"clip {clip + 1}: reconstruction", decoded)]
    return captioned_rows(rows)


@nnx.jit
def _lam_predictions(lam: LatentActionModel, frames: jax.Array, key: jax.Array):
    """Predictions of frames[:, 1:] under the inferred and under uniformly random actions."""
    actions = lam.infer_actions(frames)
    random_actions = jax.random.randint(key, actions.shape, 0, lam.num_actions)
    predicted = lam.reconstruct(frames, actions)
    return unit_to_uint8(predicted), unit_to_uint8(lam.reconstruct(frames, random_actions))


def lam_images(model, frozen, frames, key, *, clips: int = 2, max_frames: int = 8):
    """Per clip three captioned rows: the real next frames x_2..x_T, the decoder's predictions
    of them under the inferred actions, and under uniformly random actions. A LAM whose actions
    carry information predicts the real row better from the inferred actions."""
    frames = jnp.asarray(frames[:clips, :max_frames])
    inferred, random = map(np.asarray, _lam_predictions(model, frames, key))
    real = np.asarray(frames[:, 1:])
    rows = []
    for clip in range(frames.shape[0]):
        name = f"clip {clip + 1}"
        rows += [
            (f"{name}: real", real[clip]),
            (f"{name}: inferred action", inferred[clip]),
            (f"{name}: random action", random[clip]),
        ]
    return captioned_rows(rows)


@nnx.jit
def _encode(tokenizer: VideoTokenizer, lam: LatentActionModel, frames: jax.Array):
    return tokenizer.tokenize(frames), lam.infer_actions(frames)


@nnx.jit
def _decode(tokenizer: VideoTokenizer, tokens: jax.Array) -> jax.Array:
    return unit_to_uint8(tokenizer.decode(tokens))


def dynamics_images(model, frozen, frames, key, *, context: int = 2, clips: int = 4):
    """Per clip two captioned rows: the real clip, then the clip generated from its first
    `context` real frames and the latent actions the LAM infers from the real clip."""
    tokenizer, lam = frozen["tokenizer"], frozen["lam"]
    frames = jnp.asarray(frames[:clips])
    tokens, actions = _encode(tokenizer, lam, frames)
    config = model.config
    generated = rollout(
        model,
        tokens[:, :context],
        actions[:, context - 1 :],
        key,
        prompt_actions=actions[:, : context - 1],
        steps=config.maskgit_steps,
        temperature=config.temperature,
        schedule=config.mask_schedule,
    )
    video = np.asarray(_decode(tokenizer, jnp.concatenate([tokens[:, :context], generated], 1)))
    rows = []
    for clip, (real, fake) in enumerate(zip(np.asarray(frames), video, strict=True)):
        rows += [
            (f"clip {clip + 1}: real", real),
            (f"clip {clip + 1}: generated from {context} frames + LAM actions", fake),
        ]
    return captioned_rows(rows)


STAGE_SPECS: dict[str, Stage] = {
    "tokenizer": Stage("tokenizer", loss=tokenizer_loss, images=tokenizer_images),
    "lam": Stage("lam", loss=lam_loss, images=lam_images),
    "dynamics": Stage(
        "dynamics",
        loss=_dynamics_loss,
        prepare=_dynamics_inputs,
        images=dynamics_images,
        frozen=("tokenizer", "lam"),
    ),
}
