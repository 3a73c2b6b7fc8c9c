import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from data_pipelines import loader, report, storage
from data_pipelines.coinrun import episodes
from data_pipelines.coinrun.builder import build_coinrun, episode_specs, split_of_level
from tests.data_pipelines.conftest import COINRUN_CLIP_FRAMES


def test_frames_shape_dtype_and_stored_features(coinrun_data):
    name, data_dir = coinrun_data
    clips = loader.read_clips(name, "train", data_dir=data_dir, limit=5)
    assert clips["frames"].dtype == np.uint8
    assert clips["frames"].shape == (5, COINRUN_CLIP_FRAMES, 64, 64, 3)
    assert clips["actions"].dtype == np.int32
    assert clips["actions"].shape == (5, COINRUN_CLIP_FRAMES - 1)
    assert ((0 <= clips["actions"]) & (clips["actions"] < episodes.NUM_ACTIONS)).all()
    info = loader.dataset_info(name, data_dir=data_dir)
    assert info["clip_frames"] == COINRUN_CLIP_FRAMES
    assert info["image_size"] == (64, 64)
    assert info["has_actions"]
    assert (storage.dataset_path(name, data_dir) / "sample.png").is_file()


def test_splits_are_disjoint_by_level(coinrun_data):
    name, data_dir = coinrun_data
    info = loader.dataset_info(name, data_dir=data_dir)
    assert set(info["splits"]) == {"train", "validation", "test"}
    levels = {
        split: set(loader.read_clips(name, split, data_dir=data_dir)["level"].tolist())
        for split in info["splits"]
    }
    assert levels["test"] == {9} and levels["validation"] == {8}
    assert not levels["train"] & levels["test"]
    assert not levels["train"] & levels["validation"]
    assert all(split_of_level(level) == split for split in levels for level in levels[split])


def test_stored_clip_matches_its_episode(coinrun_data):
    """The stored clip is the episode's frames from start_frame, with actions[t] between t, t+1."""
    name, data_dir = coinrun_data
    clip = {k: v[0] for k, v in loader.read_clips(name, "test", data_dir=data_dir, limit=1).items()}
    spec = episode_specs(10, seed=0)[int(clip["episode"])]
    frames, actions = episodes.play_episode(spec)
    start = int(clip["start_frame"])
    t = COINRUN_CLIP_FRAMES
    np.testing.assert_array_equal(clip["frames"], frames[start : start + t])
    np.testing.assert_array_equal(clip["actions"], actions[start : start + t - 1])


def test_action_t_turns_frame_t_into_frame_t_plus_1():
    """Replaying the stored actions one at a time reproduces each next frame."""
    spec = episodes.EpisodeSpec(episode=3, level=5, seed=1)
    frames, actions = episodes.play_episode(spec)
    assert len(actions) == len(frames) - 1
    rng = np.random.default_rng([spec.seed, spec.episode])
    env = episodes._import_procgen()(
        num=1,
        env_name="coinrun",
        start_level=spec.level,
        num_levels=1,
        distribution_mode=spec.distribution_mode,
        rand_seed=int(rng.integers(2**31 - 1)),
    )
    np.testing.assert_array_equal(env.observe()[1]["rgb"][0], frames[0])
    for t in range(min(50, len(actions))):
        env.act(np.array([actions[t]]))
        np.testing.assert_array_equal(env.observe()[1]["rgb"][0], frames[t + 1])
    # Held actions: runs of equal actions longer than one step occur.
    assert (np.diff(actions[:100]) == 0).mean() > 0.5


def test_clips_do_not_overlap_and_drop_the_tail():
    frames = np.arange(11)[:, None]
    actions = np.arange(10)
    clips = list(episodes.cut_clips(frames, actions, 4))
    assert [start for start, _, _ in clips] == [0, 4]
    np.testing.assert_array_equal(clips[1][2], [4, 5, 6])


def test_rebuild_is_a_no_op(coinrun_data, capsys):
    name, data_dir = coinrun_data
    started = time.time()
    build_coinrun(name, 10, clip_frames=COINRUN_CLIP_FRAMES, data_dir=data_dir, workers=1)
    assert time.time() - started < 5
    assert "already exists" in capsys.readouterr().out


