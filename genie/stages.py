"""The three training stages: what each one builds, reads, optimises and draws.

The training loop in `genie.train` is shared; a `Stage` supplies only its model, the frozen
models it reads (the dynamics stage reads the tokenizer and the LAM), how a batch of frames
becomes the loss inputs, the loss itself and the pictures saved during training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie.config import Config
from genie.models.dynamics import DynamicsModel, dynamics_loss
from genie.models.lam import LatentActionModel, lam_images, lam_loss
from genie.models.maskgit import rollout
from genie.models.tokenizer import VideoTokenizer, tokenizer_images, tokenizer_loss
from genie.plots import image_grid


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
            num_patches=(data.image_size // config.tokenizer.patch_size) ** 2,
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


def dynamics_images(model, frozen, frames, key, *, context: int = 2, clips: int = 4):
    """Rows: real clip, then the clip generated from `context` real frames and the LAM's actions."""
    tokenizer, lam = frozen["tokenizer"], frozen["lam"]
    frames = frames[:clips]
    tokens, actions = tokenizer.tokenize(frames), lam.infer_actions(frames)
    config = model.config
    generated = rollout(
        model,
        tokens[:, :context],
        actions[:, context - 1 :],
        key,
        prompt_actions=actions[:, : context - 1],
        steps=config.maskgit_steps,
        temperature=config.temperature,
    )
    video = tokenizer.decode(jnp.concatenate([tokens[:, :context], generated], axis=1))
    real = np.asarray(frames)
    fake = np.asarray(jnp.clip(video * 255.0 + 0.5, 0, 255)).astype(np.uint8)
    rows = np.stack([real, fake], axis=1).reshape(-1, *real.shape[1:])  # real/generated pairs
    return image_grid(rows)


STAGE_SPECS: dict[str, Stage] = {
    "tokenizer": Stage(
        "tokenizer", loss=tokenizer_loss, images=lambda m, f, x, k: tokenizer_images(m, x)
    ),
    "lam": Stage("lam", loss=lam_loss, images=lambda m, f, x, k: lam_images(m, x)),
    "dynamics": Stage(
        "dynamics",
        loss=_dynamics_loss,
        prepare=_dynamics_inputs,
        images=dynamics_images,
        frozen=("tokenizer", "lam"),
    ),
}
