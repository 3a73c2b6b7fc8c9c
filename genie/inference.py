"""One inference layer: a trained world's compiled functions, shared by every reader of a world.

    engine = Engine(models)                    # {"tokenizer": ..., "lam": ..., "dynamics": ...}
    tokens = engine.tokenize(frames)           # uint8 (B, T, H, W, 3) -> (B, T, N)
    frames = engine.generate(prompt, prompt_actions, actions, keys)

Training pictures (`genie.stages`: the tokenizer's and the dynamics model's; the LAM's show its
own decoder's predictions), `genie eval`, `genie probe` and `genie play` (`genie.world`) all run
a world through an `Engine`: it splits the models into graph definitions and states
once and holds them, in the spirit of the sampler of the Flax examples (one object holding the
compiled state). Its functions are module-level `jax.jit`s with the graph definitions static, so
they compile once per model structure, shapes and options, and every engine of the same
structure shares them: a training loop that builds an engine for each picture from its current
parameters compiles once. An engine may hold any of the three models; a function that needs a
missing one says which.

Rollouts have one implementation, `genie.models.maskgit.advance` (one sliding-window step on
fixed-shape buffers): `Engine.rollout` loops it through `maskgit.rollout`, and `Engine.step`
compiles it together with decoding the new frame for worlds stepped one frame at a time.

`WorldFunctions` is the seam between a run and the measurements of `genie eval`: what they
need as functions of NumPy arrays, built from an engine or, in tests, by hand. `map_batches`
runs such functions over fixed-size batches.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from genie.config import MODELS, Config
from genie.models import maskgit
from genie.models.tokenizer import unit_to_uint8

# How often each compiled function of this module was traced (so compiled): a test of "no
# recompilation". Engines with the same model structure and options share compiled code.
trace_counts: collections.Counter = collections.Counter()

_SAMPLING = ("steps", "temperature", "schedule")


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _tokenize(graphdef, state, frames):
    trace_counts["tokenize"] += 1
    return nnx.merge(graphdef, state).tokenize(frames)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _decode(graphdef, state, tokens):
    trace_counts["decode"] += 1
    return jnp.clip(nnx.merge(graphdef, state).decode(tokens), 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _infer_actions(graphdef, state, frames):
    trace_counts["infer_actions"] += 1
    return nnx.merge(graphdef, state).infer_actions(frames)


@functools.partial(jax.jit, static_argnames=("graphdefs",))
def _encode(graphdefs, states, frames):
    """uint8 (B, T, H, W, 3) -> tokens (B, T, N) and latent actions (B, T-1) in one call."""
    trace_counts["encode"] += 1
    tokenizer, lam = (nnx.merge(g, s) for g, s in zip(graphdefs, states, strict=True))
    return tokenizer.tokenize(frames), lam.infer_actions(frames)


@functools.partial(jax.jit, static_argnames=("graphdefs", *_SAMPLING))
def _step(graphdefs, states, tokens, actions, count, action, key, **sampling):
    """`maskgit.advance` on the (B, T, N) / (B, T-1) buffers, then the new frame decoded ->
    the new buffers, the new count and the new frame, uint8 (B, H, W, 3)."""
    trace_counts["step"] += 1
    dynamics, tokenizer = (nnx.merge(g, s) for g, s in zip(graphdefs, states, strict=True))
    tokens, actions, count, _ = maskgit.advance(
        dynamics, tokens, actions, count, action, key, **sampling
    )
    # The decoder is causal in time: the slots after the new frame change nothing, and one
    # fixed-shape call over the whole buffer is simpler than a decoder cache at these sizes.
    pixels = tokenizer.decode(tokens)
    image = jax.lax.dynamic_index_in_dim(pixels, count - 1, axis=1, keepdims=False)
    return tokens, actions, count, unit_to_uint8(image)


class Engine:
    """The compiled functions of a world made of `models` (any of "tokenizer", "lam",
    "dynamics"). MaskGIT sampling options default to the dynamics model's config."""

    def __init__(
        self,
        models: Mapping[str, nnx.Module],
        *,
        steps: int | None = None,
        temperature: float | None = None,
        schedule: str | None = None,
    ):
        unknown = set(models) - set(MODELS)
        if unknown:
            raise ValueError(f"an engine holds {MODELS}, not {sorted(unknown)}")
        self.models = dict(models)
        split = {name: nnx.split(model) for name, model in self.models.items()}
        self._graphdefs = {name: graphdef for name, (graphdef, _) in split.items()}
        self._states = {name: state for name, (_, state) in split.items()}
        dynamics = self.models.get("dynamics")
        config = dynamics.config if dynamics is not None else None
        self.steps = int(steps if steps is not None else config.maskgit_steps if config else 1)
        self.temperature = float(
            temperature if temperature is not None else config.temperature if config else 1.0
        )
        self.schedule = schedule or (config.mask_schedule if config else "cosine")

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        models: tuple[str, ...] = MODELS,
        steps: int | None = None,
        temperature: float | None = None,
        greedy_digits: str | None = None,
    ) -> tuple[Engine, Config]:
        """Loads `models` of a run folder, each from the latest stage that trained it
        (`genie.checkpoint.load_model`) -> (engine, the config saved with the last of them:
        the dynamics model's by default, which was trained on the tokenizer and LAM of the
        same run). `greedy_digits` overrides the dynamics config's `greedy_digits`."""
        from genie.checkpoint import load_model

        loaded, config = {}, None
        for name in models:
            loaded[name], config = load_model(run_dir, name)
        if greedy_digits is not None and "dynamics" in loaded:
            head = loaded["dynamics"].head
            loaded["dynamics"].head = dataclasses.replace(head, greedy=greedy_digits)
        return cls(loaded, steps=steps, temperature=temperature), config

    def _part(self, name: str) -> tuple[nnx.GraphDef, nnx.State]:
        if name not in self.models:
            raise ValueError(f"this engine has no {name} (it holds {sorted(self.models)})")
        return self._graphdefs[name], self._states[name]

    @property
    def sampling(self) -> dict:
        """The MaskGIT options every rollout of this engine uses."""
        return dict(steps=self.steps, temperature=self.temperature, schedule=self.schedule)

    @property
    def window(self) -> int:
        """Frames the tokenizer's causal decoder was built for: longer videos are decoded in a
        sliding window (`decode`)."""
        self._part("tokenizer")
        return self.models["tokenizer"].decoder.max_frames

    # -- tokenizer and LAM ----------------------------------------------------------------------

    def tokenize(self, frames) -> jax.Array:
        """uint8 (B, T, H, W, 3) -> int32 tokens (B, T, N)."""
        return _tokenize(*self._part("tokenizer"), jnp.asarray(frames))

    def decode(self, tokens) -> jax.Array:
        """(B, T, N) tokens -> float (B, T, H, W, 3) in [0, 1], also when T exceeds the
        tokenizer's window: frame t >= window is then decoded from the `window` frames ending
        at t (one compiled shape)."""
        graphdef, state = self._part("tokenizer")
        tokens = jnp.asarray(tokens)
        window, frames = self.window, tokens.shape[1]
        if frames <= window:
            return _decode(graphdef, state, tokens)
        decoded = [_decode(graphdef, state, tokens[:, :window])]
        for t in range(window, frames):
            decoded.append(_decode(graphdef, state, tokens[:, t - window + 1 : t + 1])[:, -1:])
        return jnp.concatenate(decoded, axis=1)

    def reconstruct(self, frames) -> tuple[jax.Array, jax.Array]:
        """uint8 (B, T, H, W, 3) -> (tokens (B, T, N), decode(tokens) in [0, 1])."""
        tokens = self.tokenize(frames)
        return tokens, self.decode(tokens)

    def infer_actions(self, frames) -> jax.Array:
        """uint8 (B, T, H, W, 3) -> int32 latent actions (B, T-1); [:, t] explains t -> t+1."""
        return _infer_actions(*self._part("lam"), jnp.asarray(frames))

    def encode(self, frames) -> tuple[jax.Array, jax.Array]:
        """uint8 (B, T, H, W, 3) -> (tokens (B, T, N), latent actions (B, T-1)), one call."""
        parts = [self._part(name) for name in ("tokenizer", "lam")]
        return _encode(tuple(g for g, _ in parts), tuple(s for _, s in parts), jnp.asarray(frames))

    # -- the dynamics model -----------------------------------------------------------------

    def rollout(self, prompt_tokens, actions, key, *, prompt_actions=None) -> jax.Array:
        """(B, T0, N) prompt tokens, (B, H) actions -> (B, H, N) tokens (`maskgit.rollout`:
        actions[:, h] leads to new frame h, sampled with fold_in(key, h))."""
        self._part("dynamics")
        return maskgit.rollout(
            self.models["dynamics"],
            jnp.asarray(prompt_tokens, jnp.int32),
            jnp.asarray(actions, jnp.int32),
            key,
            prompt_actions=None if prompt_actions is None else jnp.asarray(prompt_actions),
            **self.sampling,
        )

    def generate(self, prompt, prompt_actions, actions, key) -> jax.Array:
        """uint8 prompt frames (B, T0, H, W, 3), their (B, T0-1) latent actions, (B, S) actions
        -> float (B, S, H, W, 3) in [0, 1]: the S new frames decoded (the decoder reads the
        prompt's tokens before them). `key`: one key, or one per clip (`maskgit`)."""
        prompt_tokens = self.tokenize(prompt)
        generated = self.rollout(prompt_tokens, actions, key, prompt_actions=prompt_actions)
        video = self.decode(jnp.concatenate([prompt_tokens, generated], axis=1))
        return video[:, prompt_tokens.shape[1] :]

    def step(self, tokens, actions, count, action, key):
        """One frame of a world stepped by hand: `maskgit.advance` on fixed-shape buffers
        (tokens (B, T, N), actions (B, T-1), `count` filled slots) with (B,) `action`, and
        the new frame decoded -> (tokens, actions, count, uint8 frame (B, H, W, 3)). Compiles
        once for every slot (the count is traced)."""
        parts = [self._part(name) for name in ("dynamics", "tokenizer")]
        return _step(
            tuple(g for g, _ in parts),
            tuple(s for _, s in parts),
            tokens,
            actions,
            count,
            action,
            key,
            **self.sampling,
        )


