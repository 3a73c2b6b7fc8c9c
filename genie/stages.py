"""The training stages: a registry of which models each stage trains, which it only reads, its
loss and the pictures it saves.

The training loop in `genie.train` is shared. A `Stage` in `STAGE_SPECS` declares the models it
trains (`trains`: one or several, by name) and the trained models it reads, frozen, from the
same run folder (`frozen`); the loop differentiates its loss with respect to the trainable
models only. A new variant (another co-training recipe, a fine-tuning stage) is one more entry,
plus its name in `genie.config.STAGES` and a `train_<stage>` field in `Config`.

    tokenizer     the tokenizer
    lam           the latent action model
    dynamics      the dynamics model, on the frozen tokenizer's tokens and frozen LAM's actions
    lam_dynamics  the LAM and the dynamics model together, on the frozen tokenizer's tokens:
                  co-training (Genie section 2.1; `Config.cotrain_stop_gradient`)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie import plots
from genie.config import MODELS, STAGES, Config, Model
from genie.inference import Engine
from genie.models.dynamics import DynamicsModel, dynamics_loss
from genie.models.lam import LatentActionModel, lam_loss
from genie.models.st_transformer import patches_per_frame
from genie.models.tokenizer import VideoTokenizer, tokenizer_loss, unit_to_uint8
from genie.models.vq import first_argmax


def build_model(config: Config, name: Model, rngs: nnx.Rngs) -> nnx.Module:
    """The freshly initialised model `name` (one of MODELS), sized from `config`."""
    data = config.data
    precision = dict(dtype=config.compute_dtype, param_dtype=config.param_dtype, rngs=rngs)
    if name == "tokenizer":
        return VideoTokenizer(
            config.tokenizer, image_size=data.image_size, max_frames=data.clip_frames, **precision
        )
    if name == "lam":
        return LatentActionModel(
            config.lam, image_size=data.image_size, max_frames=data.clip_frames, **precision
        )
    if name == "dynamics":
        return DynamicsModel(
            config.dynamics,
            num_codes=config.tokenizer.num_codes,
            num_actions=config.lam.num_codes,
            num_patches=patches_per_frame(data.image_size, config.tokenizer.patch_size),
            max_frames=data.clip_frames,
            code_levels=config.tokenizer.fsq_levels if config.tokenizer.quantizer == "fsq" else (),
            **precision,
        )
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


@dataclass(frozen=True)
class Stage:
    name: str
    # The models this stage optimises, by name (MODELS); each gets its own optimizer.
    trains: tuple[Model, ...]
    # (trainable models, frozen models, uint8 frames (B,T,H,W,3), key, *, config, diagnostics)
    #   -> (scalar loss, dict of scalar metrics); differentiated w.r.t. the trainable models.
    #   Runs inside the jitted train step with diagnostics=False, and in validation with True:
    #   metrics that cost model passes of their own (the LAM's action gain) are measured there
    #   only. The flag never changes the loss.
    loss: Callable
    # Trained models this stage reads from the same run folder and never changes.
    frozen: tuple[Model, ...] = ()
    # Parts (attribute names) of frozen models this stage never reads, dropped once loaded so
    # they do not sit in memory for the whole run: the dynamics stage only infers actions with
    # the LAM, so its decoder goes.
    unread: dict[Model, tuple[str, ...]] = field(default_factory=dict)
    # (every model of the stage by name, uint8 frames, key) -> uint8 image (H, W, 3)
    images: Callable | None = None


def stages_training(name: Model) -> tuple[str, ...]:
    """The stages that train model `name`, in training order."""
    return tuple(stage for stage, spec in STAGE_SPECS.items() if name in spec.trains)


def _tokenizer_loss(models, frozen, frames, key, *, config, diagnostics=True):
    return tokenizer_loss(models["tokenizer"], frames, key)


def _lam_loss(models, frozen, frames, key, *, config, diagnostics=True):
    return lam_loss(models["lam"], frames, key, diagnostics=diagnostics)


def _dynamics_loss(models, frozen, frames, key, *, config, diagnostics=True):
    tokens, actions = frozen["tokenizer"].tokenize(frames), frozen["lam"].infer_actions(frames)
    return dynamics_loss(models["dynamics"], tokens, actions, key)


# Co-training. The softmax over the LAM's cosine similarities to its codes (in [-1, 1]) at this
# temperature stands in for the argmax when the dynamics loss trains the LAM: low enough that
# it leans towards the chosen code, high enough that every code still gets a gradient.
SOFT_ASSIGNMENT_TEMPERATURE = 0.1


def straight_through_actions(lam: LatentActionModel, frames: jax.Array) -> jax.Array:
    """(B, T, H, W, C) uint8 -> (B, T-1, A) float32 weights over the A latent actions.

    The dynamics model embeds a discrete action id, and an id has no gradient. In the forward
    pass these weights are exactly the one-hot of the LAM's action (`infer_actions`), so the
    dynamics model computes exactly what it computes from the id; in the backward pass they
    carry the gradient of a softmax over the LAM's code similarities (straight-through, Bengio
    et al. 2013), which reaches the LAM's encoder and codebook: the dynamics loss pulls each
    transition's latent towards the codes whose embeddings would have predicted it better.
    """
    similarity = lam.vq.similarity(lam.encode(frames))  # (B, T-1, A); the VQ takes the argmax
    hard = jax.nn.one_hot(first_argmax(similarity), lam.num_actions, dtype=jnp.float32)
    soft = jax.nn.softmax(similarity / SOFT_ASSIGNMENT_TEMPERATURE, axis=-1)
    return hard + (soft - jax.lax.stop_gradient(soft))  # soft - soft is exactly 0 forward


def cotrain_losses(
    lam: LatentActionModel,
    dynamics: DynamicsModel,
    tokenizer: VideoTokenizer,
    frames: jax.Array,
    key: jax.Array,
    *,
    stop_gradient: bool,
    diagnostics: bool = True,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """The LAM's and the dynamics model's losses on the same uint8 (B, T, H, W, C) frames ->
    (LAM loss, dynamics loss, their metrics prefixed "lam/" and "dynamics/").

    The LAM's is `lam_loss`; the dynamics model's is `dynamics_loss` on the tokenizer's tokens
    and the LAM's actions. With `stop_gradient` (Genie section 2.1) the dynamics model reads
    the action ids, so its loss has no gradient in the LAM; without (GenieRedux, Savov et al.
    2024) it reads `straight_through_actions`: the same actions forward, with a gradient.
    The LAM gets `key` itself, as in the lam stage, so with stop-gradient it trains exactly as
    it would alone. `diagnostics`: as `lam_loss`'s.
    """
    lam_total, lam_metrics = lam_loss(lam, frames, key, diagnostics=diagnostics)
    tokens = tokenizer.tokenize(frames)
    actions = lam.infer_actions(frames) if stop_gradient else straight_through_actions(lam, frames)
    dynamics_total, dynamics_metrics = dynamics_loss(
        dynamics, tokens, actions, jax.random.fold_in(key, 1)
    )
    metrics = {f"lam/{k}": v for k, v in lam_metrics.items()}
    metrics.update({f"dynamics/{k}": v for k, v in dynamics_metrics.items()})
    return lam_total, dynamics_total, metrics


def _cotrain_loss(models, frozen, frames, key, *, config, diagnostics=True):
    lam_total, dynamics_total, metrics = cotrain_losses(
        models["lam"],
        models["dynamics"],
        frozen["tokenizer"],
        frames,
        key,
        stop_gradient=config.cotrain_stop_gradient,
        diagnostics=diagnostics,
    )
    loss = lam_total + dynamics_total
    return loss, dict(metrics, loss=loss)


# Pictures saved during training: rows of frames, each under a caption saying what it is.


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 (H_i, W_i, 3) images -> one image, top to bottom, padded white on the right."""
    width = max(image.shape[1] for image in images)
    padded = [
        np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=255)
        for image in images
    ]
    return np.concatenate(padded, axis=0)


