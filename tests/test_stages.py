"""`genie.stages`: the pictures each stage saves during training say what every row shows."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from genie import plots, stages
from tests.conftest import moving_square_clips
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
    image = stages.tokenizer_images(models["tokenizer"], {}, clips, jax.random.key(0))
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
    image = stages.lam_images(models["lam"], {}, clips, jax.random.key(0))
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
    frozen = {"tokenizer": models["tokenizer"], "lam": models["lam"]}
    image = stages.dynamics_images(models["dynamics"], frozen, clips, jax.random.key(0))
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
