"""Stepping a learned world: a prompt, then one frame per latent action.

    world = World.from_run("runs/coinrun_tiny")
    world.reset("start.png")            # an image, a video, or uint8 frames
    frame = world.step(2)               # (H, W, 3) uint8: the world after latent action 2

The world keeps the last T frames (T = `config.data.clip_frames`, the context the dynamics model
was trained on) as tokens in a buffer of T slots plus the T-1 latent actions between them,
`actions[:, t]` being the action that turned slot t into slot t+1 (the convention of
`genie.models.dynamics`). `step(a)` writes `a` as the action leaving the newest frame, samples the
next frame with MaskGIT into the first free slot and decodes it; once all T slots are full, the
buffer first shifts left by one frame (and one action), so the model always sees at most T-1
frames of context: the one rollout step of genie, `genie.models.maskgit.advance`, which
`maskgit.rollout` loops too, so both give bitwise the same tokens.

Everything a step does (shift, MaskGIT sampling, decoding) is one compiled function of the
world's `genie.inference.Engine`, of fixed shapes with the write index traced, so it compiles
once, on the first step, and never again.

Randomness: the key of the k-th generated frame since `reset` is fold_in(PRNGKey(seed), k), so
the same seed, prompt and actions give the same frames.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie.config import MODELS, Config
from genie.inference import Engine
from genie.media import fit_frames, read_prompt_file
from genie.models.lam import check_actions

# ---------------------------------------------------------------------------------------------
# Prompts: files and arrays -> uint8 (B, t, H, W, 3) at the model's size


def as_prompt(prompt, *, batch_size: int, image_size: int, clip_frames: int) -> np.ndarray:
    """A prompt (file path, or uint8 (H,W,3), (t,H,W,3) or (B,t,H,W,3) frames) -> uint8
    (batch_size, t, image_size, image_size, 3) with 1 <= t <= clip_frames (the last t frames)."""
    if isinstance(prompt, str | os.PathLike):
        frames = read_prompt_file(prompt, clip_frames)
    elif isinstance(prompt, np.ndarray | jax.Array):
        frames = np.asarray(prompt)
    else:
        raise TypeError(
            f"a prompt is an image or video file path or a uint8 array of frames "
            f"(H, W, 3), (t, H, W, 3) or (B, t, H, W, 3); got {type(prompt).__name__}"
        )
    if frames.dtype != np.uint8:
        raise ValueError(f"prompt frames must be uint8 (0..255), got {frames.dtype}")
    if frames.ndim < 3 or frames.ndim > 5 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(
            "prompt frames must have shape (H, W, 3), (t, H, W, 3) or (B, t, H, W, 3) RGB, "
            f"got {frames.shape}"
        )
    frames = frames.reshape((1,) * (5 - frames.ndim) + frames.shape)
    if frames.shape[0] not in (1, batch_size):
        raise ValueError(
            f"a prompt of {frames.shape[0]} videos does not fit a world of batch size {batch_size}"
        )
    frames = fit_frames(frames[:, -clip_frames:], image_size)
    return np.ascontiguousarray(np.broadcast_to(frames, (batch_size, *frames.shape[1:])))


# ---------------------------------------------------------------------------------------------
# The world


class World:
    """A playable world: a tokenizer, a latent action model and a dynamics model stepped
    together. Build it with `World.from_run(run_dir)` or `World(config, models)`."""

    def __init__(
        self,
        config: Config,
        models: dict[str, nnx.Module],
        *,
        batch_size: int = 1,
        seed: int = 0,
        steps: int | None = None,
        temperature: float | None = None,
    ):
        missing = set(MODELS) - set(models)
        if missing:
            raise ValueError(
                f"a World needs the tokenizer, lam and dynamics models; missing {sorted(missing)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.config = config
        self.batch_size = batch_size
        self.seed = seed
        self.image_size = config.data.image_size
        self.context_frames = config.data.clip_frames  # T
        if self.context_frames < 2:
            raise ValueError(f"a world needs clip_frames >= 2, got {self.context_frames}")
        self.steps = config.dynamics.maskgit_steps if steps is None else int(steps)
        self.temperature = (
            config.dynamics.temperature if temperature is None else float(temperature)
        )
        self.num_actions = int(models["lam"].num_actions)
        if models["dynamics"].num_actions != self.num_actions:
            raise ValueError(
                f"the LAM has {self.num_actions} latent actions but the dynamics model was built "
                f"for {models['dynamics'].num_actions}"
            )
        self.num_patches = models["tokenizer"].num_patches
        self._engine = Engine(
            models,
            steps=self.steps,
            temperature=self.temperature,
            schedule=config.dynamics.mask_schedule,
        )
        self._prompt: np.ndarray | None = None

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        *,
        batch_size: int = 1,
        seed: int = 0,
        steps: int | None = None,
        temperature: float | None = None,
    ) -> World:
        """Loads the three models of a run folder, each from the latest stage that trained it
        (`genie.checkpoint.load_model`: a co-trained LAM and dynamics model from `lam_dynamics`,
        else the `lam` and `dynamics` stages); the config is the one saved with the dynamics
        model (which was trained on the tokenizer and LAM of the same run)."""
        from genie.checkpoint import load_model

        models, config = {}, None
        for name in MODELS:
            models[name], config = load_model(run_dir, name)
        return cls(
            config, models, batch_size=batch_size, seed=seed, steps=steps, temperature=temperature
        )

    # -- the public API ---------------------------------------------------------------------

    def reset(self, prompt, *, seed: int | None = None) -> np.ndarray:
        """Starts an episode from `prompt`: an image or video file path, or uint8 frames (H,W,3),
        (t,H,W,3) or (B,t,H,W,3) (e.g. a clip from `data_pipelines.loader.read_clips`). Only
        the last T frames are kept; frames of another size are centre-cropped and resized with
        a warning. Returns the prompt's last frame, shaped like `step`'s output."""
        frames = as_prompt(
            prompt,
            batch_size=self.batch_size,
            image_size=self.image_size,
            clip_frames=self.context_frames,
        )
        if seed is not None:
            self.seed = seed
        self._prompt = frames
        prompt_frames = frames.shape[1]
        padded = np.zeros((self.batch_size, self.context_frames, *frames.shape[2:]), np.uint8)
        padded[:, :prompt_frames] = frames
        # Both models are causal in time, so the padding after the prompt changes nothing
        # before it; one fixed shape serves prompts of every length.
        tokens, actions = self._engine.encode(padded)
        # Only the prompt's own slots, and the prompt_frames - 1 actions between them, are real.
        slot = jnp.arange(self.context_frames)
        self._tokens = jnp.where(slot[None, :, None] < prompt_frames, tokens, 0)
        self._actions = jnp.where(slot[None, :-1] < prompt_frames - 1, actions, 0)
        self._count = jnp.int32(prompt_frames)
        self._key = jax.random.PRNGKey(self.seed)
        self.step_count = 0
        self.last_action: np.ndarray | None = None
        self._episode = [frames[:, t] for t in range(prompt_frames)]
        return self._single(frames[:, -1])

    def _check_action(self, action) -> np.ndarray:
        values = np.asarray(action)
        if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"a latent action is an integer id, got {action!r}")
        values = values.astype(np.int64)
        if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != self.batch_size):
            raise ValueError(
                f"step takes one action or one per batch element ({self.batch_size}), "
                f"got shape {values.shape}"
            )
        check_actions(values, self.num_actions)
        return np.broadcast_to(values, (self.batch_size,)).astype(np.int32)

    def _single(self, frames: np.ndarray) -> np.ndarray:
        return frames[0] if self.batch_size == 1 else frames

    def step(self, action) -> np.ndarray:
        """Takes latent action `action` (an int in [0, num_actions), or one per batch element)
        at the newest frame; returns the next frame, uint8 (H, W, 3) for a batch of one, else
        (B, H, W, 3)."""
        if self._prompt is None:
            raise RuntimeError("call reset(prompt) before step(action)")
        action = self._check_action(action)
        key = jax.random.fold_in(self._key, self.step_count)
        self._tokens, self._actions, self._count, image = self._engine.step(
            self._tokens, self._actions, self._count, jnp.asarray(action), key
        )
        image = np.asarray(image)
        self.step_count += 1
        self.last_action = action
        self._episode.append(image)
        return self._single(image)

    def rollout(self, actions) -> np.ndarray:
        """Steps on from the current state with (B, L) latent actions ((L,) is shared by every
        batch element) -> uint8 (B, L, H, W, 3): the L new frames."""
        actions = np.asarray(actions)
        if actions.ndim == 1:
            actions = np.broadcast_to(actions, (self.batch_size, actions.shape[0]))
        if actions.ndim != 2 or actions.shape[0] != self.batch_size:
            raise ValueError(
                f"rollout takes actions of shape ({self.batch_size}, L), got {actions.shape}"
            )
        for column in actions.T:  # fail before stepping at all
            self._check_action(column)
        frames = []
        for column in actions.T:
            frame = self.step(column)
            frames.append(frame if self.batch_size > 1 else frame[None])
        return np.stack(frames, axis=1)

    @property
    def frames(self) -> np.ndarray:
        """The episode so far, prompt frames first: uint8 (t, H, W, 3), or (B, t, H, W, 3)."""
        if self._prompt is None:
            raise RuntimeError("call reset(prompt) first: the world has no episode yet")
        return self._single(np.stack(self._episode, axis=1))

    @property
    def num_frames(self) -> int:
        """Frames in the episode so far, prompt frames included; no copy of them."""
        if self._prompt is None:
            raise RuntimeError("call reset(prompt) first: the world has no episode yet")
        return len(self._episode)

    @property
    def prompt(self) -> np.ndarray:
        """The prompt of the current episode as the model sees it: uint8 (B, t, H, W, 3)."""
        return self._prompt

    @property
    def context_tokens(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The token buffer (B, T, N), action buffer (B, T-1) and number of filled slots."""
        return np.asarray(self._tokens), np.asarray(self._actions), int(self._count)
