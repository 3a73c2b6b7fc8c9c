"""Fixtures shared across the suite: a tiny Config and synthetic clips of a moving square."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest

from genie.config import (
    STAGES,
    Config,
    DataConfig,
    DynamicsConfig,
    LAMConfig,
    TokenizerConfig,
    TrainConfig,
    TransformerConfig,
)


def tiny_config(run_dir, *, steps: int = 6, **overrides) -> Config:
    """A few-thousand-parameter config on 16x16 clips of 4 frames."""
    small = TransformerConfig(width=32, depth=1, heads=2, mlp_ratio=2.0)
    train = TrainConfig(
        batch_size=4,
        steps=steps,
        learning_rate=3e-3,
        warmup_steps=2,
        log_every=1,
        image_every=0,
        checkpoint_every=3,
        keep_checkpoints=5,
    )
    config = Config(
        name="tiny",
        run_dir=str(run_dir),
        data=DataConfig(dataset="synthetic", clip_frames=4, image_size=16),
        tokenizer=TokenizerConfig(
            patch_size=4,
            num_codes=32,
            code_dim=8,
            encoder=small,
            decoder=small,
            dead_code_steps=2,
        ),
        lam=LAMConfig(patch_size=8, num_codes=4, code_dim=8, encoder=small, decoder=small),
        dynamics=DynamicsConfig(transformer=small, maskgit_steps=3),
        train_tokenizer=train,
        train_lam=train,
        train_dynamics=train,
        train_lam_dynamics=train,
    )
    return dataclasses.replace(config, **overrides)


def moving_square_clips(count: int, frames: int = 4, size: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 (count, frames, size, size, 3): a coloured square moving one pixel per frame."""
    rng = np.random.default_rng(seed)
    clips = np.zeros((count, frames, size, size, 3), np.uint8)
    for i in range(count):
        y, x = rng.integers(0, size - 4, 2)
        dy, dx = rng.choice([-1, 0, 1], 2)
        colour = rng.integers(80, 256, 3)
        for t in range(frames):
            top = int(np.clip(y + dy * t, 0, size - 4))
            left = int(np.clip(x + dx * t, 0, size - 4))
            clips[i, t, top : top + 4, left : left + 4] = colour
    return clips


def synthetic_iterator(clips: np.ndarray, batch_size: int, seed: int = 0):
    """A checkpointable grain iterator over `clips`, shuffled and repeated forever."""
    import grain

    dataset = grain.MapDataset.source(clips).shuffle(seed=seed).repeat().batch(batch_size)
    return iter(dataset.to_iter_dataset())


@pytest.fixture
def clips():
    return moving_square_clips(32)


def _picture_config(run_dir) -> Config:
    """`tiny_config` for 3 steps, saving pictures at the last."""
    config = tiny_config(run_dir, steps=3)
    return dataclasses.replace(
        config,
        **{f"train_{s}": dataclasses.replace(config.train(s), image_every=3) for s in STAGES},
    )


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run folder with the three sequential stages of `tiny_config` trained for a few steps."""
    from genie.train import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    config = _picture_config(run_dir)
    for stage in ("tokenizer", "lam", "dynamics"):
        iterator = synthetic_iterator(moving_square_clips(16), config.train(stage).batch_size)
        train(config, stage, data_iterator=iterator, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def cotrained_run(tmp_path_factory, tiny_run):
    """A run folder with `tiny_run`'s tokenizer and a LAM and dynamics model co-trained for a
    few steps (stage lam_dynamics), and no lam or dynamics stage."""
    import shutil

    from genie.train import train

    run_dir = tmp_path_factory.mktemp("cotrained_run")
    shutil.copytree(tiny_run / "tokenizer", run_dir / "tokenizer")
    config = _picture_config(run_dir)
    iterator = synthetic_iterator(moving_square_clips(16), config.train_lam_dynamics.batch_size)
    train(config, "lam_dynamics", data_iterator=iterator, progress=False)
    return run_dir
