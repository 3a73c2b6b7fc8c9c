"""The shared training loop: resume equivalence (one model and co-training), co-training with
stop-gradient, which stage folder serves a model, non-finite loss, config round trip."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
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
    stopped = train(halves, stage, data_iterator=interrupted, progress=False)
    assert stopped["stopped"] == "SIGTERM"
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
    changed = tiny_config(tmp_path, steps=2)
    changed = dataclasses.replace(
        changed, tokenizer=dataclasses.replace(changed.tokenizer, num_codes=16)
    )
    with pytest.raises(ValueError, match=r"\['tokenizer'\]"):
        train(changed, "tokenizer", data_iterator=synthetic_iterator(clips, 4), progress=False)
    # What the tokenizer stage never reads may change: the LAM's section, another schedule.
    unread = tiny_config(tmp_path, steps=2)
    unread = dataclasses.replace(
        unread,
        lam=dataclasses.replace(unread.lam, num_codes=7),
        train_dynamics=dataclasses.replace(unread.train_dynamics, learning_rate=0.5),
    )
    result = train(unread, "tokenizer", data_iterator=synthetic_iterator(clips, 4), progress=False)
    assert [m["step"] for m in result["history"]] == [2]  # resumed at 1


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


@jax.custom_vjp
def _scale_gradient(x, factor):
    return x


_scale_gradient.defvjp(lambda x, factor: (x, factor), lambda factor, g: (g * factor, None))


def test_finite_loss_with_infinite_gradient_is_not_applied_and_stops(tmp_path, monkeypatch):
    """Gradient clipping passes inf through: the loss alone cannot tell this step is bad."""
    from genie import stages
    from genie import train as train_module

    spec = stages.STAGE_SPECS["tokenizer"]

    def poisoned_loss(models, frozen, frames, key, **options):
        loss, metrics = spec.loss(models, frozen, frames, key, **options)
        # Black batches get an infinite gradient and an unchanged, finite loss.
        factor = jnp.where(frames.max() == 0, jnp.inf, 1.0)
        return _scale_gradient(loss, factor), metrics

    monkeypatch.setitem(
        train_module.STAGE_SPECS, "tokenizer", dataclasses.replace(spec, loss=poisoned_loss)
    )

    class BlackAfter(InterruptAfter):
        def __next__(self):
            self.count -= 1
            batch = next(self.iterator)
            return batch * 0 if self.count < 0 else batch

    clips = moving_square_clips(16)
    with pytest.raises(NonFiniteLossError, match="gradients .* step 5"):
        train(
            tiny_config(tmp_path, steps=6),
            "tokenizer",
            data_iterator=BlackAfter(synthetic_iterator(clips, 4), 4),
            progress=False,
        )
    assert checkpoint.checkpoint_manager(tmp_path / "tokenizer").all_steps() == [3]
    model, _ = checkpoint.load_model(tmp_path, "tokenizer")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(nnx.state(model)))


def test_train_step_keeps_the_state_when_the_update_is_not_finite(tmp_path, monkeypatch):
    from genie import stages
    from genie import train as train_module
    from genie.stages import build_model

    config = tiny_config(tmp_path)
    spec = stages.STAGE_SPECS["tokenizer"]

    def inf_gradient_loss(models, frozen, frames, key, **options):
        loss, metrics = spec.loss(models, frozen, frames, key, **options)
        return _scale_gradient(loss, jnp.inf), metrics

    model = build_model(config, "tokenizer", nnx.Rngs(0))
    optimizers = {
        "tokenizer": nnx.Optimizer(
            model, train_module.make_optimizer(config, "tokenizer"), wrt=nnx.Param
        )
    }
    graphdef, state = nnx.split(({"tokenizer": model}, optimizers))
    frames = jnp.asarray(moving_square_clips(4))
    before = jax.tree.leaves(jax.device_get(state))
    for loss_fn, finite in [(inf_gradient_loss, False), (spec.loss, True)]:
        monkeypatch.setitem(
            train_module.STAGE_SPECS, "tokenizer", dataclasses.replace(spec, loss=loss_fn)
        )
        step = jax.jit(train_module.make_train_step(config, "tokenizer", graphdef, None))
        new_state, metrics = step(state, None, frames, jax.random.key(0))
        assert bool(metrics["update_finite"]) is finite
        after = jax.tree.leaves(jax.device_get(new_state))
        same = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        assert same is not finite  # kept whole when not finite, moved when finite


def validating_every(config, stage, steps):
    """`config` with `stage`'s validation every `steps` steps."""
    train_config = dataclasses.replace(config.train(stage), validate_every=steps)
    return dataclasses.replace(config, **{f"train_{stage}": train_config})


