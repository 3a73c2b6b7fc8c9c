"""Tiny worlds for the tests of `genie.world` and `genie.play`: 16x16 frames, 4-frame context.

`tiny_models` builds freshly initialised models of `tests.conftest.tiny_config`, with the
dynamics model's action embeddings scaled up so that its logits clearly depend on the latent
action (an untrained model barely listens to it). `tiny_run_dir` writes them as a run folder,
exactly as training leaves one (config.json and an orbax checkpoint per stage), in a fraction of
the time that training even two steps per stage takes on 2 CPU cores.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import jax
import optax
from flax import nnx

from genie import checkpoint
from genie.config import STAGES, save_config
from genie.stages import build_model
from tests.conftest import tiny_config

ACTION_SCALE = 50.0  # an untrained model barely listens to the action


@functools.cache
def tiny_models():
    """(config, {stage: model}), built once per process: worlds only read their models."""
    config = tiny_config("unused")
    models = {stage: build_model(config, stage, nnx.Rngs(config.seed)) for stage in STAGES}
    embedding = models["dynamics"].action_embedding.embedding
    embedding.value = embedding.value * ACTION_SCALE
    return config, models


@functools.cache
def tiny_run_dir() -> Path:
    run_dir = Path(tempfile.mkdtemp(prefix="genie_tiny_run_"))
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    _, models = tiny_models()
    config = tiny_config(run_dir)
    for stage, model in models.items():
        folder = checkpoint.stage_path(run_dir, stage)
        save_config(config, folder / "config.json")
        manager = checkpoint.checkpoint_manager(folder)
        optimizer = nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param)
        checkpoint.save(manager, 1, model, optimizer, None)
        manager.close()
    jax.effects_barrier()
    return run_dir
