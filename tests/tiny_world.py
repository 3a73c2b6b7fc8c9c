"""Tiny models for the tests of `genie.world` and `genie.play`: 16x16 frames, 4-frame context.

Freshly initialised models of `tests.conftest.tiny_config`, built once per process, with the
dynamics model's action embeddings scaled up so that its logits clearly depend on the latent
action: an untrained (or two-step-trained) model barely listens to it, and the alignment tests
need a model that does. Tests that need a run folder use conftest's `tiny_run`.
"""

from __future__ import annotations

import functools

from flax import nnx

from genie.config import MODELS
from genie.stages import build_model
from tests.conftest import tiny_config

ACTION_SCALE = 50.0


@functools.cache
def tiny_models():
    """(config, {name: model}); shared, as worlds only read their models."""
    config = tiny_config("unused")
    models = {name: build_model(config, name, nnx.Rngs(config.seed)) for name in MODELS}
    embedding = models["dynamics"].action_embedding.embedding
    embedding.value = embedding.value * ACTION_SCALE
    return config, models