# ---------------------------------------------------------------------------------------------
# The seam between a trained run and the measurements of `genie eval`


@dataclasses.dataclass(frozen=True)
class WorldFunctions:
    """What evaluation needs from a trained run, as functions of NumPy arrays.

    `from_run` builds them from an `Engine`; tests pass their own (e.g. a `generate` that
    returns the real future, whose PSNR must be +inf). Every function takes a batch of fixed
    size (callers pad: `map_batches`), so the compiled versions compile once.
    """

    num_codes: int  # K, the tokenizer's codebook
    num_actions: int  # |A|, the LAM's codebook
    # uint8 (B, T, H, W, 3) -> (tokens (B, T, N) int, float reconstruction (B, T, H, W, 3))
    reconstruct: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    # uint8 (B, T, H, W, 3) -> (B, T-1) int; [:, t] explains frame t -> t+1
    infer_actions: Callable[[np.ndarray], np.ndarray]
    # (prompt uint8 (B, T0, H, W, 3), prompt_actions (B, T0-1), actions (B, S), keys (B,))
    #   -> float (B, S, H, W, 3) in [0, 1]; actions[:, 0] leads from the last prompt frame;
    #   clip b is sampled with keys[b] alone, so its frames do not depend on its batch
    generate: Callable[[np.ndarray, np.ndarray, np.ndarray, jax.Array], np.ndarray]

    @classmethod
    def from_engine(cls, engine: Engine) -> WorldFunctions:
        def reconstruct(frames):
            tokens, decoded = engine.reconstruct(frames)
            return np.asarray(tokens), np.asarray(decoded)

        for name in ("tokenizer", "lam"):
            engine._part(name)  # a clear error if one is missing
        return cls(
            num_codes=engine.models["tokenizer"].num_codes,
            num_actions=engine.models["lam"].num_actions,
            reconstruct=reconstruct,
            infer_actions=lambda frames: np.asarray(engine.infer_actions(frames)),
            generate=lambda *args: np.asarray(engine.generate(*args)),
        )

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        maskgit_steps: int | None = None,
        temperature: float | None = None,
        greedy_digits: str | None = None,
    ) -> tuple[WorldFunctions, Config]:
        """Loads the three stages of a run -> (functions, the dynamics stage's config).

        MaskGIT steps, temperature and greedy digits default to the run's config (25 steps and
        temperature 1.0 in the Genie CoinRun case study).
        """
        engine, config = Engine.from_run(
            run_dir, steps=maskgit_steps, temperature=temperature, greedy_digits=greedy_digits
        )
        return cls.from_engine(engine), config


def map_batches(
    fn: Callable,
    arrays: tuple[np.ndarray, ...],
    batch_size: int,
    desc: str = "",
    progress: bool = True,
) -> list:
    """Applies ``fn(*batches)`` to batches of exactly `batch_size` rows of the `arrays` (the last
    batch padded by repeating its last row) -> per batch, the outputs (an array or a tuple of
    arrays) with the padding rows cut off. `fn` sees no batch index: anything random must be
    keyed by row (e.g. pass clip indices as one of the arrays), so results do not depend on
    `batch_size`."""
    count = len(arrays[0])
    outputs = []
    starts = range(0, count, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        stop = min(start + batch_size, count)
        batch = [a[start:stop] for a in arrays]
        pad = batch_size - (stop - start)
        if pad:
            batch = [np.concatenate([b, np.repeat(b[-1:], pad, axis=0)]) for b in batch]
        out = fn(*batch)
        if isinstance(out, tuple):
            outputs.append(tuple(np.asarray(o)[: stop - start] for o in out))
        else:
            outputs.append(np.asarray(out)[: stop - start])
    return outputs