def test_summary(coinrun_data):
    name, data_dir = coinrun_data
    text = report.summarize(name, data_dir)
    assert "train" in text and "test" in text and "MB" in text


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(spec):
        calls.append(spec)
        if len(calls) == 2:
            raise RuntimeError("generation died")
        return (np.zeros((9, 64, 64, 3), np.uint8), np.zeros(8, np.int32))

    monkeypatch.setattr(episodes, "play_episode", failing)
    with pytest.raises(RuntimeError, match="generation died"):
        build_coinrun("broken", 4, clip_frames=4, data_dir=tmp_path, workers=1, verbose=False)
    assert list(tmp_path.iterdir()) == []


def test_killed_build_restarts_cleanly(tmp_path):
    """SIGKILL mid-generation: nothing looks complete, and the next build succeeds."""
    marker = tmp_path / "generating"
    script = textwrap.dedent(f"""
        import pathlib, time
        from data_pipelines.coinrun import episodes
        from data_pipelines.coinrun.builder import build_coinrun
        real = episodes.play_episode
        def slow(spec):
            if spec.episode == 1:
                pathlib.Path({str(marker)!r}).touch()
                time.sleep(120)
            return real(spec)
        episodes.play_episode = slow
        build_coinrun("killed", 3, clip_frames=4, data_dir={str(tmp_path)!r}, workers=1)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert process.poll() is None, "build exited before it was killed"
            assert time.time() < deadline, "build never started generating"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert not (tmp_path / "killed").exists()
    assert (tmp_path / ".killed.incomplete").exists()
    with pytest.raises(FileNotFoundError, match="python -m data_pipelines.coinrun"):
        loader.make_loader(
            "killed", batch_size=1, data_dir=tmp_path, process_index=0, process_count=1
        )
    build_coinrun("killed", 3, clip_frames=4, data_dir=tmp_path, workers=1, verbose=False)
    assert storage.is_complete(tmp_path / "killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generating", "killed"]


def test_parallel_build_matches_serial_build(tmp_path):
    """Worker processes change nothing: same clips, same actions, same order on disk."""
    for workers in (1, 2):
        build_coinrun(
            f"w{workers}",
            2,
            clip_frames=4,
            seed=5,
            data_dir=tmp_path,
            workers=workers,
            verbose=False,
        )
    serial = loader.read_clips("w1", "train", data_dir=tmp_path)
    parallel = loader.read_clips("w2", "train", data_dir=tmp_path)
    assert serial.keys() == parallel.keys()
    for key in serial:
        np.testing.assert_array_equal(serial[key], parallel[key])


def test_coinrun_declares_what_its_actions_mean(coinrun_data):
    """Procgen's 15 ids collapse as CoinRun reads them ({none, left, right} x {jump, no jump});
    the builder writes that into the dataset, where genie.probe reads it."""
    from data_pipelines.coinrun.actions import CLASS_NAMES, action_metadata

    name, data_dir = coinrun_data
    metadata = loader.dataset_info(name, data_dir)["build"]["actions"]
    assert metadata == action_metadata()
    # get_combos order: (LEFT, DOWN), (LEFT,), (LEFT, UP), (DOWN,), (), (UP,), (RIGHT, DOWN),
    # (RIGHT,), (RIGHT, UP), then D, A, W, S, Q, E (ignored by CoinRun).
    expected = [
        "left", "left", "left+jump",
        "none", "none", "jump",
        "right", "right", "right+jump",
        "none", "none", "none", "none", "none", "none",
    ]  # fmt: skip
    assert [CLASS_NAMES[c] for c in metadata["classes"]["of_action"]] == expected
    assert metadata["names"][4] == "none" and metadata["names"][8] == "right+up"
    horizontal = metadata["groups"]["horizontal"]
    assert [horizontal["names"][g] for g in horizontal["of_class"]] == [
        "none", "none", "left", "left", "right", "right"
    ]  # fmt: skip
    assert metadata["keys"]["up"] == "jump"
