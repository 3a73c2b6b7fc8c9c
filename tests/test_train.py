"""The shared training loop: resume equivalence, non-finite loss, config round trip."""

from __future__ import annotations

import json
import os
import signal

import jax
import numpy as np
import pytest
from flax import nnx

from genie import checkpoint
from genie.config import load_config
from genie.train import NonFiniteLossError, train
from genie.writer import read_metrics
from tests.conftest import moving_square_clips, synthetic_iterator, tiny_config


class InterruptAfter:
    """Delegates to a grain iterator and sends this process SIGTERM after `count` batches."""

    def __init__(self, iterator, count: int):
        self.iterator, self.count = iterator, count

    def __iter__(self):
        return self

    def __next__(self):
        self.count -= 1
        if self.count == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.iterator)

    def get_state(self):
        return json.dumps(self.iterator.get_state()).encode()

    def set_state(self, state):
        self.iterator.set_state(json.loads(state))

    def start_prefetch(self):
        pass


def _params(run_dir, stage):
    model, _ = checkpoint.load_model(run_dir, stage)
    return jax.tree.leaves(nnx.state(model))


@pytest.mark.parametrize("stage", ["tokenizer", "lam"])
def test_resumed_run_matches_uninterrupted(tmp_path, stage):
    clips = moving_square_clips(16)
    whole = tiny_config(tmp_path / "whole")
    train(whole, stage, data_iterator=synthetic_iterator(clips, 4), progress=False)

    halves = tiny_config(tmp_path / "halves")
    interrupted = InterruptAfter(synthetic_iterator(clips, 4), count=2)
    train(halves, stage, data_iterator=interrupted, progress=False)
    assert checkpoint.checkpoint_manager(tmp_path / "halves" / stage).latest_step() == 2
    # A fresh iterator: the data position must come back from the checkpoint.
    train(halves, stage, data_iterator=synthetic_iterator(clips, 4), progress=False)

    losses_whole = [m["loss"] for m in read_metrics(tmp_path / "whole" / stage)]
    losses_halves = [m["loss"] for m in read_metrics(tmp_path / "halves" / stage)]
    assert losses_halves == losses_whole
    whole, halves = _params(tmp_path / "whole", stage), _params(tmp_path / "halves", stage)
    for a, b in zip(whole, halves, strict=True):
        np.testing.assert_array_equal(a, b)


def test_config_is_saved_and_read_back(tmp_path):
    config = tiny_config(tmp_path, steps=1)
    train(
        config,
        "tokenizer",
        data_iterator=synthetic_iterator(moving_square_clips(8), 4),
        progress=False,
    )
    assert load_config(tmp_path / "tokenizer") == config
    _, saved = checkpoint.load_model(tmp_path, "tokenizer")
    assert saved == config
    manager = checkpoint.checkpoint_manager(tmp_path / "tokenizer", read_only=True)
    assert checkpoint.saved_config(manager) == config  # inside the checkpoint step too


def test_resume_with_another_config_is_refused(tmp_path):
    clips = moving_square_clips(8)
    train(
        tiny_config(tmp_path, steps=1),
        "tokenizer",
        data_iterator=synthetic_iterator(clips, 4),
        progress=False,
    )
    changed = tiny_config(tmp_path, steps=2, seed=7)
    with pytest.raises(ValueError, match="different config"):
        train(changed, "tokenizer", data_iterator=synthetic_iterator(clips, 4), progress=False)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    clips = moving_square_clips(16).astype(np.float32)
    config = tiny_config(tmp_path, steps=6)

    class PoisonAfter(InterruptAfter):
        def __next__(self):
            self.count -= 1
            batch = next(self.iterator)
            return batch * np.nan if self.count < 0 else batch.astype(np.uint8)

    with pytest.raises(NonFiniteLossError, match="step 5"):
        train(
            config,
            "tokenizer",
            data_iterator=PoisonAfter(synthetic_iterator(clips, 4), 4),
            progress=False,
        )
    manager = checkpoint.checkpoint_manager(tmp_path / "tokenizer")
    assert manager.all_steps() == [3]
    model, _ = checkpoint.load_model(tmp_path, "tokenizer")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(nnx.state(model)))


def test_dynamics_stage_needs_trained_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        train(
            tiny_config(tmp_path),
            "dynamics",
            data_iterator=synthetic_iterator(moving_square_clips(8), 4),
            progress=False,
        )
