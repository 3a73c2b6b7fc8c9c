"""Configuration: frozen dataclasses, one place for every default.

An experiment in `experiments/` returns a `Config`; the command line overrides any field
(`--tokenizer.patch-size 8`); every run writes its full config next to its checkpoints as
`config.json`, and everything that consumes a run (sampling, play, probe, eval) reads it back
from there with `load_config`, so training and sampling can never disagree on a shape.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jax.numpy as jnp

# The models a world is made of, and the stages that train them, in training order (the
# registry in genie.stages says which models each stage trains and which it only reads). A later
# stage's models and config win when a run folder holds several (`load_config`,
# `genie.checkpoint.load_model`): "lam_dynamics" co-trains the LAM and the dynamics model.
MODELS = ("tokenizer", "lam", "dynamics")
Model = Literal["tokenizer", "lam", "dynamics"]
STAGES = ("tokenizer", "lam", "dynamics", "lam_dynamics")
Stage = Literal["tokenizer", "lam", "dynamics", "lam_dynamics"]


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "coinrun_tiny"  # a dataset name under data_dir (see data_pipelines)
    data_dir: str | None = None  # default: $GENIE_DATA_DIR or ./data
    clip_frames: int = 16  # T
    image_size: int = 64  # H = W
    shuffle_seed: int = 0
    worker_count: int = 0  # grain worker processes; 0 reads in the training process


@dataclass(frozen=True)
class TransformerConfig:
    width: int = 128  # D
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    # Rematerialisation: recompute each block's activations in the backward pass instead of
    # keeping them (`nnx.remat`): less memory for the large configs, about one more forward.
    remat: bool = False


@dataclass(frozen=True)
class TokenizerConfig:
    """ST-ViViT VQ-VAE (Genie section 2.1)."""

    patch_size: int = 4
    num_codes: int = 1024  # K
    code_dim: int = 32
    encoder: TransformerConfig = TransformerConfig()
    decoder: TransformerConfig = TransformerConfig()
    commitment_weight: float = 0.25
    dead_code_steps: int = 100  # a code unused this many steps is re-initialised
    # "vq": a learned codebook (Genie). "fsq": finite scalar quantisation (genie.models.fsq):
    # code_dim numbers each rounded to one of its fsq_levels, num_codes = their product (both
    # must say so); no codebook to collapse, no codebook or commitment loss.
    quantizer: Literal["vq", "fsq"] = "vq"
    fsq_levels: tuple[int, ...] = ()  # with "fsq": levels per latent number, e.g. 4 4 4 4
    # Convolutional stem: stem_channels features of a 3x3 convolution (GELU) over each frame
    # are patchified beside the pixels, so every patch embedding also sees the pixels bordering
    # its patch. 0: none (Genie).
    stem_channels: int = 0
    # Convolutional head: the decoder emits head_channels features per pixel beside the colours,
    # and two 3x3 convolutions over each full-resolution frame add a correction to the colours,
    # so neighbouring patches blend and the P x P block edges can fade. 0: none (Genie). Stem
    # and head act within one frame, so the tokenizer stays causal in time.
    head_channels: int = 0
    # The pixel MSE's weight against the VQ terms. The MSE of [0, 1] pixels is about 0.01
    # while the codebook and commitment terms are about 0.1-1, so at weight 1 the commitment
    # pull, not the reconstruction, steers the encoder early in training.
    reconstruction_weight: float = 1.0


@dataclass(frozen=True)
class LAMConfig:
    """Latent action model (Genie section 2.1): 6 codes in the CoinRun case study."""

    patch_size: int = 8
    num_codes: int = 6  # |A|
    code_dim: int = 32
    encoder: TransformerConfig = TransformerConfig()
    decoder: TransformerConfig = TransformerConfig()
    commitment_weight: float = 0.25
    dead_code_steps: int = 100
    # As TokenizerConfig.quantizer: "fsq" with levels (3, 2) gives 6 actions that cannot
    # collapse onto one code through a dead codebook (FSQ against collapse, REFERENCE.md).
    quantizer: Literal["vq", "fsq"] = "vq"
    fsq_levels: tuple[int, ...] = ()  # with "fsq": levels per latent number, e.g. 3 2
    # "entry": each entry of the code fed to the decoder has RMS 1, like one pixel value;
    # "patch": the whole code carries the energy of a patch's P*P*C pixels, so a small code is
    # not drowned out by a large patch.
    action_scale: Literal["entry", "patch"] = "entry"
    # Reconstruction loss weight 1 + changed_pixel_weight on pixels that differ between x_t and
    # x_{t+1}: the little that moves is where the action shows.
    changed_pixel_weight: float = 0.0
    # What the decoder reads to predict x_{t+1}: "all" past frames x_1..x_t (Genie) or x_t
    # alone ("last"). A decoder that sees history can read the motion from it and learns to
    # ignore the action; one starved of history must get the motion from the action (LAPA,
    # tinyworlds).
    # "rollout": the decoder sees only the first `rollout_seen_frames` frames of the clip and
    # predicts the rest open-loop, each from its own prediction, with the whole sequence of
    # codes so far. An action changes the velocity (procgen CoinRun mixes a fifth of it in per
    # step on the ground), so a decoder that must carry the motion forward itself can integrate
    # codes that say "accelerate", where one shown the true recent frames reads the velocity
    # off them and asks the code only for the screen's motion.
    decoder_context: Literal["all", "last", "rollout"] = "all"
    rollout_seen_frames: int = 2
    # Transition t's latent is read at encoder frame t+1+encoder_lookahead (capped at the last
    # frame), so the causal encoder sees where a held action leads: in CoinRun one step of an
    # action moves the agent by half a pixel and its effect builds up over about five (LAOM's
    # multi-step inverse model, Nikulin et al. 2025).
    encoder_lookahead: int = 0
    # "input": the action enters the decoder with its input patches (Genie); "every_block":
    # also added before every decoder block (LAOM appendix D), so it cannot fade with depth.
    action_injection: Literal["input", "every_block"] = "input"
    # Reconstruction loss weight 1 + center_weight on the central center_size x center_size
    # pixels: where a camera-centred game (CoinRun's center_agent) draws the agent, whose sprite
    # turns with the horizontal action at every step. The known centre stands in for the agent
    # masks of MaskLAM (arXiv 2602.02259), which weights the loss toward the agent.
    center_weight: float = 0.0
    center_size: int = 16
    # Hide that central square of x_t from the decoder (grey, in its input pixels and in what
    # its kernels resample), so what the agent looks like next (which way it faces, whether it
    # stands, walks or jumps) must come from the latent action instead of from the sprite it
    # already sees; the sprite's facing follows the sign of the horizontal action at every step.
    decoder_hide_center: bool = False
    # "vq": the decoder reads the quantised action (Genie). "continuous": it reads the encoder's
    # unit-norm latent before quantisation (the VQ still trains and names the action): a check
    # that the encoder carries the signal at all before a discrete bottleneck (LAOM).
    bottleneck: Literal["vq", "continuous"] = "vq"
    # Also feed the encoder each frame's difference from the previous one (zero for the first),
    # so motion is in its input rather than something it must learn to compute.
    encoder_differences: bool = False
    # With motion_size S > 0, each encoder patch also reads the S x S local cost volume between
    # the previous frame and its own (`genie.models.lam.motion_costs`): how well each small
    # shift of x_{t-1} explains x_t there. 0: pixels only (Genie).
    motion_size: int = 0
    # Also feed the decoder that cost volume between x_{t-1} and x_t (needs motion_size > 0),
    # so it knows how the screen already moves. In CoinRun an action changes the velocity by
    # about half a pixel per step and the velocity persists, so a decoder that cannot see it
    # spends the codes on velocity (mostly vertical: falls and jumps) instead of the change the
    # action makes; a history-free decoder told the velocity leaves the codes for that change.
    decoder_motion: bool = False
    # What of that motion the decoder reads. "both": the whole S x S cost volume. "vertical":
    # for each vertical offset only the best cost over the horizontal ones, so the decoder
    # knows how fast the screen rises or falls but not how it scrolls sideways: the code has to
    # say that, and in CoinRun the horizontal scroll is what the held left/right key sets,
    # while the fall that gravity keeps up stays explained without a code.
    decoder_motion_axes: Literal["both", "vertical"] = "both"
    # Tell the decoder how the whole screen moves from x_t to x_{t+1} (the frame it predicts):
    # the cost volume of that step averaged over the patches, S x S numbers (needs motion_size
    # > 0). The codes follow the screen's motion (docs/ablations/lam.md), which carries little
    # of the action; told the motion, the decoder asks the code for what the motion leaves
    # unexplained, such as the agent turning to face the way it is told to go.
    decoder_screen_motion: bool = False
    # "mse": the reconstruction term is the (weighted) pixel MSE (Genie). "relative": the same
    # divided by the batch's repeat-the-last-frame error, so it is O(1) like the VQ terms
    # instead of O(0.01), and the encoder's latents follow the reconstruction, not only the
    # commitment pull toward the codes.
    # "relative_capped": each transition's error in units of its own repeat-the-last-frame
    # error, or of the batch's mean one where its own is smaller: a fall of 3 px then counts
    # like an average transition instead of outweighing the 1 px scrolls that tell left from
    # right (docs/ablations/lam.md, item 5), while still and near-still transitions keep the
    # batch's unit (their own would be about 0).
    reconstruction_loss: Literal["mse", "relative", "relative_capped"] = "mse"
    # How the decoder draws x_{t+1}. "pixels": each patch token emits the change of its P*P*C
    # pixels (Genie). "kernels": each patch token also emits a softmax over a kernel_size x
    # kernel_size neighbourhood, and the patch's pixels are x_t resampled with that kernel plus
    # the change (CDNA, Finn et al. 2016). A P*P*C patch squeezed into one token cannot carry
    # its texture, so a pixel decoder cannot move it; a kernel moves it with a few numbers, and
    # where the screen moves is exactly what the action says.
    decoder_output: Literal["pixels", "kernels"] = "pixels"
    kernel_size: int = 5
    # With kernels, let each patch's kernel also take pixels from x_t mirrored left-right about
    # the frame's vertical centre line (a second kernel_size x kernel_size set of taps, one
    # softmax over both). A side-view game's sprite turns to face where it is told to go, and
    # a camera-centred one (CoinRun's center_agent) draws it on that centre line, so a turn is
    # the sprite mirrored in place: a few kernel weights instead of pixels a kernel could never
    # move that far. Which way the agent turns is then cheap for the action to say.
    decoder_mirror: bool = False
    # > 0: a_t is also scored on the transition after its own, x_{t+1} -> x_{t+2}, as if the
    # action were held one step more, with this weight beside the main reconstruction. Players
    # hold keys (CoinRun's data holds each action 1-8 steps), and a held action builds up over
    # steps while the decoder already knows the motion so far, so the one-step error alone asks
    # the code only for what is new; this asks it for what persists: the key being held.
    held_action_weight: float = 0.0


@dataclass(frozen=True)
class DynamicsConfig:
    """MaskGIT dynamics model (Genie section 2.1; Chang et al. 2022)."""

    transformer: TransformerConfig = TransformerConfig()
    maskgit_steps: int = 25  # Genie CoinRun case study
    temperature: float = 1.0
    # How greedy (temperature 0) MaskGIT picks a token with the factorised head. "mode": every
    # FSQ digit's most likely level. "mean": the level nearest the digit's predicted mean
    # level. FSQ levels are ordered values, so where the model spreads its belief over
    # neighbouring levels the mean's level lies nearer the truth in the tokenizer's latent,
    # and so in pixels, than the mode (docs/ablations/dynamics.md item 13). A softmax over
    # whole ids (no factorised head) has no order: there greedy is always the mode.
    greedy_digits: Literal["mode", "mean"] = "mean"
    mask_schedule: Literal["cosine", "linear"] = "cosine"
    min_mask_rate: float = 0.5  # training mask rates are drawn from [min_mask_rate, 1]
    # > 0: a learned scalar, starting at this value, is added to the logit of the token the
    # previous frame had at the same position (where that token is not masked), so the model
    # starts from "copy the last frame" and learns what changes (`genie.models.dynamics`).
    # 0: off (Genie's model).
    copy_logit: float = 0.0
    # With the copy prior: one learned copy logit per latent action (the action leading to the
    # frame), so a "stand still" action can copy strongly and a "move" action weakly.
    copy_per_action: bool = False
    # True: the frame's latent action embedding is also added to each of its patch tokens
    # (beside its action token), so every position reads the action from the first layer.
    action_to_patches: bool = False
    # True (needs an FSQ tokenizer): a token is read and predicted as its FSQ numbers, each with
    # its own embedding and its own few-way softmax, instead of one softmax over all
    # prod(fsq_levels) ids, so large FSQ grids (4096, 64,000 codes) cost a few dozen outputs.
    factorized_head: bool = False
    # > 0 (needs the factorised head): each FSQ digit is trained toward a discretised Gaussian
    # over its levels centred on the true level, with this standard deviation in levels, instead
    # of a one-hot, so predicting a neighbouring level costs less than a far one (ordinal soft
    # labels, as in Diaz & Marathe 2019, "Soft labels for ordinal regression"). 0: one-hot.
    digit_target_sigma: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8  # global, split over every device
    steps: int = 1000
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    log_every: int = 10
    image_every: int = 500  # reconstruction / rollout PNGs
    # Every validate_every steps (0: never) the stage's loss and metrics on the first
    # validate_clips clips of the validation split (no gradient, one fixed key), logged as
    # "val/<metric>" beside the training ones: overfitting and divergence show in TensorBoard.
    validate_every: int = 250
    validate_clips: int = 32
    checkpoint_every: int = 500
    keep_checkpoints: int = 3


@dataclass(frozen=True)
class Config:
    name: str = "default"
    seed: int = 0
    run_dir: str = ""  # default: runs/<name>
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute; params stay float32
    fsdp: bool = False  # also shard parameters and optimizer state over devices
    # With fsdp: how many devices each parameter is split over (the mesh's "fsdp" axis); the
    # other axis, "data", replicates those groups (hybrid sharding). 0: all devices.
    fsdp_devices: int = 0
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    lam: LAMConfig = LAMConfig()
    dynamics: DynamicsConfig = DynamicsConfig()
    train_tokenizer: TrainConfig = TrainConfig()
    train_lam: TrainConfig = TrainConfig()
    train_dynamics: TrainConfig = TrainConfig()
    train_lam_dynamics: TrainConfig = TrainConfig()
    # Co-training (stage "lam_dynamics"): True feeds the dynamics model stop-gradient latent
    # actions, so the LAM learns from its own loss alone (Genie section 2.1); False lets the
    # dynamics loss train the LAM too (GenieRedux), see genie.stages.cotrain_losses.
    cotrain_stop_gradient: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def param_dtype(self) -> jnp.dtype:
        return jnp.dtype("float32")

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or os.path.join("runs", self.name))

    def train(self, stage: Stage) -> TrainConfig:
        return getattr(self, f"train_{stage}")


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, values: dict[str, Any]):
    """Rebuilds a (nested) config dataclass from `to_dict` output, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default
        if dataclasses.is_dataclass(default):
            value = from_dict(type(default), value)
        elif isinstance(default, tuple):
            value = tuple(value)  # JSON has lists only; configs compare equal to their copies
        kwargs[name] = value
    return cls(**kwargs)


def save_config(config: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(to_dict(config), indent=2))
    tmp.replace(path)


def load_config(path: str | os.PathLike) -> Config:
    """Reads the config saved by a run: a run folder, a stage folder or a config.json.

    For a run folder, the latest stage's config wins (lam_dynamics, dynamics, lam, then
    tokenizer: STAGES backwards): a later stage records the sections of the stages it read, so
    it describes the whole world.
    """
    path = Path(path)
    stages = reversed(STAGES)
    candidates = [path, path / "config.json"] + [path / s / "config.json" for s in stages]
    for candidate in candidates:
        if candidate.is_file():
            return from_dict(Config, json.loads(candidate.read_text()))
    raise FileNotFoundError(f"no config.json in {path} or its stage folders {STAGES}")


def load_experiment(path_or_name: str) -> Config:
    """Loads `experiments/<name>.py` (or any .py file) and calls its `get_config()`."""
    path = Path(path_or_name)
    if not path.suffix:
        path = Path(__file__).resolve().parent.parent / "experiments" / f"{path_or_name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"experiment config {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"experiments.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} defines no get_config() returning a genie Config")
    return module.get_config()
