"""`genie.stages`: the registry, the co-training losses and gradients, and the pictures each
stage saves during training (they say what every row shows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genie import plots, stages
from genie.config import MODELS, STAGES
from genie.stages import build_model
from tests.conftest import moving_square_clips, tiny_config
from tests.tiny_world import tiny_models


@pytest.fixture
def captured(monkeypatch):
    """The (caption, frames) rows an images function hands to `captioned_rows`."""
    seen, draw = [], stages.captioned_rows

    def capture(rows):
        seen.extend(rows)
        return draw(rows)

    monkeypatch.setattr(stages, "captioned_rows", capture)
    return seen


def test_captioned_rows_stack_labelled_grids():
    frames = moving_square_clips(2, frames=3, size=8)
    image = stages.captioned_rows([("real", frames[0]), ("generated", frames[1])])
    first = plots.label_image(plots.image_grid(frames[0][None]), "real")
    second = plots.label_image(plots.image_grid(frames[1][None]), "generated")
    np.testing.assert_array_equal(image, np.concatenate([first, second]))


def check_image(image, rows):
    height = sum(plots.label_image(plots.image_grid(f[None]), text).shape[0] for text, f in rows)
    assert image.dtype == np.uint8 and image.shape[0] == height and image.shape[-1] == 3


def test_tokenizer_images_pair_each_clip_with_its_reconstruction(captured):
    _, models = tiny_models()
    clips = moving_square_clips(3)
    image = stages.tokenizer_images(models, clips, jax.random.key(0))
    assert [text for text, _ in captured] == [
        f"clip {c}: {row}" for c in (1, 2, 3) for row in ("real", "reconstruction")
    ]
    for c in range(3):
        np.testing.assert_array_equal(captured[2 * c][1], clips[c])
        decoded = captured[2 * c + 1][1]
        assert decoded.dtype == np.uint8 and decoded.shape == clips[c].shape
    check_image(image, captured)


def test_lam_images_show_real_inferred_and_random_rows(captured):
    _, models = tiny_models()
    clips = moving_square_clips(3)
    image = stages.lam_images(models, clips, jax.random.key(0))
    rows = ("real", "inferred action", "random action")
    assert [text for text, _ in captured] == [f"clip {c}: {r}" for c in (1, 2) for r in rows]
    for c in range(2):
        np.testing.assert_array_equal(captured[3 * c][1], clips[c, 1:])  # the next frames
        for _, predicted in captured[3 * c + 1 : 3 * c + 3]:
            assert predicted.dtype == np.uint8 and predicted.shape == clips[c, 1:].shape
    check_image(image, captured)


def test_dynamics_images_pair_real_and_generated_clips(captured):
    _, models = tiny_models()
    clips = moving_square_clips(2)
    image = stages.dynamics_images(models, clips, jax.random.key(0))
    assert [text for text, _ in captured] == [
        f"clip {c}: {row}"
        for c in (1, 2)
        for row in ("real", "generated from 2 frames + LAM actions")
    ]
    for c in range(2):
        np.testing.assert_array_equal(captured[2 * c][1], clips[c])
        assert captured[2 * c + 1][1].shape == clips[c].shape
    check_image(image, captured)


def test_stage_specs_draw_with_these_functions():
    assert stages.STAGE_SPECS["tokenizer"].images is stages.tokenizer_images
    assert stages.STAGE_SPECS["lam"].images is stages.lam_images
    assert stages.STAGE_SPECS["dynamics"].images is stages.dynamics_images


def test_registry_declares_what_each_stage_trains_and_reads():
    assert tuple(stages.STAGE_SPECS) == STAGES
    for name, spec in stages.STAGE_SPECS.items():
        assert spec.name == name and spec.trains
        assert set(spec.trains) <= set(MODELS) and set(spec.frozen) <= set(MODELS)
        assert not set(spec.trains) & set(spec.frozen)
    cotrain = stages.STAGE_SPECS["lam_dynamics"]
    assert (cotrain.trains, cotrain.frozen) == (("lam", "dynamics"), ("tokenizer",))
    assert cotrain.images is stages.cotrain_images
    assert stages.stages_training("lam") == ("lam", "lam_dynamics")
    assert stages.stages_training("tokenizer") == ("tokenizer",)


def test_cotrain_images_show_lam_rows_then_dynamics_rows(captured):
    _, models = tiny_models()
    image = stages.cotrain_images(models, moving_square_clips(2), jax.random.key(0))
    lam_rows = [
        f"clip {c}: {r}" for c in (1, 2) for r in ("real", "inferred action", "random action")
    ]
    dynamics_rows = [
        f"clip {c}: {r}" for c in (1, 2) for r in ("real", "generated from 2 frames + LAM actions")
    ]
    assert [text for text, _ in captured] == lam_rows + dynamics_rows
    assert image.dtype == np.uint8 and image.ndim == 3


def _fresh_cotrain_models():
    config = tiny_config("unused")
    return [build_model(config, name, nnx.Rngs(0)) for name in ("lam", "dynamics", "tokenizer")]


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_dynamics_loss_trains_the_lam_only_without_stop_gradient(stop_gradient):
    lam, dynamics, tokenizer = _fresh_cotrain_models()
    frames = jnp.asarray(moving_square_clips(4))

    def dynamics_part(lam):
        _, loss, _ = stages.cotrain_losses(
            lam, dynamics, tokenizer, frames, jax.random.key(1), stop_gradient=stop_gradient
        )
        return loss

    grads = nnx.to_pure_dict(nnx.grad(dynamics_part)(lam))
    largest = {
        part: max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[part])) for part in grads
    }
    assert all(np.isfinite(v) for v in largest.values())
    # The LAM decoder never sees the dynamics loss; the encoder, the projection to the code
    # and the codebook do exactly when the stop-gradient is off.
    assert largest["decoder"] == 0.0
    for part in ("encoder", "action_projection", "vq"):
        assert (largest[part] == 0.0) == stop_gradient, part


def test_straight_through_actions_are_the_lam_actions_in_the_forward_pass():
    lam, dynamics, tokenizer = _fresh_cotrain_models()
    frames = jnp.asarray(moving_square_clips(4))
    weights = stages.straight_through_actions(lam, frames)
    actions = lam.infer_actions(frames)
    np.testing.assert_array_equal(weights, jax.nn.one_hot(actions, lam.num_actions))
    losses = [
        stages.cotrain_losses(lam, dynamics, tokenizer, frames, jax.random.key(1), stop_gradient=sg)
        for sg in (True, False)
    ]
    # Same key, same actions forward: the same dynamics loss, bit for bit.
    np.testing.assert_array_equal(losses[0][1], losses[1][1])
    assert set(losses[0][2]) >= {"lam/loss", "lam/mse", "dynamics/loss", "dynamics/masked_accuracy"}