def test_validation_loss_is_logged_and_never_changes_training(tmp_path):
    from genie import stages

    clips, validation = moving_square_clips(16), moving_square_clips(8, seed=1)
    plain = tiny_config(tmp_path / "plain", steps=4)
    train(plain, "tokenizer", data_iterator=synthetic_iterator(clips, 4), progress=False)
    config = validating_every(tiny_config(tmp_path / "validated", steps=4), "tokenizer", 2)
    train(
        config,
        "tokenizer",
        data_iterator=synthetic_iterator(clips, 4),
        validation_frames=validation,
        progress=False,
    )
    records = read_metrics(tmp_path / "validated" / "tokenizer")
    plain_records = read_metrics(tmp_path / "plain" / "tokenizer")
    assert [m["loss"] for m in records] == [m["loss"] for m in plain_records]
    assert [m["step"] for m in records if "val/loss" in m] == [2, 4]
    # The last validation loss is the stage's loss of the final model on those two batches
    # under the fixed validation key, computed here by hand.
    model, _ = checkpoint.load_model(tmp_path / "validated", "tokenizer")
    key = jax.random.key(config.seed + 3)
    losses = [
        float(
            stages.STAGE_SPECS["tokenizer"].loss(
                {"tokenizer": model}, {}, batch, key, config=config
            )[0]
        )
        for batch in (jnp.asarray(validation[:4]), jnp.asarray(validation[4:]))
    ]
    np.testing.assert_allclose(records[-1]["val/loss"], np.mean(losses), rtol=1e-5)
    with pytest.raises(ValueError, match="whole batches"):
        train(
            config,
            "tokenizer",
            data_iterator=synthetic_iterator(clips, 4),
            validation_frames=validation[:6],
            progress=False,
        )


def test_the_lam_action_gain_is_measured_in_validation_only(tmp_path):
    """It costs a second decoder pass: the training step skips it, validation keeps it."""
    clips, validation = moving_square_clips(16), moving_square_clips(4, seed=1)
    config = validating_every(tiny_config(tmp_path, steps=2), "lam", 2)
    train(
        config,
        "lam",
        data_iterator=synthetic_iterator(clips, 4),
        validation_frames=validation,
        progress=False,
    )
    records = read_metrics(tmp_path / "lam")
    assert all("action_gain" not in m for m in records)
    assert "val/action_gain" in records[-1] and "val/loss" in records[-1]


def test_dynamics_stage_needs_trained_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        train(
            tiny_config(tmp_path),
            "dynamics",
            data_iterator=synthetic_iterator(moving_square_clips(8), 4),
            progress=False,
        )


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    """A run folder holding only a (3-step) trained tokenizer: what co-training reads."""
    run_dir = tmp_path_factory.mktemp("tokenizer_run")
    clips = moving_square_clips(16)
    train(
        tiny_config(run_dir, steps=3),
        "tokenizer",
        data_iterator=synthetic_iterator(clips, 4),
        progress=False,
    )
    return run_dir


def _with_tokenizer(tokenizer_run, run_dir):
    shutil.copytree(tokenizer_run / "tokenizer", run_dir / "tokenizer")
    return run_dir