def captioned_rows(rows: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """(caption, uint8 (T, H, W, 3) frames) pairs -> one uint8 image: each row of frames drawn
    by `plots.image_grid` under its caption (`plots.label_image`), rows stacked top to bottom."""
    return stack_images(
        [plots.label_image(plots.image_grid(frames[None]), text) for text, frames in rows]
    )


def tokenizer_images(models, frames, key, *, clips: int = 4, max_frames: int = 8):
    """Per clip two captioned rows: the real frames, then decode(tokenize(frames))."""
    frames = jnp.asarray(frames[:clips, :max_frames])
    _, decoded = Engine({"tokenizer": models["tokenizer"]}).reconstruct(frames)
    reconstruction = np.asarray(unit_to_uint8(decoded))
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


def lam_images(models, frames, key, *, clips: int = 2, max_frames: int = 8):
    """Per clip three captioned rows: the real next frames x_2..x_T, the decoder's predictions
    of them under the inferred actions, and under uniformly random actions. A LAM whose actions
    carry information predicts the real row better from the inferred actions."""
    frames = jnp.asarray(frames[:clips, :max_frames])
    inferred, random = map(np.asarray, _lam_predictions(models["lam"], frames, key))
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


def dynamics_images(models, frames, key, *, context: int = 2, clips: int = 4):
    """Per clip two captioned rows: the real clip, then the clip generated from its first
    `context` real frames and the latent actions the LAM infers from the real clip."""
    engine = Engine({name: models[name] for name in ("tokenizer", "lam", "dynamics")})
    frames = jnp.asarray(frames[:clips])
    tokens, actions = engine.encode(frames)
    generated = engine.rollout(
        tokens[:, :context],
        actions[:, context - 1 :],
        key,
        prompt_actions=actions[:, : context - 1],
    )
    video = engine.decode(jnp.concatenate([tokens[:, :context], generated], 1))
    video = np.asarray(unit_to_uint8(video))
    rows = []
    for clip, (real, fake) in enumerate(zip(np.asarray(frames), video, strict=True)):
        rows += [
            (f"clip {clip + 1}: real", real),
            (f"clip {clip + 1}: generated from {context} frames + LAM actions", fake),
        ]
    return captioned_rows(rows)


def cotrain_images(models, frames, key):
    """The LAM's pictures (`lam_images`) above the dynamics model's (`dynamics_images`), each
    half under a heading."""
    lam_key, dynamics_key = jax.random.split(key)
    return stack_images(
        [
            plots.label_image(lam_images(models, frames, lam_key), "latent action model"),
            plots.label_image(dynamics_images(models, frames, dynamics_key), "dynamics model"),
        ]
    )


STAGE_SPECS: dict[str, Stage] = {
    "tokenizer": Stage(
        "tokenizer", trains=("tokenizer",), loss=_tokenizer_loss, images=tokenizer_images
    ),
    "lam": Stage("lam", trains=("lam",), loss=_lam_loss, images=lam_images),
    "dynamics": Stage(
        "dynamics",
        trains=("dynamics",),
        frozen=("tokenizer", "lam"),
        unread={"lam": ("decoder",)},
        loss=_dynamics_loss,
        images=dynamics_images,
    ),
    "lam_dynamics": Stage(
        "lam_dynamics",
        trains=("lam", "dynamics"),
        frozen=("tokenizer",),
        loss=_cotrain_loss,
        images=cotrain_images,
    ),
}
if tuple(STAGE_SPECS) != STAGES:
    raise ImportError(
        f"the stage registry {tuple(STAGE_SPECS)} and genie.config.STAGES {STAGES} must list "
        "the same stages in the same order"
    )
