"""The supervised action ceiling of experiments/ablations/action_bound.py: its windows keep each
transition's class with its frames, and its scores match hand-computed values."""

import numpy as np
import pytest

from experiments.ablations import action_bound
from genie import metrics


def _coinrun_classes() -> metrics.ActionClasses:
    """CoinRun's six collapsed classes and their left/none/right group (as its builder
    declares them)."""
    return metrics.ActionClasses.from_metadata(
        {
            "classes": {
                "names": ["none", "jump", "left", "left+jump", "right", "right+jump"],
                "of_action": [0, 1, 2, 3, 4, 5],
            },
            "groups": {
                "horizontal": {"names": ["none", "left", "right"], "of_class": [0, 0, 1, 1, 2, 2]}
            },
        }
    )


def _numbered_clips(count=5, frames=6):
    """Clips whose every pixel holds 10*clip + frame, and class[clip, t] = (clip + t) % 6."""
    pixels = (10 * np.arange(count)[:, None] + np.arange(frames)[None]).astype(np.uint8)
    clips = np.broadcast_to(pixels[:, :, None, None, None], (count, frames, 2, 2, 3)).copy()
    classes = (np.arange(count)[:, None] + np.arange(frames - 1)[None]) % 6
    return clips, classes


@pytest.mark.parametrize("window", [2, 4, 6])
def test_random_windows_keep_each_transition_with_its_frames(window):
    clips, classes = _numbered_clips()
    frames, labels = action_bound.random_windows(
        clips, classes, window, batch=16, rng=np.random.default_rng(0)
    )
    assert frames.shape == (16, window, 2, 2, 3) and labels.shape == (16, window - 1)
    clip, frame = frames[:, :, 0, 0, 0] // 10, frames[:, :, 0, 0, 0] % 10
    assert (np.diff(frame, axis=1) == 1).all() and (clip == clip[:, :1]).all()
    # The transition between a window's frames t and t+1 has the class of the clip's frame t.
    np.testing.assert_array_equal(labels, (clip[:, :-1] + frame[:, :-1]) % 6)


def test_pairs_cut_clips_into_consecutive_frames_with_their_class():
    clips, classes = _numbered_clips(count=2, frames=4)
    frames, labels = action_bound.pairs(clips, classes)
    assert frames.shape == (6, 2, 2, 2, 3) and labels.shape == (6, 1)
    np.testing.assert_array_equal(frames[4, :, 0, 0, 0], [11, 12])  # clip 1, frames 1 and 2
    assert labels[4, 0] == classes[1, 1]


def test_scores_against_hand_computed_values():
    classes = _coinrun_classes()
    true = np.array([0, 2, 2, 4, 5, 1])  # horizontal: none, left, left, right, right, none
    predicted = np.array([0, 3, 2, 5, 2, 1])  # horizontal: none, left, left, right, left, none
    found = action_bound.scores(predicted, true, classes)
    assert found["transitions"] == 6
    assert found["accuracy6"] == pytest.approx(3 / 6)
    assert found["chance6"] == pytest.approx(2 / 6)  # class 2 is the most common
    assert found["accuracy3"] == pytest.approx(5 / 6)
    assert found["chance3"] == pytest.approx(2 / 6)
    # A perfect prediction has NMI 1 on both; this one less.
    perfect = action_bound.scores(true, true, classes)
    assert perfect["nmi"] == pytest.approx(1.0) and perfect["nmi_horizontal"] == pytest.approx(1.0)
    assert 0 < found["nmi"] < 1 and 0 < found["nmi_horizontal"] < 1


def test_the_window_must_be_a_pair_or_the_whole_clip():
    from genie.config import load_experiment

    with pytest.raises(SystemExit, match="--window must be 2 or"):
        action_bound.run(load_experiment("coinrun_tiny"), window=5, steps=1)
