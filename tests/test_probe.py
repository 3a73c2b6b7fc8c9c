"""`genie.probe`: the probe table, the key mapping and the files written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_pipelines.coinrun.actions import CLASS_NAMES, action_metadata
from genie import metrics, probe

# What a CoinRun dataset declares about its actions, as its builder writes it.
METADATA = action_metadata()
COINRUN = metrics.ActionClasses.from_metadata(METADATA)
# A Procgen action (0..14) for each collapsed CoinRun class, in CLASS_NAMES order: none, jump,
# left, left+jump, right, right+jump (procgen index = 3 * horizontal + vertical).
PROCGEN_OF_CLASS = np.array([4, 5, 1, 2, 7, 8])


def test_procgen_examples_collapse_as_named():
    assert COINRUN.classify(PROCGEN_OF_CLASS).tolist() == list(range(6))
    assert COINRUN.names == CLASS_NAMES


def test_perfect_codes_score_nmi_and_accuracy_one():
    classes = np.random.default_rng(0).integers(0, 6, (40, 7))
    permutation = np.array([3, 0, 5, 1, 2, 4])  # code of each class
    table = probe.probe_true_actions(permutation[classes], PROCGEN_OF_CLASS[classes], 6, COINRUN)
    assert table["nmi"] == pytest.approx(1.0)
    assert table["probe_accuracy"] == 1.0
    assert table["chance_accuracy"] < 0.5
    confusion = np.array(table["confusion"])
    assert confusion.sum() == classes.size
    assert np.count_nonzero(confusion) == 6  # one cell per code
    assert table["code_to_class"] == {str(permutation[c]): CLASS_NAMES[c] for c in range(6)}

    keymap = probe.keymap_from_confusion(confusion, COINRUN.names, COINRUN.keys)
    assert keymap == {"left": 5, "right": 2, "up": 0, "none": 3, "down": 3}


def test_keymap_prefers_distinct_reliable_codes():
    # Code 0 is "none" mostly but also most of all "left" transitions; code 1 is purely left.
    confusion = np.zeros((4, 6), int)
    confusion[0] = [500, 0, 60, 0, 0, 0]
    confusion[1] = [0, 0, 40, 0, 0, 0]
    confusion[2] = [0, 0, 0, 0, 50, 0]
    confusion[3] = [1, 30, 0, 0, 0, 0]
    assert probe.keymap_from_confusion(confusion, COINRUN.names, COINRUN.keys) == {
        "left": 1,
        "right": 2,
        "up": 3,
        "none": 0,
        "down": 0,
    }

    # A collapsed LAM: every key gets the one code ever inferred, never an unseen one.
    collapsed = np.zeros((4, 6), int)
    collapsed[2] = [9, 1, 3, 1, 2, 0]
    assert set(probe.keymap_from_confusion(collapsed, COINRUN.names, COINRUN.keys).values()) == {2}


def moving_clips(directions, frames: int = 4, size: int = 16) -> np.ndarray:
    """One clip per (dy, dx) direction: a bright square on black moving one pixel a frame."""
    clips = np.zeros((len(directions), frames, size, size, 3), np.uint8)
    for i, (dy, dx) in enumerate(directions):
        for t in range(frames):
            top, left = 6 + dy * t, 6 + dx * t
            clips[i, t, top : top + 4, left : left + 4] = 200
    return clips


def test_frame_shifts_and_motion_keymap():
    directions = [(0, 0), (0, 1), (0, -1), (-1, 0)]  # none, right, left, up
    clips = moving_clips(directions)
    shifts = probe.frame_shifts(clips)
    np.testing.assert_array_equal(shifts, np.broadcast_to(np.array(directions)[:, None], (4, 3, 2)))

    codes = np.array([[2] * 3, [0] * 3, [3] * 3, [1] * 3])  # code of each clip's motion
    motion = probe.code_motion(clips, codes, num_codes=5)
    assert motion["dx"][0] == 1 and motion["dy"][1] == -1 and np.isnan(motion["dx"][4])
    assert probe.keymap_from_motion(motion) == {
        "left": 3,
        "right": 0,
        "up": 1,
        "none": 2,
        "down": 2,
    }


def test_mean_motion_of_codes_moving_right_and_left():
    # One clip, a grey square (value 200) at columns 6..9 moved by +2, +2, -2, -2 pixels:
    # code 0 for the moves right, code 1 for the moves left, code 2 never.
    clip = np.zeros((5, 16, 16, 3), np.uint8)
    for t, left in enumerate([6, 8, 10, 8, 6]):
        clip[t, 6:10, left : left + 4] = 200
    codes = np.array([[0, 0, 1, 1]])
    motion = probe.code_motion(clip[None], codes, num_codes=3)
    assert motion["dx"][:2] == [2.0, -2.0] and motion["dy"][:2] == [0.0, 0.0]
    assert np.isnan(motion["dx"][2])

    difference = probe.mean_frame_difference(clip[None], codes, num_codes=3)
    # Code 0: each move right lights 2 columns on the right and darkens 2 on the left; averaged
    # over its two moves, columns 10..13 gain 200/255 / 2 and columns 6..9 lose as much.
    expected = np.zeros((16, 16))
    expected[6:10, 10:14], expected[6:10, 6:10] = 100 / 255, -100 / 255
    np.testing.assert_allclose(difference[0], expected, atol=1e-6)
    np.testing.assert_allclose(difference[1], -expected, atol=1e-6)  # the mirror image
    assert np.isnan(difference[2]).all()


def test_left_none_right_probe_by_hand():
    # Codes that tell the direction but not the jump, ten times over: (left, left+jump, right,
    # right+jump, none, jump, none, none) with codes (0, 0, 1, 1, 2, 2, 2, 2).
    classes = np.tile([2, 3, 4, 5, 0, 1, 0, 0], 10)
    codes = np.tile([0, 0, 1, 1, 2, 2, 2, 2], 10)
    table = probe.probe_true_actions(codes, PROCGEN_OF_CLASS[classes], 3, COINRUN, seed=0)
    horizontal = table["horizontal"]
    assert horizontal["classes"] == ["none", "left", "right"]
    assert horizontal["code_to_class"] == {"0": "left", "1": "right", "2": "none"}
    assert horizontal["probe_accuracy"] == 1.0
    assert table["probe_accuracy"] < 1.0  # the jump is a coin flip within codes 0 and 1
    # Chance: always "none" (half of all transitions, the training half's majority), scored on
    # the held-out half of the documented split, the same half the six-class probe is scored on.
    held_out = np.random.default_rng(0).permutation(80)[40:]
    assert horizontal["chance_accuracy"] == np.mean(classes[held_out] <= 1)
    assert horizontal["probe_test_transitions"] == table["probe_test_transitions"] == 40


def test_action_rollouts_grid_layout():
    prompts = np.stack([np.full((8, 8, 3), 10 * p, np.uint8) for p in range(2)])

    def rollout(prompt, actions):  # frame value encodes the prompt, the action and the step
        steps = np.arange(1, actions.shape[1] + 1)
        values = prompt[:, :, 0, 0, 0] + actions * 3 + steps
        return np.broadcast_to(values[..., None, None, None], (*actions.shape, 8, 8, 3)).astype(
            np.uint8
        )

    videos = probe.action_rollouts(rollout, prompts, num_actions=3, steps=2)
    assert videos.shape == (2, 3, 3, 8, 8, 3)
    assert videos[1, 2, 0, 0, 0, 0] == 10  # the prompt first
    assert videos[1, 2, 2, 0, 0, 0] == 10 + 2 * 3 + 2  # prompt 1, action 2, step 2


def test_report_files_and_keymap_format(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (6, 4, 16, 16, 3), dtype=np.uint8)
    classes = rng.integers(0, 6, (6, 3))
    report = probe.analyse_codes(frames, classes % 4, 4, PROCGEN_OF_CLASS[classes], COINRUN)
    paths = probe.write_report(report, tmp_path / "probe", keymap_path=tmp_path / "keys.json")

    keymap = json.loads((tmp_path / "keys.json").read_text())
    assert set(keymap) == {"left", "right", "up", "down", "none"}
    assert all(isinstance(code, int) and 0 <= code < 4 for code in keymap.values())
    from genie.play import keymap_from_dict  # the reader of genie play --keymap accepts it

    assert keymap_from_dict(keymap, num_actions=4)["a"] == keymap["left"]
    loaded = json.loads(paths["json"].read_text())
    assert loaded["keymap"] == keymap and len(loaded["true_actions"]["confusion"]) == 4
    text = paths["markdown"].read_text()
    assert "NMI" in text and "horizontal (none/left/right) only" in text
    horizontal = loaded["true_actions"]["horizontal"]
    assert f"probe accuracy {horizontal['probe_accuracy']:.3f}" in text
    assert f"(chance {horizontal['chance_accuracy']:.3f})" in text
    for name in ("usage", "confusion"):
        with Image.open(paths[name]) as image:
            assert image.format == "PNG"

    without = probe.analyse_codes(frames, classes % 4, 4)
    assert without["true_actions"] is None and "heuristic" in without["keymap_source"]


def test_cli_on_a_tiny_run(tiny_run, tmp_path, monkeypatch, capsys):
    from data_pipelines import loader
    from tests.conftest import moving_square_clips

    clips = moving_square_clips(5, frames=4, size=16)
    actions = np.random.default_rng(0).integers(0, 15, (5, 3)).astype(np.int32)
    monkeypatch.setattr(loader, "read_clips", lambda *a, **k: {"frames": clips, "actions": actions})
    # The dataset declares its actions as a CoinRun build does.
    monkeypatch.setattr(loader, "dataset_info", lambda *a, **k: {"build": {"actions": METADATA}})
    out = tmp_path / "probe"
    probe.main([str(tiny_run), "--prompts", "2", "--steps", "5", "--out", str(out)])
    assert "NMI" in capsys.readouterr().out

    report = json.loads((out / "probe.json").read_text())
    assert report["transitions"] == 15 and sum(report["code_usage"]["counts"]) == 15
    assert set(json.loads((out / "keymap.json").read_text())) == set(probe.KEYMAP_KEYS)
    with Image.open(out / "actions.gif") as gif:
        assert gif.n_frames == 6  # the prompt and 5 steps
    for name in ("actions_last_frame.png", "code_usage.png", "confusion.png", "probe.md"):
        assert (out / name).stat().st_size > 0
    with Image.open(out / "code_motion.png") as figure:
        assert figure.format == "PNG" and figure.size[0] > 300 and figure.size[1] > 300


@pytest.mark.parametrize(
    "stored, note",
    [
        ({}, "stores no true actions"),  # a video folder
        ({"actions": "yes"}, "does not declare what they mean"),  # built before metadata
    ],
)
def test_a_dataset_without_declared_actions_is_probed_without_them(
    tiny_run, tmp_path, monkeypatch, stored, note
):
    from data_pipelines import loader
    from tests.conftest import moving_square_clips

    clips = moving_square_clips(5, frames=4, size=16)
    data = {"frames": clips}
    if stored:
        data["actions"] = np.random.default_rng(0).integers(0, 15, (5, 3)).astype(np.int32)
    monkeypatch.setattr(loader, "read_clips", lambda *a, **k: data)
    monkeypatch.setattr(loader, "dataset_info", lambda *a, **k: {"build": {}})
    out = tmp_path / "probe"
    probe.main([str(tiny_run), "--prompts", "2", "--steps", "2", "--out", str(out)])
    report = json.loads((out / "probe.json").read_text())
    assert report["true_actions"] is None and note in report["true_actions_note"]
    assert note in (out / "probe.md").read_text()
    assert "heuristic" in report["keymap_source"]