def test_cotrained_run_resumes_like_an_uninterrupted_one(tmp_path, tokenizer_run):
    clips = moving_square_clips(16)
    stage = "lam_dynamics"
    whole_dir = _with_tokenizer(tokenizer_run, tmp_path / "whole")
    halves_dir = _with_tokenizer(tokenizer_run, tmp_path / "halves")

    # Without stop-gradient (the straight-through path into the LAM), and with dead LAM codes
    # revived after two steps, so the codebook statistics must come back too.
    def config(run_dir):
        config = tiny_config(run_dir, cotrain_stop_gradient=False)
        return dataclasses.replace(config, lam=dataclasses.replace(config.lam, dead_code_steps=2))

    train(config(whole_dir), stage, data_iterator=synthetic_iterator(clips, 4), progress=False)

    halves = config(halves_dir)
    interrupted = InterruptAfter(synthetic_iterator(clips, 4), count=2)
    train(halves, stage, data_iterator=interrupted, progress=False)
    assert checkpoint.checkpoint_manager(halves_dir / stage).latest_step() == 2
    train(halves, stage, data_iterator=synthetic_iterator(clips, 4), progress=False)

    metrics_whole, metrics_halves = (
        read_metrics(whole_dir / stage),
        read_metrics(halves_dir / stage),
    )
    for key in ("loss", "lam/loss", "dynamics/loss", "lam/grad_norm", "lam/codes_reset"):
        assert [m[key] for m in metrics_halves] == [m[key] for m in metrics_whole], key
    assert sum(m["lam/codes_reset"] for m in metrics_whole) > 0  # revival ran
    for name in ("lam", "dynamics"):
        for a, b in zip(_params(whole_dir, name), _params(halves_dir, name), strict=True):
            np.testing.assert_array_equal(a, b)


def test_cotraining_with_stop_gradient_trains_the_lam_as_the_lam_stage(tmp_path, tokenizer_run):
    """Genie's stop-gradient: the dynamics model changes nothing about the LAM's training (own
    optimizer, own clipping, the same keys), so the co-trained LAM is the lam stage's LAM."""
    run_dir = _with_tokenizer(tokenizer_run, tmp_path / "run")
    config = tiny_config(run_dir, steps=3)
    for stage in ("lam", "lam_dynamics"):
        train(
            config,
            stage,
            data_iterator=synthetic_iterator(moving_square_clips(16), 4),
            progress=False,
        )
    alone = checkpoint.load_model(run_dir, "lam", stage="lam")[0]
    cotrained = checkpoint.load_model(run_dir, "lam", stage="lam_dynamics")[0]
    for a, b in zip(
        jax.tree.leaves(nnx.state(alone)), jax.tree.leaves(nnx.state(cotrained)), strict=True
    ):
        # Bitwise equal on CPU here; a tolerance, as XLA may fuse the bigger step differently.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # A run folder holding both serves the co-trained LAM and dynamics model, and its config.
    assert checkpoint.trained_stage(run_dir, "lam") == "lam_dynamics"
    assert checkpoint.trained_stage(run_dir, "dynamics") == "lam_dynamics"
    assert checkpoint.trained_stage(run_dir, "tokenizer") == "tokenizer"
    assert load_config(run_dir) == load_config(run_dir / "lam_dynamics")
    default = checkpoint.load_model(run_dir, "lam")[0]
    for a, b in zip(
        jax.tree.leaves(nnx.state(default)), jax.tree.leaves(nnx.state(cotrained)), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_missing_model_names_every_stage_that_trains_it(tmp_path, tokenizer_run):
    with pytest.raises(FileNotFoundError, match="dynamics/, lam_dynamics/"):
        checkpoint.load_model(tokenizer_run, "dynamics")
    with pytest.raises(ValueError, match="does not train a tokenizer"):
        checkpoint.load_model(tokenizer_run, "tokenizer", stage="lam_dynamics")


def test_the_dynamics_stage_holds_no_lam_decoder(tiny_run):
    """Frozen parts a stage never reads are dropped once loaded (Stage.unread)."""
    from flax import nnx

    from genie.stages import build_model

    config = load_config(tiny_run / "dynamics" / "config.json")
    # Trained already: the loop resumes at its last step, runs nothing and reports its layout.
    iterator = synthetic_iterator(moving_square_clips(16), config.train_dynamics.batch_size)
    result = train(config, "dynamics", data_iterator=iterator, progress=False)
    assert result["history"] == []
    arrays = lambda module: len(jax.tree.leaves(nnx.state(module)))  # noqa: E731
    tokenizer, lam = (build_model(config, name, nnx.Rngs(0)) for name in ("tokenizer", "lam"))
    decoder = arrays(lam.decoder)
    assert decoder > 0
    assert len(result["layout"]["frozen"]) == arrays(tokenizer) + arrays(lam) - decoder
